// keepalive-lab: the Connections tab's panel above Locust's table: the report's verdict, the
// sockets, and a link to the live charts. Locust's extended tables hold text only, so this small
// script adds the panel; it polls the suite's summary every 2 s, like Locust's own polling.
(function () {
  "use strict";
  var base = "./keepalive-lab/";
  var data = null;

  function tabOpen() {
    return new URLSearchParams(window.location.search).get("tab") === "connections";
  }

  function num(value, digits) {
    if (value === null || value === undefined) return "–";
    return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits || 0 });
  }

  function figures(d) {
    var s = d.summary || {}, last = d.last_sample || {};
    var range = s.port_range || last.port_range;
    var out = [
      ["Client TIME_WAIT", num(last.client_time_wait) + " now, " + num(s.peak_client_time_wait) + " at peak"],
      ["Server TIME_WAIT", num(last.server_time_wait) + " now, " + num(s.peak_server_time_wait) + " at peak"],
      ["Client ESTABLISHED", num(last.client_established)],
      ["Ports in use", num(last.ports_in_use) + " of " + num(range) + " (peak " + num(s.peak_port_use_pct, 2) + "%)"],
      ["Churn", num(s.churn_per_s, 1) + " new TIME_WAIT/s"],
      ["Projected port use", num(s.projected_port_use_pct, 1) + "%"],
      ["Range runs out in", s.seconds_to_exhaustion === null || s.seconds_to_exhaustion === undefined
        ? "never" : num(s.seconds_to_exhaustion, 1) + " s"],
      ["tcp_tw_reuse", d.tcp_tw_reuse === null || d.tcp_tw_reuse === undefined ? "–" : String(d.tcp_tw_reuse)],
    ];
    if (s.preexisting_client_time_wait) {
      out.push(["Already there at the start", num(s.preexisting_client_time_wait) + " client TIME_WAIT (not this run's)"]);
    }
    return out;
  }

  // Several client hosts: ports run out per host, so each gets its own row against its own range.
  function hostsTable(hosts, limiting) {
    var table = document.createElement("table");
    table.id = "keepalive-lab-hosts";
    table.style.cssText = "border-collapse:collapse;margin:4px 0 8px 0;font-size:.9rem";
    var head = ["Host", "Workers", "Connections", "Churn /s", "Peak client TIME_WAIT", "Peak ports in use",
      "Port range", "Projected port use", "Runs out in", "errno 99"];
    var tr = document.createElement("tr");
    head.forEach(function (h) {
      var th = document.createElement("th");
      th.textContent = h;
      th.style.cssText = "text-align:left;padding:2px 10px 2px 0;font-weight:600";
      tr.appendChild(th);
    });
    table.appendChild(tr);
    hosts.forEach(function (h) {
      var row = document.createElement("tr");
      [h.host + (h.host === limiting ? " (runs out first)" : ""), num(h.workers), num(h.connections_opened),
        num(h.churn_per_s, 1), num(h.peak_client_time_wait), num(h.peak_ports_in_use), num(h.port_range),
        num(h.projected_port_use_pct, 1) + "%",
        h.seconds_to_exhaustion === null || h.seconds_to_exhaustion === undefined ? "never" : num(h.seconds_to_exhaustion, 1) + " s",
        num(h.addr_not_available_errors)].forEach(function (text) {
        var td = document.createElement("td");
        td.textContent = text;
        td.style.cssText = "padding:2px 10px 2px 0";
        row.appendChild(td);
      });
      table.appendChild(row);
    });
    return table;
  }

  function render(panel) {
    panel.textContent = "";
    var title = document.createElement("div");
    title.id = "keepalive-lab-verdict";
    title.style.cssText = "font-weight:600;font-size:1.05rem;margin-bottom:6px";
    title.textContent = data && data.verdict ? data.verdict : "No run yet: start a test to see its connections.";
    panel.appendChild(title);
    if (!data || !data.run_id) return;
    var meta = document.createElement("div");
    meta.style.cssText = "margin-bottom:8px;opacity:.8";
    meta.textContent = "Run " + data.run_id + " · status " + data.status + " · " + data.folder;
    panel.appendChild(meta);
    if (data.status_reason) {
      var reason = document.createElement("div");
      reason.id = "keepalive-lab-status-reason";
      reason.style.cssText = "margin-bottom:8px;color:" + (data.status === "failed" ? "#c62828" : "inherit");
      reason.textContent = data.status + ": " + data.status_reason;
      panel.appendChild(reason);
    }
    var list = document.createElement("dl");
    list.id = "keepalive-lab-sockets";
    list.style.cssText = "display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0 0 8px 0";
    figures(data).forEach(function (pair) {
      var dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = pair[0];
      dd.textContent = pair[1];
      dd.style.margin = "0";
      list.appendChild(dt);
      list.appendChild(dd);
    });
    panel.appendChild(list);
    if (data.hosts && data.hosts.length > 1) panel.appendChild(hostsTable(data.hosts, (data.summary || {}).limiting_host));
    var link = document.createElement("a");
    link.id = "keepalive-lab-charts-link";
    link.href = base + "charts";
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = "Live charts: TIME_WAIT and ports in use over time";
    panel.appendChild(link);
  }

  function place() {
    var panel = document.getElementById("keepalive-lab-panel");
    if (!tabOpen()) {
      if (panel) panel.remove();
      return;
    }
    var table = document.querySelector("table");
    if (!table) return;
    var container = table.closest(".MuiTableContainer-root, .MuiPaper-root") || table.parentElement;
    if (!panel) {
      panel = document.createElement("section");
      panel.id = "keepalive-lab-panel";
      panel.style.cssText = "padding:12px 16px;margin:8px 0 12px 0;border:1px solid rgba(127,127,127,.35);" +
        "border-radius:6px;line-height:1.5";
    }
    if (panel.nextSibling !== container) container.parentElement.insertBefore(panel, container);
    render(panel);
  }

  function poll() {
    fetch(base + "summary.json", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) { if (d) { data = d; place(); } })
      .catch(function () {});
  }

  poll();
  setInterval(poll, 2000);
  setInterval(place, 500);
})();
