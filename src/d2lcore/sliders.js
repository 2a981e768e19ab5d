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
 * The book loads this file once per page (after plotly.js); a notebook rendered
 * elsewhere carries it inline, defined only when the page does not have it yet.
 */
(function (root) {
  'use strict';

  var VERSION = 2;
  if (root.d2lSliders && root.d2lSliders.version >= VERSION) {
    return;
  }

  function hashParts() {
    var h = root.location.hash.replace(/^#/, '');
    return h ? h.split('&') : [];
  }

  function attach(plotId, S) {
    var gd = document.getElementById(plotId);
    var total = S.strides.length ? S.strides[0] * S.values[0].length : 1;
    var shown = -1;

    function actives() {
      return gd.layout.sliders.map(function (s) { return s.active || 0; });
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
      var vis = [];
      for (var t = 0; t < total * S.per_config; t++) {
        vis.push(Math.floor(t / S.per_config) === k);
      }
      var lay = {};
      lay['annotations[' + S.readout_annotation + '].text'] = S.readouts[k];
      S.diverged_annotations.forEach(function (j) {
        lay['annotations[' + j + '].text'] = S.diverged[k];
        lay['annotations[' + j + '].visible'] = S.diverged[k] !== '';
      });
      if (moveSliders) {
        a.forEach(function (v, i) { lay['sliders[' + i + '].active'] = v; });
      }
      root.Plotly.update(gd, {visible: vis}, lay);
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
    shown = flat(actives());
    restore();
  }

  root.d2lSliders = {version: VERSION, attach: attach};
})(window);
