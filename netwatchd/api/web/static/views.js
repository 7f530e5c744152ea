/* The web UI's pages, one function each, named by the view the server put in the page (body
 * data-view; data-key names the device or alert): each draws itself from /api/, and its onTick
 * says what it fetches again when the live feed ticks (netwatchd/api/web/static/app.js). */
"use strict";

import { canvasBox, drawChart, drawTimeline, points, seriesChart } from "/static/charts.js";
import { card, el, facts, fmtBytes, fmtNum, fmtTime, fmtUsec, getJSON, page, query, row, setQuery, show, showError,
  table } from "/static/dom.js";

const key = document.body.dataset.key;
const charts = page.charts;

export const views = {};

let overviewAt = 0;
let overviewCounts = null;
views.overview = async function () {
  overviewAt = Date.now();
  const o = await getJSON("/api/overview");
  overviewCounts = [o.devices.total, o.alerts.total];
  const byKind = Object.entries(o.alerts.by_kind).filter(([, n]) => n > 0)
    .map(([kind, n]) => row(el("a", { href: "/alerts?kind=" + encodeURIComponent(kind), text: kind }), fmtNum(n)));
  const lost = Object.entries(o.lost).map(([k, v]) => row(k.replace(/_/g, " "), fmtNum(v)));
  const dropped = Object.entries(o.dropped).filter(([, n]) => n > 0).map(([k, v]) => row(k.replace(/_/g, " ") + " (dropped)", fmtNum(v)));
  show(
    el("h1", { text: "Overview" }),
    el("div", { class: "cards" },
      card("devices", o.devices.total, "devices-total"), card("new today", o.devices.new_today, "devices-new"),
      card("alerts", o.alerts.total, "alerts-total"), card("connect() calls", o.connects.attempts, "attempts")),
    o.learning ? el("p", { class: "note", text: "The baselines are still learning: rate alerts wait until they know what is normal." }) : null,
    el("h2", { text: "connect() calls per tick" }), canvasBox("connects-chart", "connect() calls and failures per tick"),
    el("div", { class: "columns" },
      el("section", {}, el("h2", { text: "Alerts by kind" }), table(["kind", "alerts"], byKind)),
      el("section", {}, el("h2", { text: "Lost and dropped" }), table(["what", "count"], lost.concat(dropped)))),
    el("p", { class: "meta", text: `netwatchd ${o.version}, watching ${o.interfaces.join(", ") || "no interface"} since ${fmtTime(o.started_at_usec)}; ` +
      `a tick takes ${fmtNum(o.tick.recent_mean_ms)} ms (at most ${fmtNum(o.tick.recent_max_ms)} ms over the last 60)` }));
  const t = o.connects.per_tick;
  drawChart("connects", document.getElementById("connects-chart"), [
    { label: "connect() calls", data: points(t.time_usec, t.connects || []), borderColor: "#2563eb", pointRadius: 0, borderWidth: 1.5 },
    { label: "failed", data: points(t.time_usec, t.failed || []), borderColor: "#dc2626", pointRadius: 0, borderWidth: 1.5 },
  ]);
  window.netwatchd.window = t.time_usec.length;
};
/* Each tick's point comes in the event itself: the page asks the daemon again only when the
 * devices or alerts changed, or every 10 s (the lost and dropped figures). */
views.overview.onTick = (s) => {
  if (!overviewCounts || s.devices !== overviewCounts[0] || s.alerts !== overviewCounts[1] || Date.now() - overviewAt > 10000) {
    return views.overview();
  }
  document.getElementById("attempts").textContent = fmtNum(s.attempts);
  const chart = charts.connects;
  if (!chart || !s.tick || s.tick.connects === undefined) return;
  const x = s.time_usec / 1000;
  const sets = chart.data.datasets;
  if (sets[0].data.length && sets[0].data[sets[0].data.length - 1].x >= x) return;
  sets[0].data.push({ x: x, y: s.tick.connects });
  sets[1].data.push({ x: x, y: s.tick.failed });
  for (const set of sets) while (set.data.length > (window.netwatchd.window || 600)) set.data.shift();
  chart.update("none");
};

const DEVICE_COLUMNS = [["mac", "MAC"], ["vendor", "vendor"], ["address", "addresses"], ["hostname", "hostname"],
  ["first_seen", "first seen"], ["last_seen", "last seen"], ["traffic", "traffic (sent / received)"], [null, "randomized"]];
let deviceCount = null;
let devicesAt = 0;

