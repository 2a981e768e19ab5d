/*
 * The page script of d2lcore's slider figures (d2lcore/sliders.py).
 *
 * A figure holds one set of traces per configuration of a grid, only one set visible,
 * and one plotly slider per axis whose steps do nothing (method "skip"): plotly's own
 * steps cannot combine several sliders. After Plotly.newPlot the figure calls
 *
 *     d2lSliders.attach(divId, spec)
 *
 * with the spec Python wrote (SliderSpec: snake_case fields). On every slider change
 * the script finds the configuration from all sliders' positions and the grid's
 * strides (given in the spec: the order is defined once, by d2lcore.grid.Grid), shows
 * its traces, rewrites its readout and mirrors the selection into the URL hash
 * (#<id>:lr=0.1,dropout=0.5) so that a link reopens it.
 *
 * The figure keeps every configuration's traces aside (gd.d2lTraces) and gives plotly
 * only the selected configuration's (Plotly.react): a redraw then costs what one
 * configuration costs, not what all of them together cost, as toggling every trace's
 * `visible` did. gd.d2lShown is the configuration shown, so that trace j of gd.data is
 * trace d2lShown * per_config + j of gd.d2lTraces.
 *
 * The book loads this file once per page (after plotly.js); a notebook rendered
 * elsewhere carries it inline, defined only when the page does not have it yet.
 */
(function (root) {
  'use strict';

  var VERSION = 3;
  if (root.d2lSliders && root.d2lSliders.version >= VERSION) {
    return;
  }

  function hashParts() {
    var h = root.location.hash.replace(/^#/, '');
    return h ? h.split('&') : [];
  }

  function copy(obj) {
    var out = {};
    for (var key in obj) {
      if (Object.prototype.hasOwnProperty.call(obj, key)) { out[key] = obj[key]; }
    }
    return out;
  }

  function attach(plotId, S) {
    var gd = document.getElementById(plotId);
    var all = gd.data;  // every configuration's traces, in grid order
    var shown = -1;
    gd.d2lTraces = all;

    function actives() {  // each slider's step, within its steps
      return gd.layout.sliders.map(function (s, i) {
        return Math.max(0, Math.min(s.active || 0, S.values[i].length - 1));
      });
    }

    function flat(a) {
      var k = 0;
      for (var i = 0; i < a.length; i++) { k += a[i] * S.strides[i]; }
      return k;
    }

    function show(a, moveSliders) {
      var k = flat(a);
      if (k === shown && !moveSliders) { return; }
      shown = k;
      var data = all.slice(k * S.per_config, (k + 1) * S.per_config).map(function (t) {
        var trace = copy(t);  // the same data arrays: nothing is copied but the keys
        trace.visible = true;
        return trace;
      });
      // A new layout object with new annotations (and sliders), so that react sees
      // what changed; everything else is shared with the old layout.
      var lay = copy(gd.layout);
      lay.annotations = (gd.layout.annotations || []).map(copy);
      lay.annotations[S.readout_annotation].text = S.readouts[k];
      S.diverged_annotations.forEach(function (j) {
        lay.annotations[j].text = S.diverged[k];
        lay.annotations[j].visible = S.diverged[k] !== '';
      });
      if (moveSliders) {
        lay.sliders = gd.layout.sliders.map(copy);
        a.forEach(function (v, i) { lay.sliders[i].active = v; });
      }
      gd.d2lShown = k;
      root.Plotly.react(gd, data, lay);
    }

    function mine(part) { return part.indexOf(S.id + ':') === 0; }

    function fromHash() {
      var part = hashParts().filter(mine)[0];
      if (!part) { return null; }
      var a = actives();
      part.slice(S.id.length + 1).split(',').forEach(function (kv) {
        var eq = kv.indexOf('=');
        var name = kv.slice(0, eq), value = kv.slice(eq + 1);
        try {
          name = decodeURIComponent(name);
          value = decodeURIComponent(value);
        } catch (e) { /* a malformed escape: compare the text as it is */ }
        var i = S.names.indexOf(name);
        if (i < 0) { return; }
        var j = S.values[i].indexOf(value);
        if (j < 0 && value !== '' && !isNaN(Number(value))) {
          // 0.10 and 0.1 name the same learning rate.
          j = S.values[i].map(Number).indexOf(Number(value));
        }
        if (j >= 0) { a[i] = j; }
      });
      return a;
    }

    function toHash(a) {
      var part = S.id + ':' + S.names.map(function (name, i) {
        return encodeURIComponent(name) + '=' + encodeURIComponent(S.values[i][a[i]]);
      }).join(',');
      var found = false;
      // Other figures' selections (and plain anchors) stay as they were.
      var parts = hashParts().map(function (p) {
        if (mine(p)) { found = true; return part; }
        return p;
      });
      if (!found) { parts.push(part); }
      var url = root.location.href.replace(/#.*$/, '') + '#' + parts.join('&');
      if (root.history && root.history.replaceState) {
        root.history.replaceState(root.history.state, '', url);
      } else {
        root.location.hash = parts.join('&');
      }
    }

    function restore() {
      var a = fromHash();
      if (a) { show(a, true); }
    }

    gd.on('plotly_sliderchange', function (e) {
      if (e && e.interaction === false) { return; }
      var a = actives();
      show(a, false);
      toHash(a);
    });
    root.addEventListener('hashchange', restore);
    // From now on plotly holds one configuration's traces: the one the sliders select,
    // or the one the address names.
    if (!fromHash()) { show(actives(), false); }
    restore();
  }

  root.d2lSliders = {version: VERSION, attach: attach};
})(window);
