/*
 * The MLP playground's kind of figure (d2lcore/playground_figure.py), for the page
 * script figure.js: its controls are the data set, each hyperparameter and the epoch.
 *
 * The figure's data holds every trained model's weights at a few epochs (float16,
 * base64, one text per model and data set): on every change this script finds the
 * selected model, decodes its weights and losses the first time it is shown (and keeps
 * them: the page holds every model trained, and a reader looks at a few), evaluates
 * it on the plane's grid (the MLP's forward pass, as torch computes it: Linear,
 * activation, ..., Linear, softmax) and draws the boundary, the data set's points and
 * the loss curves so far as three layout images; figure.js writes the readout. Plotly
 * redraws layout images alone, where a change of a trace would redraw the whole figure.
 * The figure's own traces (Python draws the first view with them, for a renderer
 * without this script) are drawn empty, for the legend only: plotly draws the plot once,
 * then the images. Under the pointer, or where
 * a finger taps, a small label gives the model's P(class 1) there. Only some
 * combinations of hyperparameters were trained (each axis around a default, and the
 * crossed pairs): a control moved to a value trained only with the others at their
 * default puts them there.
 *
 * The book loads this file once per page (after figure.js); a notebook rendered
 * elsewhere carries it inline, defined only when the page does not have it yet.
 */
