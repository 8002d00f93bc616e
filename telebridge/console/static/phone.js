// The browser phone: POST /console/api/phone/calls, then the call's WebSocket
// (/console/phone/stream): PCM16 16 kHz from the bridge is scheduled back to back on the
// AudioContext's clock, marks are answered when the clock passes them, a clear drops what has
// not played; keys from the dial pad (or the keyboard) and the microphone go the other way.

import { el, getJSON, postJSON, setText } from "./api.js";

const RATE = 16000;
const START_LEAD = 0.06; // seconds of audio held before the first sample plays (jitter)
const $ = (id) => document.getElementById(id);

// What the bridge sent, as scheduled for playback: `parts` keeps every sample still heard.
class Player {
  constructor(ctx, onPlayed) {
    this.ctx = ctx;
    this.onPlayed = onPlayed;
    this.parts = [];
    this.pending = []; // {index, start, end, source}: not yet fully played
    this.marks = []; // {name, time}
    this.nextTime = 0;
    this.timer = setInterval(() => this.tick(), 10);
  }

  play(bytes) {
    const count = bytes.byteLength >> 1;
    if (!count) return;
    const samples = new Int16Array(bytes.slice(0, count * 2));
    const buffer = this.ctx.createBuffer(1, count, RATE);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < count; i++) channel[i] = samples[i] / 32768;
    const now = this.ctx.currentTime;
    const start = this.nextTime > now ? this.nextTime : now + START_LEAD;
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.ctx.destination);
    source.start(start);
    this.nextTime = start + count / RATE;
    this.pending.push({ index: this.parts.length, start, end: this.nextTime, source });
    this.parts.push(samples);
  }

  mark(name) {
    this.marks.push({ name, time: Math.max(this.nextTime, this.ctx.currentTime) });
    this.tick();
  }

  // Drop everything not yet played; a part playing now keeps the samples already played.
  clear() {
    const now = this.ctx.currentTime;
    for (const item of this.pending) {
      if (item.end <= now) continue;
      const played = item.start >= now ? 0 : Math.floor((now - item.start) * RATE);
      this.parts[item.index] = this.parts[item.index].subarray(0, played);
      item.source.stop();
    }
    this.pending = [];
    this.marks = []; // marks behind the dropped audio are never reached
    this.nextTime = now;
  }

  tick() {
    const now = this.ctx.currentTime;
    while (this.pending.length && this.pending[0].end <= now) this.pending.shift();
    while (this.marks.length && this.marks[0].time <= now) this.onPlayed(this.marks.shift().name);
  }

  heard() {
    const total = this.parts.reduce((n, p) => n + p.length, 0);
    const out = new Int16Array(total);
    let at = 0;
    for (const part of this.parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    this.ctx.close().catch(() => {});
  }
}

// The microphone through phone-worklet.js: 20 ms PCM16 frames handed to `send`.
class Microphone {
  constructor(ctx, send, onError) {
    this.ctx = ctx;
    this.send = send;
    this.onError = onError;
    this.stream = null;
    this.node = null;
    this.source = null;
    this.wanted = false;
    this.starting = false;
  }

  async start() {
    if (this.stream || this.starting) return;
    this.starting = true;
    try {
      const stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
      });
      if (!this.wanted) {
        stream.getTracks().forEach((t) => t.stop());
        return;
      }
      await this.ctx.audioWorklet.addModule("/console/static/phone-worklet.js");
      this.stream = stream;
      this.source = this.ctx.createMediaStreamSource(stream);
      this.node = new AudioWorkletNode(this.ctx, "telebridge-capture", { numberOfOutputs: 1, outputChannelCount: [1] });
      this.node.port.onmessage = (event) => this.send(event.data);
      this.source.connect(this.node);
      this.node.connect(this.ctx.destination); // pulled by the graph; its output is silence
    } catch (error) {
      this.onError(error);
    } finally {
      this.starting = false;
    }
  }

  stop() {
    this.stream?.getTracks().forEach((t) => t.stop());
    this.source?.disconnect();
    this.node?.disconnect();
    if (this.node) this.node.port.onmessage = null;
    this.stream = this.source = this.node = null;
  }
}

let call = null; // {ws, ctx, player, mic, callId, transferredTo}
let ringing = null; // {cancelled}: a call being placed, not yet connected
let lastPlayer = null;

function setState(state) {
  setText($("call-state"), state);
  const live = state === "ringing" || state === "in-call";
  $("call-button").disabled = live;
  $("hangup-button").disabled = !live;
  $("flow-select").disabled = live;
  for (const key of document.querySelectorAll(".dialpad button")) key.disabled = state !== "in-call";
}

function note(text) {
  setText($("phone-note"), text);
}

function sendJSON(message) {
  if (call && call.ws.readyState === WebSocket.OPEN) call.ws.send(JSON.stringify(message));
}