views.devices = async function () {
  devicesAt = Date.now();
  const q = query();
  const params = new URLSearchParams({ sort: q.get("sort") || "first_seen", order: q.get("order") || "asc",
    q: q.get("q") || "", offset: q.get("offset") || "0", limit: "100" });
  const d = await getJSON("/api/devices?" + params);
  const filter = el("input", { type: "search", id: "filter", placeholder: "filter: MAC, vendor, name, address", value: d.q,
    "aria-label": "filter devices" });
  let timer = null;
  filter.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { setQuery({ q: filter.value, offset: 0 }); views.devices().catch((e) => showError(e.message)); }, 250);
  });
  const headers = DEVICE_COLUMNS.map(([sort, label]) => {
    if (!sort) return label;
    const arrow = d.sort === sort ? (d.order === "asc" ? " ▲" : " ▼") : "";
    return el("a", { href: "#", "data-sort": sort, text: label + arrow, on: { click: (ev) => {
      ev.preventDefault();
      setQuery({ sort: sort, order: d.sort === sort && d.order === "asc" ? "desc" : "asc", offset: 0 });
      views.devices().catch((e) => showError(e.message));
    } } });
  });
  const rows = d.devices.map((x) => el("tr", { "data-mac": x.mac },
    el("td", {}, el("a", { href: "/devices/" + x.mac, class: "mono", text: x.mac })),
    el("td", { text: x.vendor || "—" }),
    el("td", { class: "mono", text: x.ipv4.concat(x.ipv6).join(" ") || "—" }),
    el("td", { text: x.hostname || "—" }),
    el("td", { text: fmtTime(x.first_seen_usec) }), el("td", { text: fmtTime(x.last_seen_usec) }),
    el("td", { text: fmtBytes(x.bytes_sent) + " / " + fmtBytes(x.bytes_received) }),
    el("td", { text: x.randomized ? "yes" : "" })));
  const page = Math.floor(d.offset / d.limit) + 1;
  const pages = Math.max(1, Math.ceil(d.matched / d.limit));
  const go = (offset) => () => { setQuery({ offset: offset }); views.devices().catch((e) => showError(e.message)); };
  const focused = document.activeElement && document.activeElement.id === "filter";
  show(el("h1", { text: "Devices" }),
    el("div", { class: "controls" }, filter,
      el("span", { id: "device-count", text: `${fmtNum(d.matched)} of ${fmtNum(d.total)} devices` })),
    table(headers, rows, { id: "devices" }),
    el("div", { class: "pager" },
      el("button", { type: "button", disabled: page <= 1, on: { click: go(Math.max(0, d.offset - d.limit)) }, text: "‹ previous" }),
      el("span", { text: `page ${page} of ${pages}` }),
      el("button", { type: "button", disabled: page >= pages, on: { click: go(d.offset + d.limit) }, text: "next ›" })));
  if (focused) { const f = document.getElementById("filter"); f.focus(); f.setSelectionRange(f.value.length, f.value.length); }
  deviceCount = d.total;
};
/* a new device at once; last seen and traffic every 10 s */
views.devices.onTick = (s) => {
  if ((s.devices !== deviceCount || Date.now() - devicesAt > 10000) && document.activeElement?.id !== "filter") return views.devices();
};

