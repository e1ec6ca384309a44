/* report.html's script (inlined by k3s_netpol.report_html): cell details and event filters. */
(function () {
  "use strict";
  document.body.classList.add("js");
  var panel = document.getElementById("details");
  var selected = null;

  function show(id) {
    var section = document.getElementById(id);
    if (!section || !section.classList.contains("probe")) { return; }
    panel.querySelectorAll(".probe.open").forEach(function (open) { open.classList.remove("open"); });
    section.classList.add("open");
    panel.classList.add("open");
    panel.scrollTop = 0;
    if (selected) { selected.classList.remove("selected"); }
    var link = document.querySelector('.c a[href="#' + id + '"]');
    selected = link ? link.parentElement : null;
    if (selected) { selected.classList.add("selected"); }
    history.replaceState(null, "", "#" + id);
  }

  function hide() {
    panel.classList.remove("open");
    if (selected) { selected.classList.remove("selected"); selected = null; }
    history.replaceState(null, "", location.pathname + location.search);
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest('a[href^="#probe-"]');
    if (link) {
      event.preventDefault();
      show(link.getAttribute("href").slice(1));
      return;
    }
    if (event.target.closest("#details .close")) {
      event.preventDefault();
      hide();
    } else if (event.target.closest("#details .to-event")) {
      hide();
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") { hide(); }
  });
  if (location.hash.indexOf("#probe-") === 0) { show(location.hash.slice(1)); }

  var filters = Array.prototype.slice.call(document.querySelectorAll("#event-filters select"));
  var rows = Array.prototype.slice.call(document.querySelectorAll(".event-table tbody tr"));
  var count = document.getElementById("event-count");
  function applyFilters() {
    var shown = 0;
    rows.forEach(function (row) {
      var visible = filters.every(function (select) {
        if (!select.value) { return true; }
        var values = (row.getAttribute("data-" + select.getAttribute("data-attribute")) || "").split(" ");
        return values.indexOf(select.value) !== -1;
      });
      row.hidden = !visible;
      if (visible) { shown += 1; }
    });
    if (count) { count.textContent = shown + " of " + rows.length + " events"; }
  }
  filters.forEach(function (select) { select.addEventListener("change", applyFilters); });
})();
