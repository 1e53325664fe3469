// Airlock's page script: live updates over Server-Sent Events, and the confirm-once Stop
// buttons. No inline code anywhere (the Content-Security-Policy allows only this file).
(function () {
  "use strict";

  // A Stop form asks once: the first tap arms it, a second tap within 5 s submits it.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.dataset || !form.dataset.confirm) return;
    var button = form.querySelector("button");
    if (form.dataset.armed !== "1") {
      ev.preventDefault();
      form.dataset.armed = "1";
      button.dataset.label = button.textContent;
      button.textContent = form.dataset.confirm;
      button.classList.add("armed");
      setTimeout(function () {
        form.dataset.armed = "";
        button.textContent = button.dataset.label;
        button.classList.remove("armed");
      }, 5000);
      return;
    }
    var confirm = form.querySelector("input[name=confirm]");
    if (confirm) confirm.value = "yes";
  });

  var page = document.getElementById("page");
  var live = document.getElementById("live");
  if (!page || !live || !page.dataset.live) return;
  var url = page.dataset.live;
  var busy = false;
  var again = false;

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.status === 401) { window.location.href = "/login"; return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null || html === undefined) return;
        // The server escaped every value in this fragment; it is this origin's own HTML.
        live.innerHTML = html;
        var st = live.querySelector("[data-state]");
        var decide = document.getElementById("decide");
        if (st && decide && st.dataset.state !== "pending") decide.remove();
        document.documentElement.dataset.updated = String(Date.now());
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  if (window.EventSource) {
    var events = new EventSource("/events");
    events.addEventListener("changed", refresh);
    events.addEventListener("open", function () { document.documentElement.dataset.live = "on"; });
  }
  // A safety net if the event stream drops (a proxy, a sleeping phone).
  setInterval(refresh, 30000);
})();
