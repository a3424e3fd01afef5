// Search result snippets: show formulas as plain text ("∂L/∂w") instead of the raw LaTeX
// that Sphinx's searchtools.js would take from the page ("\(\partial L/\partial w\)").
// Loaded on every page (backprop_book.py); acts only where searchtools.js defined Search.
(function () {
  var SYMBOLS = {
    partial: "∂", times: "×", cdot: "·", odot: "⊙", otimes: "⊗", sum: "Σ", prod: "Π",
    in: "∈", top: "⊤", to: "→", rightarrow: "→", leftarrow: "←", le: "≤", leq: "≤",
    ge: "≥", geq: "≥", ne: "≠", neq: "≠", approx: "≈", infty: "∞", nabla: "∇",
    alpha: "α", beta: "β", gamma: "γ", delta: "δ", epsilon: "ε", varepsilon: "ε",
    eta: "η", theta: "θ", lambda: "λ", mu: "μ", pi: "π", rho: "ρ", sigma: "σ", tau: "τ",
    phi: "φ", varphi: "φ", psi: "ψ", omega: "ω", Delta: "Δ", Sigma: "Σ", ldots: "…",
    dots: "…", cdots: "⋯", quad: " ", qquad: " ", mid: "|", lVert: "‖", rVert: "‖",
    Vert: "‖", langle: "⟨", rangle: "⟩",
  };
  var ACCENTS = { bar: "\u0304", dot: "\u0307", hat: "\u0302", tilde: "\u0303", vec: "\u20d7" };

  function plainMath(tex) {
    var s = tex.replace(/^\s*(\\\(|\\\[|\$\$?)/, "").replace(/(\\\)|\\\]|\$\$?)\s*$/, "");
    s = s.replace(/\\mathbb\{R\}/g, "ℝ");
    s = s.replace(/\\frac\{([^{}]*)\}\{([^{}]*)\}/g, "($1)/($2)");
    s = s.replace(/\\(bar|dot|hat|tilde|vec)\{?([A-Za-z])\}?/g, function (_, a, c) {
      return c + ACCENTS[a];
    });
    s = s.replace(/\\(left|right|big|Big|bigg|Bigg)\b/g, "");
    s = s.replace(/\\([A-Za-z]+)/g, function (_, name) {
      return Object.prototype.hasOwnProperty.call(SYMBOLS, name) ? SYMBOLS[name] : name;
    });
    s = s.replace(/\\[,;:! ]/g, " ").replace(/[{}]/g, "").replace(/&/g, " ");
    return s.replace(/\s+/g, " ").trim();
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (typeof Search === "undefined" || typeof Search.htmlToText !== "function") return;
    var original = Search.htmlToText;
    Search.htmlToText = function (htmlString, anchor) {
      var doc = new DOMParser().parseFromString(htmlString, "text/html");
      doc.querySelectorAll("span.math, div.math").forEach(function (el) {
        el.replaceWith(doc.createTextNode(" " + plainMath(el.textContent) + " "));
      });
      return original(doc.documentElement.outerHTML, anchor);
    };
    window.backpropPlainMath = plainMath;
  });
})();
