/* failfirst report: draws the charts embedded in each page and filters the failure cards. */
(function () {
  "use strict";

  var EMBED_OPTIONS = {
    mode: "vega-lite",
    renderer: "svg",
    // Export only: the editor and source links would leave the (offline) site.
    actions: { export: true, source: false, compiled: false, editor: false }
  };

  // assets/report-data.js defines this: the datasets (column by column) and the specs that
  // several pages share, written once instead of into every page.
  var REPORT = "FAILFIRST_REPORT";

  function rows(table) {
    var names = Object.keys(table.columns);
    var out = [];
    for (var i = 0; i < table.length; i++) {
      var row = {};
      for (var k = 0; k < names.length; k++) row[names[k]] = table.columns[names[k]][i];
      out.push(row);
    }
    return out;
  }

  function dataNames(node, found) {
    if (Array.isArray(node)) {
      node.forEach(function (item) { dataNames(item, found); });
    } else if (node && typeof node === "object") {
      if (node.data && typeof node.data.name === "string") found[node.data.name] = true;
      Object.keys(node).forEach(function (key) { dataNames(node[key], found); });
    }
    return found;
  }

  // A page's chart as a whole Vega-Lite spec: a shared spec with the page's parameter
  // values, and the datasets it names (fresh rows for each chart: Vega marks the objects it
  // ingests).
  function resolve(spec) {
    var report = window[REPORT];
    if (!report) throw new Error("assets/report-data.js did not load");
    if (spec.shared !== undefined) {
      var base = report.specs[spec.shared];
      if (!base) throw new Error("no shared chart named " + spec.shared);
      var values = spec.params || {};
      spec = JSON.parse(JSON.stringify(base));
      (spec.params || []).forEach(function (param) {
        if (Object.prototype.hasOwnProperty.call(values, param.name)) {
          param.value = values[param.name];
        }
      });
    }
    var names = Object.keys(dataNames(spec, {}));
    if (names.length) {
      spec.datasets = {};
      names.forEach(function (name) {
        if (!report.datasets[name]) throw new Error("no dataset named " + name);
        spec.datasets[name] = rows(report.datasets[name]);
      });
    }
    return spec;
  }

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
        spec = resolve(JSON.parse(source.textContent));
      } catch (err) {
        box.classList.add("failed");
        box.textContent = "This chart's data could not be read: " + err.message;
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
