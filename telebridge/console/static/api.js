// What the console's pages share: JSON requests to /console/api (the session cookie goes with
// them; a refusal sends the page to the login form), a small DOM builder, and formatters.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function toLogin() {
  const next = location.pathname;
  location.assign(`/console/login?next=${encodeURIComponent(next)}`);
}

async function request(path, options) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    toLogin();
    throw new ApiError(401, "not logged in");
  }
  let body = null;
  if ((response.headers.get("content-type") || "").includes("application/json")) {
    body = await response.json();
  }
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : response.statusText;
    throw new ApiError(response.status, message || `HTTP ${response.status}`);
  }
  return body;
}

export function getJSON(path, params) {
  const query = params ? new URLSearchParams(params).toString() : "";
  return request(query ? `${path}?${query}` : path, { headers: { Accept: "application/json" } });
}

export function postJSON(path, body) {
  return request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body ?? {}),
  });
}

// el("td", {class: "num", dataset: {callId: "x"}}, "text", child): attributes, then children
// (strings become text nodes, never HTML).
export function el(tag, attrs, ...children) {
  const svg = tag.startsWith("svg:");
  const node = svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

export function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  const whole = Math.floor(seconds);
  const m = Math.floor(whole / 60);
  const s = String(whole % 60).padStart(2, "0");
  return `${m}:${s}`;
}

export function formatMs(ms) {
  return ms === null || ms === undefined ? "–" : `${Math.round(ms)} ms`;
}

export function formatTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

// Set a text without replacing its node, so a live region announces only real changes.
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}
