// pcsaga console: shows times in the reader's time zone (the server writes UTC), and marks the
// page as rendered for the browser test. Read-only: nothing here sends a request.
(function () {
  "use strict";
  var pad = function (n) { return (n < 10 ? "0" : "") + n; };
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var at = new Date(el.getAttribute("datetime"));
    if (isNaN(at.getTime())) { return; }
    el.title = el.textContent;
    el.textContent = at.getFullYear() + "-" + pad(at.getMonth() + 1) + "-" + pad(at.getDate()) +
      " " + pad(at.getHours()) + ":" + pad(at.getMinutes()) + ":" + pad(at.getSeconds());
    el.dataset.local = "1";
  });
  var svg = document.querySelector("svg.timeline");
  if (svg) {
    document.body.dataset.timelineMarks = String(svg.querySelectorAll("g.attempt").length);
  }
  document.body.dataset.console = "ready";
})();
