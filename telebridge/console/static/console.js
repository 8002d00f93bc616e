// The console page: live calls from the event stream (with Hang up and Say), the call history
// with its filters and one call's timeline, and the flows (drawn by flows.js).

import { ApiError, el, formatMs, formatSeconds, formatTime, getJSON, postJSON, setText, toLogin } from "./api.js";
import { renderFlows } from "./flows.js";

const $ = (id) => document.getElementById(id);

// --- live calls -------------------------------------------------------------------------

const LIVE_CELLS = [
  ["carrier", (c) => c.carrier || "–"],
  ["from", (c) => c.from || "–"],
  ["to", (c) => c.to || "–"],
  ["flow", (c) => c.flow || "–"],
  ["step", (c) => c.step || "–"],
  ["seconds", (c) => formatSeconds(c.seconds)],
  ["first_audio_ms", (c) => formatMs(c.first_audio_ms)],
  ["barge_ins", (c) => String(c.barge_ins ?? 0)],
];
const liveRows = new Map(); // call_id -> <tr>, kept so focus stays on a row's buttons

function liveRow(call) {
  const cells = LIVE_CELLS.map(([name]) => el("td", { class: `cell-${name}` }));
  const who = `${call.from || "unknown"} to ${call.to || "unknown"}`;
  const hangup = el("button", { type: "button", class: "danger", "aria-label": `Hang up the call from ${who}` }, "Hang up");
  const say = el("button", { type: "button", "aria-label": `Say something in the call from ${who}` }, "Say");
  hangup.addEventListener("click", () => hangUp(call.call_id, hangup));
  say.addEventListener("click", () => openSay(call));
  return el("tr", { dataset: { callId: call.call_id } }, cells, el("td", { class: "row-actions" }, hangup, say));
}

function renderLive(calls) {
  const body = $("live-rows");
  const seen = new Set();
  let ended = false;
  for (const call of calls) {
    seen.add(call.call_id);
    let row = liveRows.get(call.call_id);
    if (!row) {
      row = liveRow(call);
      liveRows.set(call.call_id, row);
    }
    if (body.children[seen.size - 1] !== row) body.insertBefore(row, body.children[seen.size - 1] || null);
    LIVE_CELLS.forEach(([, show], i) => setText(row.cells[i], show(call)));
  }
  for (const [id, row] of liveRows) {
    if (!seen.has(id)) {
      if (row.contains(document.activeElement)) $("live-title").focus();
      row.remove();
      liveRows.delete(id);
      ended = true;
    }
  }
  $("live-empty").hidden = calls.length > 0;
  const count = calls.length === 1 ? "1 live call" : `${calls.length} live calls`;
  setText($("live-status"), count);
  if (ended) refreshHistorySoon();
}

function watchLive() {
  const source = new EventSource("/console/api/events", { withCredentials: true });
  source.addEventListener("calls", (event) => renderLive(JSON.parse(event.data).calls || []));
  source.addEventListener("error", async () => {
    setText($("live-status"), "Connection lost; reconnecting…");
    if (source.readyState === EventSource.CLOSED) {
      // The stream was refused (not reconnecting by itself): find out why, then try again.
      try {
        await getJSON("/console/api/live");
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) return toLogin();
      }
      setTimeout(watchLive, 3000);
    }
  });
}

async function hangUp(callId, button) {
  button.disabled = true;
  try {
    await postJSON(`/console/api/calls/${encodeURIComponent(callId)}/hangup`, { reason: "console" });
    setText($("live-status"), "Hanging up…");
  } catch (error) {
    button.disabled = false;
    setText($("live-status"), `Could not hang up: ${error.message}`);
  }
}

let sayCall = null;
let sayOpener = null;

function openSay(call) {
  sayCall = call;
  sayOpener = document.activeElement;
  setText($("say-call"), `Call from ${call.from || "unknown"} to ${call.to || "unknown"} (${call.call_id})`);
  setText($("say-error"), "");
  $("say-text").value = "";
  $("say-dialog").showModal();
  $("say-text").focus();
}

function setUpSay() {
  const dialog = $("say-dialog");
  $("say-cancel").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => sayOpener?.isConnected && sayOpener.focus());
  $("say-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("say-text").value.trim();
    if (!text || !sayCall) return;
    try {
      await postJSON(`/console/api/calls/${encodeURIComponent(sayCall.call_id)}/say`, {
        text,
        interrupt: $("say-interrupt").checked,
      });
      dialog.close();
      setText($("live-status"), "Sent to the call.");
    } catch (error) {
      setText($("say-error"), `Not sent: ${error.message}`);
    }
  });
}

// --- history and timeline -----------------------------------------------------------------

function historyParams() {
  const params = {};
  for (const name of ["carrier", "flow", "outcome"]) {
    const value = $(`filter-${name}`).value.trim();
    if (value) params[name] = value;
  }
  for (const name of ["since", "until"]) {
    const value = $(`filter-${name}`).value;
    // datetime-local is the viewer's local time; the API takes UTC.
    if (value) params[name] = new Date(value).toISOString().replace(".000Z", "Z");
  }
  return params;
}

