// Loaded on pages with ipywidgets, after require.js and before the widget manager
// (_config.yml, nb_ipywidgets_js).
(function () {
  // The manager (embed-amd.js) loads its fonts and modules relative to the require.js
  // module "@jupyter-widgets/html-manager/dist"; point that at the copy served from this
  // site, so nothing is fetched relative to the page or from a CDN.
  var root = document.documentElement.dataset.content_root || "";
  var dist = new URL(root + "_static/vendor/html-manager", document.baseURI).href;
  require.config({ paths: { "@jupyter-widgets/html-manager/dist": dist } });

  // Widgets typeset their labels with the MathJax 2 call MathJax.Hub.Queue; the book loads
  // MathJax 3. Give them that one call, mapped onto MathJax 3's typesetPromise. MathJax is
  // loaded with `defer`, so it is in place by DOMContentLoaded, before widgets render.
  document.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (!mj || mj.Hub || typeof mj.typesetPromise !== "function") return;
    mj.Hub = {
      Queue: function (job) {
        var element = Array.isArray(job) ? job[2] : undefined;
        var ready = mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
        ready
          .then(function () { return mj.typesetPromise(element ? [element] : undefined); })
          .catch(function (err) { console.warn("MathJax typeset in widget failed", err); });
      },
    };
  });
})();
