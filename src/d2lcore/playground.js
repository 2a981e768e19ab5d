/*
 * The page script of d2lcore's MLP playground (d2lcore/playground.py).
 *
 * The figure has one slider for the data set, one per hyperparameter and one for the
 * epoch, whose steps do nothing (method "skip"). After Plotly.newPlot the figure calls
 *
 *     d2lPlayground.attach(divId, spec)
 *
 * with the spec Python wrote. The spec holds every trained model's weights at a few
 * epochs (float16, base64): on every slider change the script finds the selected
 * model, evaluates it on the plane's grid (the MLP's forward pass, as torch computes
 * it: Linear, activation, ..., Linear, softmax) and redraws the heat map, the points
 * and the loss curves in place. Only some combinations of hyperparameters were
 * trained (each axis around a default, and the crossed pairs): a slider moved to a
 * value trained only with the others at their default puts them there.
 *
 * The book loads this file once per page (after plotly.js); a notebook rendered
 * elsewhere carries it inline, defined only when the page does not have it yet.
 */
(function (root) {
  'use strict';

  var VERSION = 1;
  if (root.d2lPlayground && root.d2lPlayground.version >= VERSION) {
    return;
  }

  // Little-endian float16 in base64 -> Float32Array.
  function halves(text) {
    var bytes = root.atob(text), n = bytes.length / 2;
    var out = new Float32Array(n);
    for (var i = 0; i < n; i++) {
      var h = bytes.charCodeAt(2 * i) | (bytes.charCodeAt(2 * i + 1) << 8);
      var sign = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      out[i] = e === 0 ? sign * f * Math.pow(2, -24)
        : e === 31 ? (f ? NaN : sign * Infinity)
          : sign * (1 + f / 1024) * Math.pow(2, e - 15);
    }
    return out;
  }

  var ACTIVATIONS = [
    function (z) { return z > 0 ? z : 0; },
    Math.tanh,
    function (z) { return 1 / (1 + Math.exp(-z)); },
  ];

  // P(class 1) at every grid point (rows: y, columns: x) of the MLP with `layers`
  // sizes ([2, w, ..., w, 2]), activation `act` and weights w[start...] laid out as
  // nn.Linear stores them: weight (out, in) row by row, then the bias, layer by layer.
  function boundary(w, start, layers, act, grid) {
    var f = ACTIVATIONS[act], n = grid.length, z = [];
    var size = Math.max.apply(null, layers);
    var h = new Float64Array(size), next = new Float64Array(size);
    for (var r = 0; r < n; r++) {
      var row = new Array(n);
      for (var c = 0; c < n; c++) {
        h[0] = grid[c]; h[1] = grid[r];
        var o = start;
        for (var l = 1; l < layers.length; l++) {
          var inp = layers[l - 1], out = layers[l], last = l === layers.length - 1;
          for (var j = 0; j < out; j++) {
            var s = w[o + out * inp + j];  // the bias
            for (var i = 0; i < inp; i++) { s += w[o + j * inp + i] * h[i]; }
            next[j] = last ? s : f(s);
          }
          o += out * inp + out;
          var t = h; h = next; next = t;
        }
        row[c] = Math.round(1000 / (1 + Math.exp(h[0] - h[1]))) / 1000;
      }
      z.push(row);
    }
    return z;
  }

  function attach(plotId, S) {
    var gd = document.getElementById(plotId);
    gd.classList.add('d2l-playground');  // tests tell it from d2lSliders' figures
    var weights = halves(S.weights);
    var losses = S.losses.map(function (pair) { return pair.map(halves); });
    var nHyper = S.default.length, nConfigs = S.steps.length;
    var shown = '', shownData = 0;  // the figure is drawn with the first data set

    function same(a, b) { return a.join(',') === b.join(','); }
    function configOf(h) {
      for (var c = 0; c < nConfigs; c++) { if (same(S.steps[c], h)) { return c; } }
      return -1;
    }
    function partners(i) {
      var out = [i];
      S.crossed.forEach(function (p) {
        if (p[0] === i) { out.push(p[1]); }
        if (p[1] === i) { out.push(p[0]); }
      });
      return out;
    }

    // The trained configuration nearest the sliders, the axis `moved` kept as chosen.
    function resolve(a, moved) {
      var h = a.slice(1, 1 + nHyper);
      if (configOf(h) >= 0) { return h; }
      var keep = partners(moved - 1);
      var snapped = h.map(function (v, i) { return keep.indexOf(i) >= 0 ? v : S.default[i]; });
      if (configOf(snapped) >= 0) { return snapped; }
      return h.map(function (v, i) { return i === moved - 1 ? v : S.default[i]; });
    }

    function show(a, moved) {
      var h = resolve(a, moved), key = a[0] + ':' + h.join(',') + ':' + a[a.length - 1];
      if (key === shown) { return; }
      shown = key;
      var d = a[0], e = a[a.length - 1], c = configOf(h), k = d * nConfigs + c;
      var epoch = S.snapshots[e], per = S.offsets[k + 1] - S.offsets[k];
      var start = S.offsets[k] + e * per / S.snapshots.length;
      var z = boundary(weights, start, S.layers[c], S.activations[c], S.grid);
      var pts = S.points[d], colors = function (y) {
        return y.map(function (v) { return S.colors[v]; });
      };
      var le = S.loss_epochs.filter(function (x) { return x <= epoch; });
      var tr = Array.prototype.slice.call(losses[k][0], 0, le.length);
      var te = Array.prototype.slice.call(losses[k][1], 0, le.length);
      var st = S.stats[k][e], text = S.labels.slice(1, 1 + nHyper).map(function (name, i) {
        return name + ' ' + S.values[i + 1][h[i]];
      }).join(', ');
      var line = 'epoch ' + epoch + ': training loss ' + st[1].toPrecision(3) +
        ', test loss ' + st[2].toPrecision(3) + ', training accuracy ' +
        (100 * st[3]).toFixed(1) + '%, test accuracy ' + (100 * st[4]).toFixed(1) + '%';
      if (S.diverged[k] && epoch >= S.diverged[k]) {
        line += ' (diverged at epoch ' + S.diverged[k] + ': its last finite weights)';
      }
      var lay = {};
      lay['annotations[' + S.readout + '].text'] =
        '<b>' + S.values[0][d] + ': ' + text + '</b><br>' + line;
      a.forEach(function (v, i) {
        var want = i >= 1 && i <= nHyper ? h[i - 1] : v;
        if (want !== v) { lay['sliders[' + i + '].active'] = want; }
      });
      // One redraw: the heat map and the loss curves, and the points when the data set
      // changed.
      var data = {z: [z, undefined, undefined], x: [S.grid, le, le], y: [S.grid, tr, te]};
      var traces = [0, 3, 4];
      if (d !== shownData) {
        shownData = d;
        data.z.push(undefined, undefined);
        data.x.push(pts[0][0], pts[1][0]);
        data.y.push(pts[0][1], pts[1][1]);
        data['marker.color'] = [undefined, undefined, undefined,
          colors(pts[0][2]), colors(pts[1][2])];
        traces.push(1, 2);
      }
      root.Plotly.update(gd, data, lay, traces);
    }

    function actives() {
      return gd.layout.sliders.map(function (s) { return s.active || 0; });
    }

    var last = actives();
    gd.on('plotly_sliderchange', function (ev) {
      if (ev && ev.interaction === false) { return; }
      var a = actives(), moved = 0;
      a.forEach(function (v, i) { if (v !== last[i]) { moved = i; } });
      show(a, moved);
      last = actives();
    });
    show(last, 0);
  }

  root.d2lPlayground = {version: VERSION, attach: attach, boundary: boundary, halves: halves};
})(window);
