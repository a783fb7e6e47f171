// Keep the progress page current: poll /status/ and swap in the server-rendered
// fragments. Fast while a run is active, slow when idle, slower in a hidden tab.
(function () {
  "use strict";
  var root = document.getElementById("mailbox");
  if (!root || !window.fetch) return;
  var active = root.dataset.active === "true";
  var timer = null;

  function delay() {
    if (document.hidden) return 60000;
    return active ? 2000 : 15000;
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(poll, delay());
  }

  function poll() {
    fetch(root.dataset.statusUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("status " + response.status);
        return response.json();
      })
      .then(function (data) {
        active = data.active;
        root.dataset.active = active ? "true" : "false";
        Object.keys(data.html).forEach(function (name) {
          var element = root.querySelector('[data-fragment="' + name + '"]');
          if (element) element.innerHTML = data.html[name];
        });
      })
      .catch(function () { /* signed out or offline: try again later */ })
      .then(schedule);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) schedule();
    else poll();
  });
  schedule();
})();
