/*
 * The page script of d2lcore's interactive figures (d2lcore/figure_page.py): the slider
 * figures of d2lcore/sliders.py and the MLP playground (playground.js adds its kind).
 *
 * Python writes each figure as HTML that reads without this script: a <figure> with its
 * title, caption, one <input type="range"> per axis (disabled until this script runs),
 * the readout of the configuration shown first, an empty plot <div> and the figure's
 * data as JSON (a script element of type application/json). This script
 *
 * - enables the controls and follows them: the keyboard (arrows, Home/End, PageUp/Down)
 *   and the pointer move the native inputs; each change sets the value in words
 *   (aria-valuetext and the <output>), rewrites the readout (a polite live region) and
 *   mirrors the selection into the URL hash (#<id>:lr=0.1,dropout=0.5) so that a link
 *   reopens it;
 * - draws the plot with plotly when plotly.js has loaded and the figure comes near the
 *   viewport, then the figures further away one at a time while the page is idle, so the
 *   page paints its text first;
 * - stacks a figure's panels on a narrow screen (a phone) and back, and lays a figure's
 *   tiled images out in fewer columns there.
 *
 * What a figure draws is its kind's: register(name, factory) adds one; factory(gd, data)
 * returns {resolve(steps, moved), readout(steps), draw(steps, layout), show(steps),
 * arranged(layout, steps), traces(steps)}: the configuration to show for the controls'
 * steps (a kind may move other controls), its readout (HTML), the first drawing, each
 * later change, a redraw after the panels were stacked anew, and the traces it draws
 * (for the legend's room; optional). The "sliders" kind is built in: every
 * configuration's traces are in the data; plotly holds only the selected one's.
 *
 * The book loads this file once per page (deferred, after plotly.js) and it attaches
 * every figure of the page; a notebook rendered elsewhere carries it inline, defined
 * only when the page does not have it yet, and each figure attaches itself.
 */
