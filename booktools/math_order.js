/*
 * The order in which MathJax typesets a page's formulas (booktools/offline_assets.py puts
 * this script before MathJax's own on every page with math):
 *
 * 1. at once, the formulas within a window's height of what the reader sees;
 * 2. the formulas near the window whenever the reader has stopped scrolling for half a
 *    second (they are reading there);
 * 3. the rest of the page once the page's interactive figures are drawn
 *    (d2lFigures.whenDrawn, d2lcore/figure.js), or at once on a page without them.
 *
 * On a slow phone, typesetting the whole page first held every figure up by about a
 * second. MathJax.startup.promise resolves once every formula of the page is typeset.
 */
(function (root) {
  'use strict';

  // The longest the formulas out of view wait for the figures (a figure that cannot be
  // drawn must not keep them from ever being typeset), and how long the window must stay
  // still before the formulas near it are typeset.
  var MAX_WAIT_MS = 10000, STILL_MS = 500;

  // The configuration: MathJax replaces it with itself when it loads.
  var config = root.MathJax = root.MathJax || {};
  var startup = config.startup = config.startup || {};

  startup.pageReady = function () {
    var queue = Promise.resolve();
    // One typesetting at a time: MathJax 3's typesetPromise is not reentrant.
    function typeset(elements) {
      queue = queue.then(function () { return root.MathJax.typesetPromise(elements); });
      return queue;
    }
    var formulas = root.document.querySelectorAll('.math');
    if (!root.IntersectionObserver || !formulas.length) { return typeset(null); }

    var near = new Set(), first = true, still = 0, done = false;
    function typesetNear() {
      if (done || !near.size) { return; }
      var batch = Array.from(near);
      batch.forEach(function (el) { observer.unobserve(el); });
      near.clear();
      typeset(batch);
    }
    var observer = new root.IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (e.isIntersecting) { near.add(e.target); } else { near.delete(e.target); }
      });
      if (first) {
        first = false;
        typesetNear();
      }
    }, {rootMargin: '100% 0px'});
    Array.prototype.forEach.call(formulas, function (el) { observer.observe(el); });
    function onScroll() {
      root.clearTimeout(still);
      still = root.setTimeout(typesetNear, STILL_MS);
    }
    root.addEventListener('scroll', onScroll, {passive: true});

    return new Promise(function (resolve) {
      function rest() {
        if (done) { return; }
        done = true;
        observer.disconnect();
        root.removeEventListener('scroll', onScroll);
        root.clearTimeout(still);
        resolve(typeset(null));  // null: the whole page, less what is typeset already
      }
      var figures = root.d2lFigures;
      if (figures && figures.whenDrawn) {
        figures.whenDrawn(rest);
        root.setTimeout(rest, MAX_WAIT_MS);
      } else {
        rest();
      }
    });
  };
})(window);