function historyRow(call) {
  const open = el("button", { type: "button", class: "link", "aria-label": `Timeline of call ${call.call_id}` }, call.call_id);
  open.addEventListener("click", () => showTimeline(call.carrier, call.call_id));
  return el(
    "tr",
    { dataset: { callId: call.call_id, carrier: call.carrier } },
    el("td", { class: "cell-id" }, open),
    el("td", {}, formatTime(call.started_at)),
    el("td", {}, call.carrier || "–"),
    el("td", {}, call.from || "–"),
    el("td", {}, call.to || "–"),
    el("td", {}, call.flow || "–"),
    el("td", {}, call.outcome || "–"),
    el("td", {}, call.duration === null || call.duration === undefined ? "–" : `${call.duration} s`),
    el("td", { class: "cell-steps" }, (call.steps || []).join(" → ") || "–"),
  );
}

async function loadHistory() {
  const status = $("history-status");
  try {
    const { calls } = await getJSON("/console/api/history", historyParams());
    $("history-rows").replaceChildren(...calls.map(historyRow));
    setText(status, calls.length === 1 ? "1 call." : `${calls.length} calls.`);
  } catch (error) {
    setText(status, `Could not load the history: ${error.message}`);
  }
}

let historyTimer = 0;
function refreshHistorySoon() {
  clearTimeout(historyTimer);
  // The call log's writer commits shortly after a call ends.
  historyTimer = setTimeout(loadHistory, 700);
}

function eventDetails(entry) {
  const skip = new Set(["at", "kind", "step", "utterance"]);
  if (entry.kind === "note") skip.add("note");
  const parts = [];
  if (entry.kind === "prompt") {
    if (entry.text) parts.push(`“${entry.text}”`);
    if (entry.ttfb_ms !== undefined && entry.ttfb_ms !== null) parts.push(`Waves first byte ${formatMs(entry.ttfb_ms)}`);
    skip.add("text").add("ttfb_ms");
  }
  for (const [name, value] of Object.entries(entry)) {
    if (skip.has(name) || value === null || value === undefined || value === "") continue;
    parts.push(`${name}: ${typeof value === "object" ? JSON.stringify(value) : value}`);
  }
  return parts.join(" · ");
}

function offset(at, start) {
  const t = Date.parse(at);
  if (Number.isNaN(t) || Number.isNaN(start)) return at || "";
  return `+${((t - start) / 1000).toFixed(2)} s`;
}

async function showTimeline(carrier, callId) {
  const panel = $("timeline");
  try {
    const { call, timeline } = await getJSON(`/console/api/calls/${encodeURIComponent(carrier)}/${encodeURIComponent(callId)}`);
    const start = Date.parse(call.started_at || (timeline[0] && timeline[0].at));
    setText($("timeline-title"), `Timeline of call ${call.call_id}`);
    const facts = [
      ["Carrier", call.carrier], ["From", call.from], ["To", call.to], ["Flow", call.flow],
      ["Started", formatTime(call.started_at)], ["Outcome", call.outcome], ["Hangup cause", call.hangup_cause],
      ["Keys", call.digits],
    ];
    $("timeline-summary").replaceChildren(
      ...facts.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]),
    );
    $("timeline-events").replaceChildren(
      ...timeline.map((entry) =>
        el(
          "li",
          { class: "event", dataset: { kind: entry.kind } },
          el("span", { class: "event-at" }, offset(entry.at, start)),
          el("span", { class: "event-kind" }, entry.kind === "note" && entry.note ? String(entry.note) : entry.kind),
          el(
            "span",
            { class: "event-body" },
            entry.step ? el("span", { class: "event-where" }, entry.step) : null,
            el("span", { class: "event-details" }, eventDetails(entry)),
          ),
        ),
      ),
    );
    panel.hidden = false;
    $("timeline-title").focus();
  } catch (error) {
    setText($("history-status"), `Could not load that call: ${error.message}`);
  }
}

function setUpHistory() {
  const form = $("history-filters");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    loadHistory();
  });
  form.addEventListener("reset", () => setTimeout(loadHistory));
  $("timeline-close").addEventListener("click", () => {
    $("timeline").hidden = true;
    $("history-title").focus();
  });
}

// --- flows ----------------------------------------------------------------------------------

async function loadFlows() {
  try {
    const { flows } = await getJSON("/console/api/flows");
    renderFlows($("flow-list"), flows);
    $("flow-names").replaceChildren(...flows.map((f) => el("option", { value: f.name })));
    const bad = flows.filter((f) => (f.problems || []).some((p) => p.level === "error")).length;
    setText($("flows-status"), `${flows.length} flows${bad ? `, ${bad} with errors` : ""}.`);
  } catch (error) {
    setText($("flows-status"), `Could not load the flows: ${error.message}`);
  }
}

for (const id of ["live-title", "history-title", "flows-title"]) $(id).setAttribute("tabindex", "-1");
setUpSay();
setUpHistory();
watchLive();
loadHistory();
loadFlows();