(function (root) {
  'use strict';

  var VERSION = 6;
  if (root.d2lFigures && root.d2lFigures.version >= VERSION) {
    return;
  }
  var doc = root.document;
  var kinds = {}, waiting = [], figures = [];

  function copy(obj) {
    var out = {};
    for (var key in obj) {
      if (Object.prototype.hasOwnProperty.call(obj, key)) { out[key] = obj[key]; }
    }
    return out;
  }

  // ---------------------------------------------------------------- URL hash

  function hashParts() {
    var h = root.location.hash.replace(/^#/, '');
    return h ? h.split('&') : [];
  }

  // The steps the address names for figure `id` (axes it leaves out keep `steps`), or null.
  function fromHash(id, names, values, steps) {
    var part = hashParts().filter(function (p) { return p.indexOf(id + ':') === 0; })[0];
    if (!part) { return null; }
    var a = steps.slice();
    part.slice(id.length + 1).split(',').forEach(function (kv) {
      var eq = kv.indexOf('=');
      var name = kv.slice(0, eq), value = kv.slice(eq + 1);
      try {
        name = decodeURIComponent(name);
        value = decodeURIComponent(value);
      } catch (e) { /* a malformed escape: compare the text as it is */ }
      var i = names.indexOf(name);
      if (i < 0) { return; }
      var j = values[i].indexOf(value);
      if (j < 0 && value !== '' && !isNaN(Number(value))) {
        j = values[i].map(Number).indexOf(Number(value));  // 0.10 and 0.1 are one rate
      }
      if (j >= 0) { a[i] = j; }
    });
    return a;
  }

  function toHash(id, names, values, steps) {
    var part = id + ':' + names.map(function (name, i) {
      return encodeURIComponent(name) + '=' + encodeURIComponent(values[i][steps[i]]);
    }).join(',');
    var found = false;
    var parts = hashParts().map(function (p) {  // other figures' selections stay
      if (p.indexOf(id + ':') === 0) { found = true; return part; }
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

  // ---------------------------------------------------------------- panels on a phone

  // The layout with the panels (data.panels: rows, cols, row-major cells [x axis, y axis,
  // title annotation or -1], the plot height) in as many columns as `width` pixels hold
  // at data.panels.min_width each: the same layout where all fit.
  function arrange(layout, panels, width) {
    if (!panels) { return layout; }
    var n = panels.cells.length;
    var cols = Math.max(1, Math.min(panels.cols, Math.floor(width / panels.min_width)));
    if (cols >= panels.cols) { return layout; }
    var rows = Math.ceil(n / cols), rowH = panels.plot_height / panels.rows, gap = 90;
    var plotW = width - layout.margin.l - layout.margin.r;
    var plotH = rows * rowH + (rows - 1) * gap, xGap = cols > 1 ? 64 / plotW : 0;
    var lay = copy(layout), top = layout.margin.t, bottom = layout.margin.b;
    lay.height = top + plotH + bottom;
    lay.annotations = (layout.annotations || []).map(copy);
    panels.cells.forEach(function (cell, i) {
      var r = Math.floor(i / cols), c = i % cols, w = (1 - xGap * (cols - 1)) / cols;
      var x0 = c * (w + xGap), y1 = 1 - r * (rowH + gap) / plotH;
      var xk = cell[0].replace(/^x/, 'xaxis'), yk = cell[1].replace(/^y/, 'yaxis');
      lay[xk] = copy(layout[xk] || {});
      lay[yk] = copy(layout[yk] || {});
      lay[xk].domain = [x0, x0 + w];
      lay[yk].domain = [Math.max(0, y1 - rowH / plotH), y1];
      if (cell[2] >= 0) {
        var a = lay.annotations[cell[2]];
        a.x = x0 + w / 2;
        a.y = y1;
      }
    });
    lay.d2lColumns = cols;
    return lay;
  }

  // ---------------------------------------------------------------- tiles on a phone

  // The layout for a figure of tiled images (data.tiles, d2lcore.tiles.set_tiles) on a
  // plot `width` pixels wide: the tiles in as many columns as hold them at
  // tiles.min_width pixels each (at least one), their labels above them, the axes'
  // ranges and a plot as tall as square pixels need; the same layout where all fit.
  // lay.d2lColumns is the number of columns and lay.d2lTiles their layout.
  function arrangeTiles(layout, tiles, width) {
    if (!tiles) { return layout; }
    var plotW = width - layout.margin.l - layout.margin.r, n = tiles.layouts.length;
    var cols = 1;
    while (cols < n &&
      plotW * tiles.cell_width / tiles.layouts[cols].shape[1] >= tiles.min_width) { cols++; }
    if (cols >= n) { return layout; }
    var to = tiles.layouts[cols - 1], lay = copy(layout);
    lay.annotations = (layout.annotations || []).map(copy);
    tiles.annotations.forEach(function (a, j) {
      lay.annotations[a].x = to.labels[j][0];
      lay.annotations[a].y = to.labels[j][1];
    });
    lay.xaxis = copy(layout.xaxis);
    lay.yaxis = copy(layout.yaxis);
    lay.xaxis.range = to.x_range.slice();
    lay.yaxis.range = to.y_range.slice();
    var plotH = plotW * (to.y_range[0] - to.y_range[1]) / (to.x_range[1] - to.x_range[0]);
    lay.height = Math.ceil(layout.margin.t + plotH + layout.margin.b);
    lay.d2lColumns = cols;
    lay.d2lTiles = to;
    return lay;
  }

  // The tiled array z (rows of numbers, laid out as tiles.layouts' last) with its tiles
  // moved to where the layout `to` puts them, blank (0) between them.
  function retile(z, tiles, to) {
    var from = tiles.layouts[tiles.layouts.length - 1], out = [];
    for (var r = 0; r < to.shape[0]; r++) {
      var row = new Array(to.shape[1]);
      for (var c = 0; c < to.shape[1]; c++) { row[c] = 0; }
      out.push(row);
    }
    tiles.shapes.forEach(function (shape, j) {
      var a = from.corners[j], b = to.corners[j];
      for (var i = 0; i < shape[0]; i++) {
        for (var k = 0; k < shape[1]; k++) { out[b[0] + i][b[1] + k] = z[a[0] + i][a[1] + k]; }
      }
    });
    return out;
  }

  // ---------------------------------------------------------------- drawing, lazily

  // plotly.js may load after this script (a notebook that loads it on demand, a slow
  // network): look again every 50 ms for 10 s, then every half second.
  var plotlyWaits = 0;
  function whenPlotly(then) {
    if (root.Plotly) { then(); return; }
    root.setTimeout(function () { whenPlotly(then); }, plotlyWaits++ < 200 ? 50 : 500);
  }

  var idle = root.requestIdleCallback || function (f) { return root.setTimeout(f, 30); };
  var observer = root.IntersectionObserver ? new root.IntersectionObserver(function (es) {
    es.forEach(function (e) {
      if (e.isIntersecting && e.target.d2lFigure) { e.target.d2lFigure.near = true; }
    });
    drawSoon();
  }, {rootMargin: '600px 0px'}) : null;

  var drawing = false, whenDone = [];
  // Figures near the viewport first, each in a task of its own (the page paints between),
  // then the others one at a time while the page is idle; then what waited for them all.
  function drawSoon() {
    if (drawing) { return; }
    drawing = true;
    whenPlotly(function next() {
      var todo = figures.filter(function (f) { return !f.drawn; });
      var near = todo.filter(function (f) { return f.near || !observer; })[0];
      if (near) {
        root.setTimeout(function () {
          try { near.draw(); } finally { next(); }  // a figure that fails stops no other
        }, 0);
      } else if (todo.length) {
        idle(function () {
          var f = figures.filter(function (g) { return !g.drawn; })[0];
          try {
            if (f) { f.draw(); }
          } finally {
            next();
          }
        });
      } else {
        drawing = false;
        whenDone.splice(0).forEach(function (then) { then(); });
      }
    });
  }

  // Calls `then` once every figure of the page is drawn (at once if they are): what else
  // the page can put off (the formulas out of view, booktools/math_order.js) waits.
  function whenDrawn(then) {
    if (!figures.some(function (f) { return !f.drawn; }) && !drawing) {
      then();
    } else {
      whenDone.push(then);
    }
  }

  // ---------------------------------------------------------------- one figure

  function Figure(el, data, kind) {
    var self = this;
    this.el = el;
    this.data = data;
    this.gd = el.querySelector('.d2l-plot');
    this.inputs = Array.prototype.slice.call(el.querySelectorAll('input.d2l-control-input'));
    this.outputs = this.inputs.map(function (inp) {
      return el.querySelector('output[for="' + inp.id + '"]');
    });
    this.readoutEl = el.querySelector('.d2l-readout');
    this.view = kind(this.gd, data, this);
    this.drawn = false;
    this.near = false;
    this.columns = 0;
    var steps = this.inputs.map(function (inp) { return Number(inp.value); });
    this.steps = this.resolve(fromHash(data.id, data.names, data.values, steps) || steps, -1);
    this.render(false);
    this.inputs.forEach(function (inp, i) {
      inp.disabled = false;
      inp.addEventListener('input', function () { self.change(i); });
    });
    el.classList.add('d2l-live');
  }

  Figure.prototype.resolve = function (steps, moved) {
    return this.view.resolve ? this.view.resolve(steps, moved) : steps;
  };

  // The controls, their values in words and the readout for this.steps; the plot too
  // once drawn.
  Figure.prototype.render = function (plot) {
    var d = this.data, steps = this.steps, outputs = this.outputs;
    this.inputs.forEach(function (inp, i) {
      var text = d.values[i][steps[i]];
      if (Number(inp.value) !== steps[i]) { inp.value = String(steps[i]); }
      inp.setAttribute('aria-valuetext', text);
      if (outputs[i]) { outputs[i].textContent = text; }
    });
    var html = this.view.readout(steps);
    if (this.readoutEl && this.readoutEl.innerHTML !== html) { this.readoutEl.innerHTML = html; }
    if (plot && this.drawn) { this.view.show(steps); }
  };

  Figure.prototype.change = function (moved) {
    var steps = this.inputs.map(function (inp) { return Number(inp.value); });
    this.steps = this.resolve(steps, moved);
    this.render(true);
    toHash(this.data.id, this.data.names, this.data.values, this.steps);
  };

  Figure.prototype.restore = function () {
    var a = fromHash(this.data.id, this.data.names, this.data.values, this.steps);
    if (a) {
      this.steps = this.resolve(a, -1);
      this.render(true);
    }
  };

  // The layout plotly draws: `layout` with tick labels that overflow the plot shown, not
  // hidden (plotly's default hides them, which measures every label of an axis once per
  // label, the most costly part of drawing a figure).
  function drawable(layout) {
    var lay = copy(layout), template = copy(layout.template || {});
    template.layout = copy(template.layout || {});
    ['xaxis', 'yaxis'].forEach(function (key) {  // a template's xaxis is every x axis's
      template.layout[key] = copy(template.layout[key] || {});
      template.layout[key].ticklabeloverflow = 'allow';
    });
    lay.template = template;
    return lay;
  }

  // ---------------------------------------------------------------- legend rows

  // Whether plotly gives trace `t` an entry in the legend (heat maps and contours have
  // none unless asked), and the entry's text.
  var NO_ENTRY = ['heatmap', 'contour', 'image'];
  function legendEntry(t) {
    var shown = t.showlegend === true ||
      (t.showlegend !== false && t.visible !== false && NO_ENTRY.indexOf(t.type) < 0);
    return shown ? String(t.name || 'trace 00').replace(/<[^<>]*>/g, '') : null;
  }

  // `layout` with room for the rows that a legend at the foot of the figure takes with
  // these entries on a plot `width` pixels wide: plotly would find the room short and
  // draw the figure a second time, which on a phone was a tenth of the time a page took
  // to draw its figures. As plotly lays it out: one row if all entries fit, else a grid
  // of columns as wide as the widest entry. An entry is about 40 pixels for its symbol
  // and LEGEND_CHAR_PX a character; above the legend, the x axis takes AXIS_ROOM_PX.
  var LEGEND_CHAR_PX = 5.8, LEGEND_GAP_PX = 5, LEGEND_ROW_PX = 19, AXIS_ROOM_PX = 63;
  function legendRoom(layout, entries, width) {
    var legend = layout.legend || {};
    var below = legend.orientation === 'h' && legend.yref === 'container' && !legend.y;
    if (!below || layout.showlegend === false || !layout.margin || !entries.length) {
      return layout;
    }
    var plotW = width - (layout.margin.l || 0) - (layout.margin.r || 0);
    var widths = entries.map(function (text) { return 40 + LEGEND_CHAR_PX * text.length; });
    var total = widths.reduce(function (a, w) { return a + w + LEGEND_GAP_PX; }, 0);
    var rows = 1;
    if (total >= plotW) {
      var column = Math.max.apply(null, widths) + LEGEND_GAP_PX;
      rows = Math.ceil(entries.length / Math.max(1, Math.floor(plotW / column)));
    }
    var room = AXIS_ROOM_PX + rows * LEGEND_ROW_PX, b = layout.margin.b || 0;
    if (room <= b) { return layout; }
    var lay = copy(layout);
    lay.margin = copy(layout.margin);
    lay.margin.b = room;
    lay.height = layout.height + room - b;
    return lay;
  }

  // The layout to draw at the figure's width: panels and tiles arranged for it, room for
  // the legend of the configuration `steps` shows.
  Figure.prototype.layout = function () {
    var width = this.gd.getBoundingClientRect().width || this.el.clientWidth || 800;
    var lay = arrange(drawable(this.data.figure.layout), this.data.panels, width);
    lay = arrangeTiles(lay, this.data.tiles, width);
    var traces = this.view.traces ? this.view.traces(this.steps) : [];
    return legendRoom(lay, traces.map(legendEntry).filter(function (e) { return e !== null; }),
      width);
  };

  Figure.prototype.draw = function () {
    if (this.drawn) { return; }
    this.drawn = true;
    var lay = this.layout();
    this.columns = lay.d2lColumns || 0;
    this.gd.style.height = lay.height + 'px';
    this.view.draw(this.steps, lay);
    this.el.setAttribute('data-d2l-drawn', '');
  };

  // After a resize: the panels in as many columns as now fit.
  Figure.prototype.resized = function () {
    if (!this.drawn) { return; }
    var lay = this.layout();
    if ((lay.d2lColumns || 0) !== this.columns) {
      this.columns = lay.d2lColumns || 0;
      this.gd.style.height = lay.height + 'px';
      this.view.arranged(lay, this.steps);
    }
  };

  // ---------------------------------------------------------------- the sliders kind

  // data.traces: every configuration's traces, in grid order (d2lcore.grid.Grid);
  // configuration k is sum(steps[i] * strides[i]) and owns traces
  // k * per_config ... (k + 1) * per_config - 1. gd.d2lTraces keeps them all and
  // gd.d2lShown is the configuration plotly holds. Tiled images laid out anew
  // (arrangeTiles) are moved when shown, and kept.
  function sliders(gd, data) {
    var all = data.traces, layout = data.figure.layout, tiled = {};
    gd.d2lTraces = all;

    function tiledZ(t, to) {
      var key = t + ':' + to.cols;
      if (!(key in tiled)) { tiled[key] = retile(all[t].z, data.tiles, to); }
      return tiled[key];
    }

    function flat(steps) {
      var k = 0;
      for (var i = 0; i < steps.length; i++) { k += steps[i] * data.strides[i]; }
      return k;
    }

    function plotted(steps, lay) {
      var k = flat(steps);
      var traces = all.slice(k * data.per_config, (k + 1) * data.per_config).map(function (t, i) {
        var trace = copy(t);  // the same data arrays: nothing is copied but the keys
        trace.visible = true;
        if (lay.d2lTiles && data.tiles.traces.indexOf(i) >= 0) {
          trace.z = tiledZ(k * data.per_config + i, lay.d2lTiles);
        }
        return trace;
      });
      var out = copy(lay);  // new annotations, so that react sees what changed
      out.annotations = (lay.annotations || []).map(copy);
      data.diverged_annotations.forEach(function (j) {
        out.annotations[j].text = data.diverged[k];
        out.annotations[j].visible = data.diverged[k] !== '';
      });
      gd.d2lShown = k;
      return [traces, out];
    }

    return {
      readout: function (steps) { return data.readouts[flat(steps)]; },
      traces: function (steps) {
        var k = flat(steps);
        return all.slice(k * data.per_config, (k + 1) * data.per_config);
      },
      draw: function (steps, lay) {
        layout = lay;
        var p = plotted(steps, layout);
        root.Plotly.newPlot(gd, p[0], p[1], data.figure.config);
      },
      show: function (steps) {
        if (flat(steps) === gd.d2lShown) { return; }
        var p = plotted(steps, layout);
        root.Plotly.react(gd, p[0], p[1], data.figure.config);
      },
      arranged: function (lay, steps) {
        layout = lay;
        var p = plotted(steps, layout);
        root.Plotly.react(gd, p[0], p[1], data.figure.config);
      },
    };
  }

  // A figure without controls: drawn lazily and stacked on a phone like the others.
  function plain(gd, data) {
    return {
      readout: function () { return ''; },
      traces: function () { return data.traces; },
      draw: function (steps, lay) {
        root.Plotly.newPlot(gd, data.traces, lay, data.figure.config);
      },
      show: function () {},
      arranged: function (lay) { root.Plotly.react(gd, gd.data, lay, data.figure.config); },
    };
  }

  // ---------------------------------------------------------------- attaching

  function attach(el) {
    if (!el || el.d2lFigure) { return; }
    var script = el.querySelector('script.d2l-figure-data');
    if (!script) { return; }
    var data = JSON.parse(script.textContent);
    var kind = kinds[data.kind];
    if (!kind) {  // its page script has not run yet: register() attaches it
      if (waiting.indexOf(el) < 0) { waiting.push(el); }
      return;
    }
    var fig = new Figure(el, data, kind);
    el.d2lFigure = fig;
    figures.push(fig);
    if (observer) { observer.observe(el); }
    drawSoon();
  }

  function register(name, factory) {
    kinds[name] = factory;
    waiting.splice(0).forEach(attach);
  }

  function scan() {
    Array.prototype.forEach.call(doc.querySelectorAll('figure.d2l-figure'), attach);
  }

  var resizing = 0;
  root.addEventListener('resize', function () {
    root.clearTimeout(resizing);
    resizing = root.setTimeout(function () {
      figures.forEach(function (f) { f.resized(); });
    }, 150);
  });
  root.addEventListener('hashchange', function () {
    figures.forEach(function (f) { f.restore(); });
  });

  root.d2lFigures = {version: VERSION, attach: attach, register: register, scan: scan,
    arrange: arrange, figures: figures, whenDrawn: whenDrawn};
  register('sliders', sliders);
  register('plain', plain);
  var early = root.d2lFigureKinds || {};  // kinds whose scripts ran before this one
  Object.keys(early).forEach(function (name) { register(name, early[name]); });
  if (doc.readyState === 'loading') {
    doc.addEventListener('DOMContentLoaded', scan);
  } else {
    scan();
  }
})(window);
