/* failfirst report: draws the charts embedded in each page and filters the failure cards. */
(function () {
  "use strict";

  var EMBED_OPTIONS = {
    mode: "vega-lite",
    renderer: "svg",
    // Export only: the editor and source links would leave the (offline) site.
    actions: { export: true, source: false, compiled: false, editor: false }
  };

  function drawCharts() {
    var boxes = document.querySelectorAll("[data-spec]");
    if (!boxes.length) return;
    if (typeof window.vegaEmbed !== "function") {
      boxes.forEach(function (box) {
        box.classList.add("failed");
        box.textContent = "Charts need assets/vega-bundle.js, which did not load.";
      });
      console.error("failfirst: vegaEmbed is not available");
      return;
    }
    boxes.forEach(function (box) {
      var source = document.getElementById(box.getAttribute("data-spec"));
      var spec;
      try {
        spec = JSON.parse(source.textContent);
      } catch (err) {
        box.classList.add("failed");
        box.textContent = "This chart's data could not be read.";
        console.error("failfirst: bad chart spec", err);
        return;
      }
      window.vegaEmbed(box, spec, EMBED_OPTIONS).then(function () {
        box.classList.add("rendered");
      }).catch(function (err) {
        box.classList.add("failed");
        box.textContent = "This chart could not be drawn: " + err.message;
        console.error("failfirst: chart failed", err);
      });
    });
  }

  function setUpFilter() {
    var bar = document.querySelector(".filter");
    if (!bar) return;
    var buttons = bar.querySelectorAll("button[data-filter]");
    var cards = document.querySelectorAll(".card[data-perturbation]");
    var count = bar.querySelector(".count");

    function apply(name) {
      var shown = 0;
      cards.forEach(function (card) {
        var show = name === "" ? card.getAttribute("data-overall") === "yes"
                               : card.getAttribute("data-perturbation") === name;
        card.hidden = !show;
        if (show) shown += 1;
      });
      buttons.forEach(function (button) {
        button.setAttribute("aria-pressed", String(button.getAttribute("data-filter") === name));
      });
      if (count) count.textContent = shown + (shown === 1 ? " failure" : " failures");
    }

    buttons.forEach(function (button) {
      button.addEventListener("click", function () {
        var name = button.getAttribute("data-filter");
        apply(name);
        history.replaceState(null, "", name ? "#" + encodeURIComponent(name) : "#");
      });
    });
    var wanted = decodeURIComponent(window.location.hash.slice(1));
    var known = Array.prototype.some.call(buttons, function (b) {
      return b.getAttribute("data-filter") === wanted;
    });
    apply(known ? wanted : "");
  }

  function start() {
    drawCharts();
    setUpFilter();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
