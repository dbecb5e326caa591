// Follows a bulk replay without reloading the page: asks the API for its progress every two seconds.
(function () {
  "use strict";
  var box = document.getElementById("replay-progress");
  if (!box) { return; }
  var job = box.getAttribute("data-job");
  var afterwards = 30;  // polls after the replay stops, while its last deliveries settle
  function show(progress) {
    box.querySelectorAll("[data-field]").forEach(function (element) {
      element.textContent = String(progress[element.getAttribute("data-field")]);
    });
    var bar = box.querySelector("progress");
    bar.max = progress.total || 1;
    bar.value = progress.done;
    document.getElementById("new-failures").hidden = !progress.new_failures;
    var cancel = document.getElementById("cancel-form");
    if (cancel) { cancel.hidden = progress.state !== "running"; }
    box.setAttribute("data-state", progress.state);
    if (progress.state === "running") { return true; }
    afterwards -= 1;
    return afterwards > 0 && progress.done > progress.delivered + progress.failed_again + progress.refused;
  }
  function poll() {
    fetch("/v1/console/replay-jobs/" + job, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (progress) { if (progress && show(progress)) { window.setTimeout(poll, 2000); } });
  }
  window.setTimeout(poll, 1000);
})();
