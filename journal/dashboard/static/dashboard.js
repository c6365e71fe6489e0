// edms-journal dashboard: polls the API (same origin, the session cookie) for live figures.
"use strict";
(function () {
  function get(path) {
    return fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(path + ": " + r.status); } return r.json(); });
  }
  function text(id, value) { var el = document.getElementById(id); if (el) { el.textContent = value; } }

  function drawLag(history) {
    var line = document.querySelector("#lag-chart polyline");
    if (!line || !history.length) { return; }
    var t0 = history[0].t, t1 = history[history.length - 1].t, span = Math.max(t1 - t0, 1);
    var top = Math.max.apply(null, history.map(function (s) { return s.lag_bytes; }).concat([1]));
    line.setAttribute("points", history.map(function (s) {
      return ((s.t - t0) / span * 600).toFixed(1) + "," + (115 - s.lag_bytes / top * 105).toFixed(1);
    }).join(" "));
  }

  function capture() {
    get("/api/v1/capture").then(function (c) {
      text("lag-bytes", c.lag_bytes);
      text("lag-seconds", c.lag_seconds);
      text("confirmed-lsn", c.confirmed_lsn || "-");
      text("retained", (c.retained_wal_bytes / 1048576).toFixed(1));
      text("last-event", c.last_event_time || "-");
      text("slot-state", !c.exists ? "missing" : (c.active ? "active" : "inactive"));
      drawLag(c.history);
    }).catch(function () {});
  }

  function health() {
    get("/api/v1/health").then(function (h) {
      var panel = document.getElementById("health-panel");
      panel.classList.toggle("ok", h.ok);
      panel.classList.toggle("failed", !h.ok);
      text("health-verdict", h.ok ? "OK" : "FAILED");
      var list = panel.querySelector(".checks");
      list.textContent = "";
      h.checks.forEach(function (c) {
        var li = document.createElement("li");
        li.className = c.ok ? "ok" : "failed";
        var b = document.createElement("b"); b.textContent = c.check;
        var small = document.createElement("small"); small.textContent = " " + c.detail;
        li.appendChild(b); li.appendChild(document.createTextNode(": " + (c.ok ? "OK" : "FAILED")));
        li.appendChild(small); list.appendChild(li);
      });
    }).catch(function () {});
  }

  function jobs() {
    get("/api/v1/jobs?limit=12").then(function (list) {
      var body = document.querySelector("#jobs tbody");
      if (!body) { return; }
      body.textContent = "";
      list.forEach(function (j) {
        var final = ["succeeded", "failed", "cancelled", "abandoned"].indexOf(j.status) >= 0;
        var tr = document.createElement("tr"); tr.dataset.job = j.id;
        var a = document.createElement("a"); a.href = "/jobs/" + j.id; a.textContent = j.id;
        var cells = [a, j.kind, j.status];
        cells.forEach(function (c, i) {
          var td = document.createElement("td");
          if (typeof c === "string") { td.textContent = c; } else { td.appendChild(c); }
          if (i === 2) { td.className = "status " + j.status; }
          tr.appendChild(td);
        });
        var td = document.createElement("td");
        var bar = document.createElement("div"); bar.className = "bar " + j.status;
        var span = document.createElement("span"); span.style.width = final ? "100%" : "50%";
        bar.appendChild(span);
        var small = document.createElement("small"); small.textContent = j.error || j.progress;
        td.appendChild(bar); td.appendChild(small); tr.appendChild(td);
        body.appendChild(tr);
      });
    }).catch(function () {});
  }

  function job(page) {
    var id = page.dataset.job;
    var cancel = document.getElementById("cancel-form");
    if (cancel) {
      cancel.addEventListener("submit", function (e) {
        e.preventDefault();
        fetch("/api/v1/jobs/" + id + "/cancel", { method: "POST", credentials: "same-origin" })
          .then(function () { location.reload(); });
      });
    }
    if (page.dataset.final === "yes") { return; }
    setInterval(function () {
      get("/api/v1/jobs/" + id).then(function (j) {
        text("job-status", j.status);
        text("job-progress", j.progress);
        if (["succeeded", "failed", "cancelled", "abandoned"].indexOf(j.status) >= 0) { location.reload(); }
      }).catch(function () {});
    }, 1000);
  }

  function restore() {
    var dry = document.getElementById("dry_run"), box = document.getElementById("confirm-box");
    function show() { box.style.display = dry.checked ? "none" : "block"; }
    dry.addEventListener("change", show); show();
  }

  var page = document.querySelector("[data-page]");
  if (!page) { return; }
  if (page.dataset.page === "overview") {
    capture(); setInterval(capture, 2000);
    setInterval(jobs, 2000);
    setInterval(health, 5000);
  } else if (page.dataset.page === "job") {
    job(page);
  } else if (page.dataset.page === "restore") {
    restore();
  }
})();
