/* netwatchd's web UI: draws the view the server named (body data-view) with static/views.js, and
 * keeps it current from the live feed (/api/events: one event per tick; the browser's
 * EventSource reconnects by itself, after a daemon restart too). Served by
 * netwatchd/api/web/app.py; modules of this origin only (its Content-Security-Policy). */
"use strict";

import { page, showError } from "/static/dom.js";
import { views } from "/static/views.js";

const view = page.view;
const liveBadge = document.getElementById("live");

/* One fetch at a time: a tick that comes while the page is still drawing (its first draw too:
 * the feed's first event comes at once) is skipped, not queued; the next one catches up. */
let busy = false;
function run(work) {
  busy = true;
  return Promise.resolve().then(work).catch((e) => showError(e.message)).finally(() => { busy = false; });
}

/* A page in a background tab asks nothing; it catches up when it is shown again. */
let missed = null;
function onTick(state) {
  const handler = views[view] && views[view].onTick;
  if (!handler) return;
  if (document.hidden) { missed = state; return; }
  if (!busy) run(() => handler(state));
}
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && missed) { const state = missed; missed = null; onTick(state); }
});

function connectLive() {
  const source = new EventSource("/api/events");
  source.addEventListener("tick", (ev) => {
    liveBadge.textContent = "live";
    liveBadge.className = "live on";
    onTick(JSON.parse(ev.data));
  });
  source.addEventListener("error", () => {
    liveBadge.textContent = "reconnecting…";
    liveBadge.className = "live off";
  });
}

const section = { device: "devices", alert: "alerts" }[view] || view;
for (const link of document.querySelectorAll("nav a")) {
  if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
}
if (views[view]) run(() => views[view]());
connectLive();