(function (root) {
  'use strict';

  var VERSION = 4;
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

  // P(class 1) at every grid point (rows: y, columns: x; the y values `ys`, or the
  // x values `grid` again) of the MLP with `layers` sizes ([2, w, ..., w, 2]),
  // activation `act` and weights w[start...] laid out as nn.Linear stores them: weight
  // (out, in) row by row, then the bias, layer by layer.
  function boundary(w, start, layers, act, grid, ys) {
    var f = ACTIVATIONS[act], n = grid.length, z = [];
    ys = ys || grid;
    var size = Math.max.apply(null, layers);
    var h = new Float64Array(size), next = new Float64Array(size);
    for (var r = 0; r < ys.length; r++) {
      var row = new Array(n);
      for (var c = 0; c < n; c++) {
        h[0] = grid[c]; h[1] = ys[r];
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

  // The colour of p in [0, 1] on the colour scale `scale` ([[stop, '#rrggbb'], ...]).
  function colorScale(scale) {
    var stops = scale.map(function (s) {
      var h = s[1];
      return [s[0], parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16),
        parseInt(h.slice(5, 7), 16)];
    });
    return function (p) {
      var i = 1;
      while (i < stops.length - 1 && p > stops[i][0]) { i++; }
      var a = stops[i - 1], b = stops[i];
      var t = Math.min(1, Math.max(0, (p - a[0]) / (b[0] - a[0])));
      return [0, 1, 2].map(function (k) { return Math.round(a[k + 1] + t * (b[k + 1] - a[k + 1])); });
    };
  }

  function newCanvas(width, height) {
    var c = root.document.createElement('canvas');
    c.width = Math.max(1, Math.round(width));
    c.height = Math.max(1, Math.round(height));
    return c;
  }

  // The boundary z (rows: y upwards, columns: x) as a PNG of one pixel per grid point,
  // its top row the largest y; the browser smooths it as it stretches it over the plane.
  function boundaryImage(z, color) {
    var n = z.length, c = newCanvas(n, n), ctx = c.getContext('2d');
    var img = ctx.createImageData(n, n);
    for (var r = 0; r < n; r++) {
      for (var col = 0; col < n; col++) {
        var rgb = color(z[r][col]), o = 4 * ((n - 1 - r) * n + col);
        img.data[o] = rgb[0]; img.data[o + 1] = rgb[1]; img.data[o + 2] = rgb[2];
        img.data[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    return c.toDataURL('image/png');
  }

  // A data set's training points (filled circles) and test points (open diamonds) over
  // the plane [-extent, extent]^2, as a transparent PNG of `size` pixels a side.
  function pointsImage(pts, colors, extent, size, px) {
    var c = newCanvas(size, size), ctx = c.getContext('2d');
    var at = function (v) { return (v + extent) / (2 * extent) * size; };
    var r = 3 * px;  // plotly's marker size 6: 6 CSS pixels across
    pts[0][0].forEach(function (x, i) {
      ctx.beginPath();
      ctx.arc(at(x), size - at(pts[0][1][i]), r, 0, 2 * Math.PI);
      ctx.fillStyle = colors[pts[0][2][i]];
      ctx.fill();
      ctx.lineWidth = 0.5 * px;
      ctx.strokeStyle = 'white';
      ctx.stroke();
    });
    ctx.lineWidth = 1 * px;
    pts[1][0].forEach(function (x, i) {
      var cx = at(x), cy = size - at(pts[1][1][i]);
      ctx.beginPath();
      ctx.moveTo(cx, cy - r * 1.3); ctx.lineTo(cx + r * 1.3, cy);
      ctx.lineTo(cx, cy + r * 1.3); ctx.lineTo(cx - r * 1.3, cy);
      ctx.closePath();
      ctx.strokeStyle = colors[pts[1][2][i]];
      ctx.stroke();
    });
    return c.toDataURL('image/png');
  }

  // Loss curves (x: epochs, ys: one array of losses per curve) on a plot of width x
  // height CSS pixels whose x axis spans [0, xMax] and whose log y axis spans
  // [10^logRange[0], 10^logRange[1]]; a value that is not a positive number breaks its
  // line.
  function lossImage(x, ys, styles, xMax, logRange, width, height, px) {
    var c = newCanvas(width * px, height * px), ctx = c.getContext('2d');
    var w = c.width, h = c.height, span = logRange[1] - logRange[0];
    ys.forEach(function (y, k) {
      ctx.beginPath();
      var down = false;
      for (var i = 0; i < x.length; i++) {
        if (!(y[i] > 0) || !isFinite(y[i])) { down = false; continue; }
        var cx = x[i] / xMax * w, cy = (logRange[1] - Math.log10(y[i])) / span * h;
        if (down) { ctx.lineTo(cx, cy); } else { ctx.moveTo(cx, cy); down = true; }
      }
      ctx.lineWidth = 2 * px;
      ctx.lineJoin = 'round';
      ctx.lineCap = 'round';
      ctx.strokeStyle = styles[k].color;
      ctx.setLineDash(styles[k].dash === 'dash' ? [9 * px, 9 * px] : []);
      ctx.stroke();
    });
    return c.toDataURL('image/png');
  }

  function escapeHtml(text) {
    return String(text).replace(/[&<>"]/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c];
    });
  }

  // The kind: figure.js calls it with the plot's div and the figure's data (S).
  function playground(gd, S) {
    gd.classList.add('d2l-playground');  // tests tell it from the slider figures
    // Model k's weights and losses (k: data set * configurations + configuration),
    // decoded when it is first shown and kept (gd.d2lDecoded: what was decoded so far).
    var decoded = {};
    gd.d2lDecoded = decoded;
    function decode(k) {
      if (!decoded[k]) {
        decoded[k] = {weights: halves(S.weights[k]), losses: S.losses[k].map(halves)};
      }
      return decoded[k];
    }
    var nHyper = S.default.length, nConfigs = S.steps.length;
    var color = colorScale(S.colorscale), px = 2;  // images at twice the CSS pixels
    var pointImages = {}, shown = '', first = true, want = null;

    // Where the pointer is, or the finger tapped: the selected model's P(class 1) there
    // (the plane is an image, so plotly's hover cannot say it).
    var box = root.document.createElement('div');
    box.style.position = 'relative';
    gd.parentNode.insertBefore(box, gd);
    box.appendChild(gd);
    var probe = root.document.createElement('div');
    probe.className = 'd2l-probe';
    probe.setAttribute('aria-hidden', 'true');
    box.appendChild(probe);
    var model = null;  // what the plane shows: {weights, start, c}

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

    // The trained configuration nearest the controls, the control `moved` kept as chosen.
    function resolve(a, moved) {
      var h = a.slice(1, 1 + nHyper);
      if (configOf(h) < 0) {
        var keep = partners(moved - 1);
        var snapped = h.map(function (v, i) { return keep.indexOf(i) >= 0 ? v : S.default[i]; });
        h = configOf(snapped) >= 0 ? snapped
          : h.map(function (v, i) { return i === moved - 1 ? v : S.default[i]; });
      }
      return [a[0]].concat(h, [a[a.length - 1]]);
    }

    function selected(a) {
      var d = a[0], e = a[a.length - 1], h = a.slice(1, 1 + nHyper), c = configOf(h);
      return {d: d, e: e, h: h, c: c, k: d * nConfigs + c, epoch: S.snapshots[e]};
    }

    function readout(a) {
      var m = selected(a), st = S.stats[m.k][m.e];
      var text = S.names.slice(1, 1 + nHyper).map(function (name, i) {
        return S.labels[i + 1] + ' ' + S.values[i + 1][m.h[i]];
      }).join(', ');
      var line = 'epoch ' + m.epoch + ': training loss ' + st[1].toPrecision(3) +
        ', test loss ' + st[2].toPrecision(3) + ', training accuracy ' +
        (100 * st[3]).toFixed(1) + '%, test accuracy ' + (100 * st[4]).toFixed(1) + '%';
      if (S.diverged[m.k] && m.epoch >= S.diverged[m.k]) {
        line += ' (diverged at epoch ' + S.diverged[m.k] + ': its last finite weights)';
      }
      return '<b>' + escapeHtml(S.values[0][m.d] + ': ' + text) + '</b><br>' + escapeHtml(line);
    }

    // The plane's and the loss plot's sizes in CSS pixels, and the loss plot's place.
    function geometry() {
      var L = gd._fullLayout;
      return {plane: L.xaxis._length, lossW: L.xaxis2._length, lossH: L.yaxis2._length,
        lossX: L.xaxis2.domain[0], lossSizeX: L.xaxis2.domain[1] - L.xaxis2.domain[0],
        lossY: L.yaxis2.domain[1], lossSizeY: L.yaxis2.domain[1] - L.yaxis2.domain[0]};
    }

    // Every change redraws three layout images, never a trace: plotly redraws images
    // alone (a trace's change would redraw the whole figure).
    function show(a) {
      var key = a.join(',');
      if (key === shown) { return; }
      shown = key;
      var m = selected(a), epoch = m.epoch, stored = decode(m.k);
      // The model's weights hold one snapshot after another, each of the same size.
      var start = m.e * stored.weights.length / S.snapshots.length;
      var z = boundary(stored.weights, start, S.layers[m.c], S.activations[m.c], S.grid);
      model = {weights: stored.weights, start: start, c: m.c};
      var le = S.loss_epochs.filter(function (x) { return x <= epoch; });
      var tr = Array.prototype.slice.call(stored.losses[0], 0, le.length);
      var te = Array.prototype.slice.call(stored.losses[1], 0, le.length);
      var g = geometry();
      var pk = m.d + ':' + g.plane;
      if (!(pk in pointImages)) {
        pointImages[pk] = pointsImage(S.points[m.d], S.colors, S.extent, g.plane * px, px);
      }
      var sources = [boundaryImage(z, color), pointImages[pk],
        lossImage(le, [tr, te], S.loss_styles, S.snapshots[S.snapshots.length - 1],
          S.loss_range, g.lossW, g.lossH, px)];
      gd.d2lShown = {dataset: m.d, config: m.h, epoch: epoch, z: z, loss_epochs: le,
        losses: [tr, te], points: S.points[m.d], actives: a.slice()};
      var lay = {};
      if (first) {  // once: the images themselves, then only their sources
        first = false;
        var image = {sizing: 'stretch', xanchor: 'left', yanchor: 'top'};
        var half = S.extent / (S.grid.length - 1);  // pixel centres on the grid points
        lay.images = [
          Object.assign({source: sources[0], xref: 'x', yref: 'y', x: -S.extent - half,
            y: S.extent + half, sizex: 2 * (S.extent + half), sizey: 2 * (S.extent + half),
            layer: 'below'}, image),
          Object.assign({source: sources[1], xref: 'x', yref: 'y', x: -S.extent,
            y: S.extent, sizex: 2 * S.extent, sizey: 2 * S.extent, layer: 'above'}, image),
          Object.assign({source: sources[2], xref: 'paper', yref: 'paper', x: g.lossX,
            y: g.lossY, sizex: g.lossSizeX, sizey: g.lossSizeY, layer: 'above'}, image),
        ];
        root.Plotly.relayout(gd, lay);
        return;
      }
      sources.forEach(function (src, i) {
        if (gd.layout.images[i].source !== src) { lay['images[' + i + '].source'] = src; }
      });
      root.Plotly.relayout(gd, lay);
    }

    // The plot of `lay`, then the view of `a` (or of a later change). The figure's own
    // traces give way to the images: the heat map hidden, the points and curves without
    // data, kept for their legend entries (which a click must not hide).
    function newPlot(a, lay) {
      first = true;
      shown = '';
      want = a;
      var traces = S.traces.map(function (t, i) {
        var trace = Object.assign({}, t);
        if (S.static_traces.indexOf(i) >= 0) {
          if (i === 0) {
            trace.visible = false;
          } else {
            trace.x = [null];
            trace.y = [null];
          }
        }
        return trace;
      });
      var out = Object.assign({}, lay);
      out.legend = Object.assign({}, lay.legend, {itemclick: false, itemdoubleclick: false});
      var plotted = root.Plotly.newPlot(gd, traces, out, S.figure.config);
      return plotted.then(function () { show(want); });
    }

    function probeAt(ev) {
      var L = gd._fullLayout, xa = L.xaxis, ya = L.yaxis, r = gd.getBoundingClientRect();
      var x0 = ev.clientX - r.left - xa._offset, y0 = ev.clientY - r.top - ya._offset;
      if (!model || x0 < 0 || y0 < 0 || x0 > xa._length || y0 > ya._length) {
        probe.style.display = 'none';
        return;
      }
      var x = xa.p2l(x0), y = ya.p2l(y0);
      var p = boundary(model.weights, model.start, S.layers[model.c],
        S.activations[model.c], [x], [y])[0][0];
      probe.textContent = 'x1 ' + x.toFixed(2) + ', x2 ' + y.toFixed(2) +
        ': P(class 1) = ' + p.toFixed(3);
      // Beside the point, on the side with room (a finger covers what is under it).
      var left = ev.clientX - r.left + 12, top = ev.clientY - r.top + 12;
      probe.style.display = 'block';
      if (left + probe.offsetWidth > r.width) { left = Math.max(0, left - probe.offsetWidth - 24); }
      if (ev.pointerType === 'touch') { top = Math.max(0, top - 48); }
      probe.style.left = left + 'px';
      probe.style.top = top + 'px';
    }
    gd.addEventListener('mousemove', probeAt);
    gd.addEventListener('pointerdown', probeAt);
    gd.addEventListener('mouseleave', function () { probe.style.display = 'none'; });

    return {
      traces: function () { return S.traces; },
      resolve: resolve,
      readout: readout,
      draw: function (a, lay) { newPlot(a, lay); },
      show: function (a) {
        want = a;
        if (!first) { show(a); }
      },
      arranged: function (lay, a) { newPlot(a, lay); },
    };
  }

  root.d2lPlayground = {version: VERSION, boundary: boundary, halves: halves};
  if (root.d2lFigures) {
    root.d2lFigures.register('playground', playground);
  } else {  // figure.js comes later: it registers what waits here
    (root.d2lFigureKinds = root.d2lFigureKinds || {}).playground = playground;
  }
})(window);
