/* The web UI's charts, drawn by Chart.js (Debian's libjs-chart.js, the global `Chart`, loaded only
 * by the pages that draw: netwatchd/api/web/app.py): a linear time axis (no date adapter), each
 * rate against its baseline band, the alert log as a timeline. */
"use strict";

import { el, fmtClock, fmtTime, page } from "/static/dom.js";

export const points = (times, values) => times.map((t, i) => ({ x: t / 1000, y: values[i] }));

/* series: {time_usec, value, mean, std}; band mean ± z·σ; markers [{time_usec, value}]: the points
 * alerts fired at, on the same time axis */
export function seriesChart(name, canvas, series, z, markers) {
  if (typeof Chart === "undefined") {
    canvas.replaceWith(el("p", { class: "note", text: "Charts need Chart.js (Debian's libjs-chart.js) on the daemon's host." }));
    return;
  }
  const band = (sign) => series.mean.map((m, i) => (m === null || series.std[i] === null ? null : Math.max(0, m + sign * z * series.std[i])));
  const datasets = [
    { label: "band low", data: points(series.time_usec, band(-1)), borderWidth: 0, pointRadius: 0, fill: false },
    { label: `baseline ± ${z}σ`, data: points(series.time_usec, band(1)), borderWidth: 0, pointRadius: 0,
      backgroundColor: "rgba(70,120,210,0.20)", fill: "-1" },
    { label: "baseline mean", data: points(series.time_usec, series.mean), borderColor: "rgba(70,120,210,0.9)",
      borderDash: [4, 3], borderWidth: 1, pointRadius: 0 },
    { label: "value", data: points(series.time_usec, series.value), borderColor: "#c2410c", borderWidth: 1.5,
      pointRadius: 0, spanGaps: false },
  ];
  if (markers && markers.length) {
    datasets.push({ type: "scatter", label: "fired", data: markers.map((m) => ({ x: m.time_usec / 1000, y: m.value })),
      pointRadius: 6, pointStyle: "triangle", backgroundColor: "#dc2626", borderColor: "#7f1d1d" });
  }
  drawChart(name, canvas, datasets);
}

export function drawChart(name, canvas, datasets) {
  if (typeof Chart === "undefined") {
    canvas.replaceWith(el("p", { class: "note", text: "Charts need Chart.js (Debian's libjs-chart.js) on the daemon's host." }));
    return;
  }
  if (page.charts[name]) page.charts[name].destroy();
  page.charts[name] = new Chart(canvas, {
    type: "line",
    data: { datasets: datasets },
    options: {
      animation: false, parsing: false, normalized: true, responsive: true, maintainAspectRatio: false,
      interaction: { mode: "nearest", intersect: false },
      scales: {
        x: { type: "linear", ticks: { callback: (v) => fmtClock(v), maxTicksLimit: 6 } },
        y: { beginAtZero: true },
      },
      plugins: { legend: { labels: { filter: (item) => item.text !== "band low" } } },
    },
  });
}
const KIND_COLOURS = ["#2563eb", "#dc2626", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d",
  "#ea580c", "#4f46e5", "#be123c", "#0d9488", "#a16207"];
/* the alert log as stacked bars: alerts per kind per time bucket */
export function drawTimeline(t) {
  const canvas = document.getElementById("timeline");
  if (!canvas) return;
  if (typeof Chart === "undefined") { drawChart("timeline", canvas, []); return; }
  if (page.charts.timeline) page.charts.timeline.destroy();
  const label = (usec) => (t.bucket_sec >= 86400 ? fmtTime(usec).slice(0, 10) : fmtTime(usec).slice(5, 16));
  page.charts.timeline = new Chart(canvas, {
    type: "bar",
    data: { labels: t.start_usec.map(label), datasets: Object.entries(t.counts).map(([kind, counts], i) => (
      { label: kind, data: counts, maxBarThickness: 48, backgroundColor: KIND_COLOURS[i % KIND_COLOURS.length] })) },
    options: { animation: false, responsive: true, maintainAspectRatio: false,
      scales: { x: { stacked: true, ticks: { maxTicksLimit: 8 } }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
      plugins: { title: { display: true, text: `alerts per ${t.bucket_sec >= 3600 ? t.bucket_sec / 3600 + " h" : t.bucket_sec / 60 + " min"}` } } },
  });
}
export const canvasBox = (id, label) => el("div", { class: "chart" }, el("canvas", { id: id, "aria-label": label, role: "img" }));
