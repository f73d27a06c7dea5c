// Charts: draw every figure the server embedded as a JSON data block, with the locally served plotly.js.
// Time zone: remember the browser's zone in a cookie the server reads (once; ?tz= on a page overrides it).
(function () {
  "use strict";

  function rememberZone() {
    var zone = window.Intl && Intl.DateTimeFormat().resolvedOptions().timeZone;
    var known = document.cookie.split("; ").some(function (c) { return c.indexOf("wa_tz=") === 0; });
    if (!zone || known || !/^[A-Za-z0-9_+\-\/]+$/.test(zone)) return false;
    document.cookie = "wa_tz=" + zone + "; path=/; max-age=31536000; samesite=lax";
    var shown = document.querySelector("[data-time-zone]");
    var asked = new URLSearchParams(window.location.search).has("tz");
    if (shown && shown.dataset.timeZone !== zone && !asked && !sessionStorage.getItem("wa_tz_reload")) {
      sessionStorage.setItem("wa_tz_reload", "1");  // once: a browser refusing cookies must not loop
      window.location.reload();
      return true;
    }
    return false;
  }

  function draw() {
    if (!window.Plotly) return;
    document.querySelectorAll("[data-chart]").forEach(function (element) {
      var source = document.getElementById(element.dataset.chart);
      if (!source || element.dataset.drawn) return;
      var figure = JSON.parse(source.textContent);
      element.dataset.drawn = "1";
      Plotly.newPlot(element, figure.data, figure.layout, {responsive: true, displaylogo: false});
    });
  }

  if (!rememberZone()) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
    else draw();
  }
})();
