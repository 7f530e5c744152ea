/* The web UI's small tools (netwatchd/api/web/static/app.js draws the pages with them): DOM
 * building that only ever sets text (never parses markup: names and paths come from devices and
 * processes that may lie), number and time formats, the JSON fetch, the page's main area. */
"use strict";

const main = document.getElementById("main");
/* what the page exposes of itself, for tests and benchmarks (tests/integration/test_web_browser.py) */
export const page = window.netwatchd = { charts: {}, view: document.body.dataset.view, renders: 0, errors: [] };
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
  let data;
  try {
    data = await response.json();
  } catch (e) {
    data = { error: response.status + " " + response.statusText };
  }
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

const pad = (n) => String(n).padStart(2, "0");
export function fmtTime(usec) {
  if (!usec) return "—";
  const d = new Date(usec / 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
export function fmtClock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
export function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}
export function fmtUsec(us) {
  if (us === undefined || us === null) return "—";
  if (us >= 1e6) return (us / 1e6).toFixed(2) + " s";
  if (us >= 1e3) return (us / 1e3).toFixed(1) + " ms";
  return us + " µs";
}
export const fmtNum = (n) => (typeof n === "number" ? n.toLocaleString("en-US", { maximumFractionDigits: 2 }) : String(n));

export function table(headers, rows, attrs) {
  return el("div", { class: "scroll" },
    el("table", attrs || {},
      el("thead", {}, el("tr", {}, headers.map((h) => (h instanceof Node ? el("th", {}, h) : el("th", { text: h }))))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: headers.length, class: "empty", text: "none" })))));
}
export const row = (...cells) => el("tr", {}, cells.map((c) => (c instanceof Node ? el("td", {}, c) : el("td", { text: c }))));
export const facts = (pairs) => el("dl", { class: "facts" }, pairs.map(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
export const card = (label, value, id) => el("div", { class: "card" }, el("span", { class: "label", text: label }),
  el("span", { class: "value", id: id, text: fmtNum(value) }));

export function show(...nodes) {
  main.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
  window.netwatchd.renders++;
}
export function showError(message) {
  window.netwatchd.errors.push(message);
  show(el("section", { class: "error" }, el("h1", { text: "Cannot show this page" }), el("p", { id: "error", text: message })));
}
export function setQuery(params) {
  const url = new URL(location.href);
  for (const [k, v] of Object.entries(params)) {
    if (v === "" || v === null || v === undefined || v === 0) url.searchParams.delete(k);
    else url.searchParams.set(k, v);
  }
  history.replaceState(null, "", url);
}
export const query = () => new URLSearchParams(location.search);