let deviceAt = 0;
views.device = async function () {
  deviceAt = Date.now();
  const d = await getJSON("/api/devices/" + encodeURIComponent(key));
  const x = d.device;
  const names = (label, list) => (list.length ? [el("h3", { text: label }), el("ul", { class: "names" }, list.map((n) => el("li", { text: n })))] : []);
  show(
    el("h1", {}, "Device ", el("span", { class: "mono", text: x.mac })),
    facts([["vendor", x.vendor || "—"], ["hostname", x.hostname ? `${x.hostname} (${x.hostname_source})` : "—"],
      ["interface", x.interface + (x.vlan ? ` (VLAN ${x.vlan})` : "")], ["first seen", fmtTime(x.first_seen_usec)],
      ["last seen", fmtTime(x.last_seen_usec)], ["IPv4", x.ipv4.join(", ") || "—"], ["IPv6", x.ipv6.join(", ") || "—"],
      ["traffic", `${fmtBytes(x.bytes_sent)} sent, ${fmtBytes(x.bytes_received)} received`],
      ["randomized MAC", x.randomized ? "yes" : "no"], ["confirmed", x.confirmed ? "yes" : "not yet (seen in one tick only)"]]),
    el("h2", { text: "Connection attempts (SYNs) per tick" }), canvasBox("device-connects", "SYNs per tick against the baseline band"),
    el("h2", { text: "Fan-out: first-seen peers or ports per tick" }), canvasBox("device-fanout", "fan-out per tick against the baseline band"),
    el("h2", { text: "Alerts" }),
    table(["time", "kind", "message"], d.alerts.map((a) => row(fmtTime(a.timestamp_usec),
      el("a", { href: "/alerts/" + encodeURIComponent(a.id), text: a.kind }), a.message))),
    el("h2", { text: "Peers and ports (newest first-seen)" }),
    table(["address", "port", "transport", "name"], x.recent_peers.slice().reverse().map((p) => row(p[0], String(p[1]), p[2], p[3] || "—"))),
    el("h2", { text: "Names" }),
    names("DNS names asked", x.dns_names), names("HTTP hosts", x.http_hosts), names("TLS server names", x.tls_names),
    x.http_requests.length ? [el("h3", { text: "HTTP requests" }), table(["method", "host", "path"], x.http_requests.map((r) => row(r[0], r[1], r[2])))] : []);
  seriesChart("device_connects", document.getElementById("device-connects"), d.series.connects, d.z_threshold,
    alertMarkers(d.series.connects, d.alerts, (kind) => kind !== "fan_out"));
  seriesChart("device_fan_out", document.getElementById("device-fanout"), d.series.fan_out, d.z_threshold,
    alertMarkers(d.series.fan_out, d.alerts, (kind) => kind === "fan_out"));
};
const SERIES_EVERY_MS = 2000; // a chart's new points: every 2 s is live enough, and cheap for the daemon
views.device.onTick = () => { if (Date.now() - deviceAt >= SERIES_EVERY_MS) return views.device(); };

/* the device's alerts on its chart's time axis: a rate alert at the value it fired on, any other
 * at the series' value that tick */
function alertMarkers(series, alerts, onThisChart) {
  const times = series.time_usec;
  if (!times.length) return [];
  return alerts.filter((a) => onThisChart(a.kind) && a.timestamp_usec >= times[0]).map((a) => {
    let i = times.findIndex((t) => t >= a.timestamp_usec);
    if (i < 0) i = times.length - 1;
    return { time_usec: a.timestamp_usec, value: a.score ? a.observed : series.value[i] || 0 };
  });
}

let alertCount = null;
views.alerts = async function () {
  const q = query();
  const params = new URLSearchParams({ kind: q.get("kind") || "", subject: q.get("subject") || "", offset: q.get("offset") || "0", limit: "100" });
  const a = await getJSON("/api/alerts?" + params);
  const kind = el("select", { id: "kind", "aria-label": "kind" }, el("option", { value: "", text: "every kind" }),
    a.kinds.map((k) => el("option", { value: k, text: k, selected: k === a.kind })));
  kind.addEventListener("change", () => { setQuery({ kind: kind.value, offset: 0 }); views.alerts().catch((e) => showError(e.message)); });
  const subject = el("input", { type: "search", id: "subject", placeholder: "subject: device:…, command:…", value: a.subject, "aria-label": "subject" });
  let timer = null;
  subject.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { setQuery({ subject: subject.value, offset: 0 }); views.alerts().catch((e) => showError(e.message)); }, 250);
  });
  const rows = a.alerts.map((x) => el("tr", { "data-id": x.id, class: "priority-" + x.priority },
    el("td", { text: fmtTime(x.timestamp_usec) }),
    el("td", {}, el("a", { href: "/alerts/" + encodeURIComponent(x.id), text: x.kind })),
    el("td", { class: "mono", text: x.subject }), el("td", { text: x.message })));
  const page = Math.floor(a.offset / a.limit) + 1;
  const pages = Math.max(1, Math.ceil(a.matched / a.limit));
  const go = (offset) => () => { setQuery({ offset: offset }); views.alerts().catch((e) => showError(e.message)); };
  const focused = document.activeElement && document.activeElement.id === "subject";
  show(el("h1", { text: "Alerts" }),
    a.alerts_enabled ? null : el("p", { class: "note", text: "Alerts are off (alerts.enabled): the log below is what was raised before." }),
    el("div", { class: "controls" }, kind, subject, el("span", { id: "alert-count", text: `${fmtNum(a.matched)} of ${fmtNum(a.total)} alerts` })),
    a.timeline.start_usec.length ? el("div", { class: "chart short" }, el("canvas", { id: "timeline", role: "img", "aria-label": "alerts per kind over time" })) : null,
    table(["time", "kind", "subject", "message"], rows, { id: "alerts" }),
    el("div", { class: "pager" },
      el("button", { type: "button", disabled: page <= 1, on: { click: go(Math.max(0, a.offset - a.limit)) }, text: "‹ newer" }),
      el("span", { text: `page ${page} of ${pages}` }),
      el("button", { type: "button", disabled: page >= pages, on: { click: go(a.offset + a.limit) }, text: "older ›" })));
  if (focused) { const f = document.getElementById("subject"); f.focus(); }
  alertCount = a.total;
  drawTimeline(a.timeline);
};
views.alerts.onTick = (s) => { if (s.alerts !== alertCount && document.activeElement?.id !== "subject") return views.alerts(); };