function onMessage(event) {
  if (!call) return;
  if (typeof event.data !== "string") {
    call.player.play(event.data);
    return;
  }
  let message;
  try {
    message = JSON.parse(event.data);
  } catch {
    return;
  }
  if (message.event === "mark") call.player.mark(String(message.name));
  else if (message.event === "clear") {
    call.player.clear();
    sendJSON({ event: "cleared" });
  } else if (message.event === "dtmf") note(`The bridge sent the tones ${message.digits}.`);
  else if (message.event === "transfer") {
    call.transferredTo = String(message.to);
    note(`Transferred to ${call.transferredTo}.`);
  }
}

function ended(reason) {
  if (!call) return;
  const { mic, player } = call;
  mic.wanted = false;
  mic.stop();
  // Let what was scheduled play out; heard() keeps answering from the last call.
  setTimeout(() => player.stop(), Math.max(0, (player.nextTime - player.ctx.currentTime) * 1000) + 200);
  call = null;
  setState("ended");
  if (reason) note(reason);
  $("call-button").focus();
}

async function placeCall() {
  const attempt = { cancelled: false };
  ringing = attempt;
  setState("ringing");
  note("");
  setText($("keys-sent"), "");
  lastPlayer?.stop();
  // Made on the click (before any await), so the browser lets it play.
  const ctx = new AudioContext({ sampleRate: RATE });
  await ctx.resume();
  let grant;
  try {
    const flow = $("flow-select").value;
    grant = await postJSON("/console/api/phone/calls", flow ? { flow } : {});
  } catch (error) {
    grant = null;
    if (!attempt.cancelled) {
      setState("ended");
      note(`The call was not placed: ${error.message}`);
    }
  }
  if (ringing === attempt) ringing = null;
  if (!grant || attempt.cancelled) {
    // Hung up while ringing: the bridge lets go of a call whose stream never opens.
    ctx.close().catch(() => {});
    return;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}${grant.stream}`);
  ws.binaryType = "arraybuffer";
  const player = new Player(ctx, (name) => sendJSON({ event: "played", name }));
  lastPlayer = player;
  const mic = new Microphone(ctx, (frame) => ws.readyState === WebSocket.OPEN && ws.send(frame), (error) =>
    note(`No microphone (${error.message || error.name}); the call goes on without it.`),
  );
  call = { ws, ctx, player, mic, callId: grant.call_id, transferredTo: null };
  ws.addEventListener("open", () => {
    ws.send(JSON.stringify({ event: "start", call_id: grant.call_id }));
    setState("in-call");
    note(`In a call on flow ${grant.flow || "(default)"}.`);
    if ($("use-mic").checked) {
      mic.wanted = true;
      mic.start();
    }
  });
  ws.addEventListener("message", onMessage);
  ws.addEventListener("close", (event) => {
    if (!call || call.ws !== ws) return;
    if (call.transferredTo) ended(`Transferred to ${call.transferredTo}: the call has left the bridge.`);
    else ended(event.code === 1000 ? "The call has ended." : `The call was cut off (${event.code}).`);
  });
}

function hangUp() {
  if (ringing) {
    ringing.cancelled = true;
    ringing = null;
    setState("ended");
    note("You hung up.");
    return;
  }
  if (!call) return;
  const { ws } = call;
  sendJSON({ event: "hangup" });
  ended("You hung up.");
  ws.close(1000);
}

function press(digit) {
  if (!call || $("call-state").textContent !== "in-call") return;
  sendJSON({ event: "dtmf", digit });
  const keys = $("keys-sent");
  setText(keys, keys.textContent + digit);
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || !/^[0-9*#]$/.test(event.key)) return;
  if (event.target.closest && event.target.closest("input, select, textarea")) return;
  const button = document.querySelector(`.dialpad button[data-digit="${CSS.escape(event.key)}"]`);
  if (!button || button.disabled) return;
  event.preventDefault();
  button.classList.add("pressed");
  setTimeout(() => button.classList.remove("pressed"), 150);
  press(event.key);
}

async function loadFlows() {
  try {
    const { flows } = await getJSON("/console/api/flows");
    const select = $("flow-select");
    for (const flow of flows) {
      const broken = (flow.problems || []).some((p) => p.level === "error");
      select.append(el("option", { value: flow.name }, broken ? `${flow.name} (has errors)` : flow.name));
    }
  } catch (error) {
    note(`Could not load the flows: ${error.message}`);
  }
}

function setUp() {
  $("call-button").addEventListener("click", placeCall);
  $("hangup-button").addEventListener("click", hangUp);
  for (const key of document.querySelectorAll(".dialpad button")) {
    key.addEventListener("click", () => press(key.dataset.digit));
  }
  document.addEventListener("keydown", onKey);
  $("use-mic").addEventListener("change", (event) => {
    if (!call || $("call-state").textContent !== "in-call") return;
    call.mic.wanted = event.target.checked;
    if (event.target.checked) call.mic.start();
    else call.mic.stop();
  });
  window.addEventListener("pagehide", hangUp);
  setState("idle");
  loadFlows();
}

window.telebridgePhone = {
  rate: RATE,
  heard: () => (lastPlayer ? lastPlayer.heard() : new Int16Array(0)),
};
setUp();