let alertAt = 0;
views.alert = async function () {
  alertAt = Date.now();
  const d = await getJSON("/api/alerts/" + encodeURIComponent(key));
  const a = d.alert;
  const details = Object.entries(a.details).map(([k, v]) => row(k, v));
  const subjectLink = a.subject.startsWith("device:") ? el("a", { href: "/devices/" + a.subject.slice(7), class: "mono", text: a.subject })
    : el("span", { class: "mono", text: a.subject });
  const sigma = a.score ? Math.abs(a.observed - a.baseline) / a.score : null;
  const why = a.score
    ? `${fmtNum(a.observed)} against a baseline of ${fmtNum(a.baseline)} (σ ${fmtNum(sigma)}): ${fmtNum(a.score)} σ away, where ${d.z_threshold} σ alerts.`
    : "Not a rate: raised on what was seen (see the details).";
  show(el("h1", {}, a.kind, " ", el("span", { class: "mono small", text: a.id })),
    el("p", { class: "message", text: a.message }),
    facts([["time", fmtTime(a.timestamp_usec)], ["subject", subjectLink], ["why", why], ["MESSAGE_ID", el("span", { class: "mono", text: a.message_id })]]),
    d.series ? [el("h2", { text: `${d.series_table.replace(/_/g, " ")} of ${d.series_key}, per tick` }), canvasBox("alert-series", "the series around the alert")] : null,
    d.series && !d.series.time_usec.some((t) => t >= a.timestamp_usec - 2e6)
      ? el("p", { class: "note", text: "This alert is older than the ticks the charts keep (web.series_ticks): the series shows the latest ones." }) : null,
    el("h2", { text: "Details" }), table(["field", "value"], details));
  if (d.series) {
    const s = d.series;
    let i = s.time_usec.findIndex((t) => t >= a.timestamp_usec);
    if (i < 0) i = s.time_usec.length - 1;
    const value = a.score ? a.observed : (i >= 0 ? s.value[i] : 0);
    seriesChart("alert", document.getElementById("alert-series"), s, d.z_threshold, [{ time_usec: a.timestamp_usec, value: value || 0 }]);
  }
};
views.alert.onTick = () => { if (Date.now() - alertAt >= SERIES_EVERY_MS) return views.alert(); };

let lastProcesses = 0;
views.processes = async function () {
  lastProcesses = Date.now();
  const p = await getJSON("/api/processes");
  const rows = p.commands.map((c) => row(c.command, fmtNum(c.attempts), fmtNum(c.failed), fmtNum(c.total_attempts), fmtNum(c.succeeded),
    fmtNum(c.refused), fmtNum(c.timed_out), fmtNum(c.other_failed), fmtNum(c.in_progress),
    fmtUsec(c.latency_samples ? c.latency_p50_usec : null), fmtUsec(c.latency_samples ? c.latency_p90_usec : null),
    fmtUsec(c.latency_samples ? c.latency_p99_usec : null)));
  show(el("h1", { text: "Processes" }),
    el("p", { class: "note", text: `Top commands by connect() calls since the daemon started; outcomes and handshake latency over the last ${p.window_sec} s.` }),
    table(["command", "calls", "failed", `calls (${p.window_sec} s)`, "succeeded", "refused", "timed out", "other", "in progress", "p50", "p90", "p99"], rows, { id: "processes" }),
    el("p", { class: "meta", text: `${p.tracked} commands tracked by name; the rest together: ${fmtNum(p.other.attempts)} calls, ${fmtNum(p.other.failed)} failed.` }));
};
views.processes.onTick = () => { if (Date.now() - lastProcesses > 5000) return views.processes(); };
