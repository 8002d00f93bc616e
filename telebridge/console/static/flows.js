// The Flows section: each flow with its `flows check` problems and an SVG drawing of its steps
// and routes (layers down from `start`, routes labelled), with the same steps and routes
// as a list for screen readers and anyone the drawing does not suit.

import { el } from "./api.js";

const NODE_H = 46;
const LAYER_GAP = 96; // room between layers for the edge labels
const NODE_GAP = 36;
const MARGIN = 24;

function textWidth(text, size) {
  return text.length * size * 0.6;
}

// Layers: a step goes one below the deepest step that leads to it, ignoring the routes that go
// back (found by a depth-first walk from start); steps start never reaches come after, in
// their own walk. Within a layer, steps sit under the steps that lead to them.
function layers(flow) {
  const nodes = new Map(flow.steps.map((s) => [s.id, { id: s.id, kind: s.kind || "step", step: s, layer: 0 }]));
  for (const step of flow.steps) {
    for (const edge of step.edges || []) {
      if (!nodes.has(edge.to)) nodes.set(edge.to, { id: edge.to, kind: "missing", step: null, layer: 0 });
    }
  }
  const out = (id) => [...new Set((nodes.get(id).step?.edges || []).map((e) => e.to))];
  const state = new Map(); // id -> "open" (on the walk's path) | "done"
  const forward = new Set();
  const order = [];
  const walk = (id, part) => {
    state.set(id, "open");
    // Children in reverse, so that the list (built from its end) keeps the routes' order.
    for (const to of out(id).reverse()) {
      if (!state.has(to)) walk(to, part);
      // Into an earlier walk's part: drawn, but no reason to move that part down.
      if (state.get(to) === "done" && !order.includes(to)) forward.add(`${id}\u0000${to}`);
    }
    state.set(id, "done");
    part.unshift(id); // reverse post-order: every forward route goes down this list
  };
  const roots = [...(nodes.has(flow.start) ? [flow.start] : []), ...nodes.keys()];
  for (const root of roots) {
    if (state.has(root)) continue;
    const part = [];
    walk(root, part);
    const base = order.length ? Math.max(...order.map((id) => nodes.get(id).layer)) + 1 : 0;
    for (const id of part) nodes.get(id).layer = base;
    for (const id of part) {
      for (const to of out(id)) {
        if (forward.has(`${id}\u0000${to}`)) nodes.get(to).layer = Math.max(nodes.get(to).layer, nodes.get(id).layer + 1);
      }
    }
    order.push(...part);
  }
  const rows = [];
  for (const id of order) {
    const node = nodes.get(id);
    (rows[node.layer] ||= []).push(node);
  }
  return { nodes, rows: rows.filter(Boolean), out };
}

// Edges between the same two steps are drawn once, their labels joined.
function edgesOf(flow) {
  const joined = new Map();
  for (const step of flow.steps) {
    for (const edge of step.edges || []) {
      const key = `${step.id}\u0000${edge.to}`;
      const entry = joined.get(key) || { from: step.id, to: edge.to, labels: [] };
      entry.labels.push(edge.label);
      joined.set(key, entry);
    }
  }
  return [...joined.values()];
}

// Sizes and positions; each row ordered by where the steps leading to it are (one pass down).
function place(rows, nodes, out, room) {
  const parents = new Map();
  for (const node of nodes.values()) {
    for (const to of out(node.id)) (parents.get(to) || parents.set(to, []).get(to)).push(node);
  }
  let width = 0;
  rows.forEach((row, i) => {
    for (const node of row) {
      node.w = Math.max(80, textWidth(node.id, 14), textWidth(node.kind, 12)) + 24;
      node.h = NODE_H;
    }
    row.width = row.reduce((sum, n) => sum + n.w, 0) + NODE_GAP * (row.length - 1);
    row.y = MARGIN + i * (NODE_H + LAYER_GAP) + NODE_H / 2;
    width = Math.max(width, row.width);
  });
  rows.forEach((row, i) => {
    if (i > 0) {
      const above = (n) => (parents.get(n.id) || []).filter((p) => p.layer < n.layer && p.x !== undefined);
      const centre = (n) => {
        const ps = above(n);
        return ps.length ? ps.reduce((sum, p) => sum + p.x, 0) / ps.length : Infinity;
      };
      row.sort((a, b) => centre(a) - centre(b));
    }
    let x = room.left + MARGIN + (width - row.width) / 2;
    for (const node of row) {
      node.x = x + node.w / 2;
      node.y = row.y;
      x += node.w + NODE_GAP;
    }
  });
  return {
    width: width + 2 * MARGIN + room.left + room.right,
    height: rows.length * (NODE_H + LAYER_GAP) - LAYER_GAP + 2 * MARGIN,
    left: room.left + MARGIN,
  };
}

function edgePath(a, b, nth, left) {
  if (a === b) {
    const x = a.x + a.w / 2;
    return { d: `M${x},${a.y - 10} C${x + 44},${a.y - 34} ${x + 44},${a.y + 34} ${x},${a.y + 10}`, lx: x + 40, ly: a.y };
  }
  if (b.layer === a.layer + 1) {
    const [x1, y1, x2, y2] = [a.x, a.y + a.h / 2, b.x, b.y - b.h / 2];
    const my = (y1 + y2) / 2;
    return { d: `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`, lx: (x1 + x2) / 2, ly: my };
  }
  if (b.layer > a.layer) {
    // Down past other layers: along the left, clear of the steps between.
    const xs = left - 12 - 14 * nth;
    const [x1, y1, x2, y2] = [a.x, a.y + a.h / 2, b.x, b.y - b.h / 2];
    const ya = y1 + LAYER_GAP / 2;
    const yb = y2 - LAYER_GAP / 2;
    const d = `M${x1},${y1} C${x1},${ya} ${xs},${y1} ${xs},${ya} L${xs},${yb} C${xs},${y2} ${x2},${yb} ${x2},${y2}`;
    return { d, lx: xs - 6, ly: (ya + yb) / 2, anchor: "end" };
  }
  // Back up to an earlier step: around the right of both.
  const x1 = a.x + a.w / 2;
  const x2 = b.x + b.w / 2;
  const bulge = Math.max(x1, x2) + 40 + 16 * nth;
  const d = `M${x1},${a.y} C${bulge},${a.y} ${bulge},${b.y} ${x2 + 2},${b.y}`;
  return { d, lx: bulge - 10, ly: (a.y + b.y) / 2 };
}

function drawing(flow, uid) {
  const { nodes, rows, out } = layers(flow);
  const edges = edgesOf(flow).map((e) => {
    const a = nodes.get(e.from);
    const b = nodes.get(e.to);
    const way = a === b ? "loop" : b.layer <= a.layer ? "back" : b.layer > a.layer + 1 ? "skip" : "down";
    return { ...e, a, b, way, label: e.labels.join(", ") };
  });
  const widest = (way) => Math.max(0, ...edges.filter((e) => e.way === way).map((e) => textWidth(e.label, 12)));
  const count = (way) => edges.filter((e) => e.way === way).length;
  const room = {
    // Left: the routes that go down past a layer, labelled beside their line.
    left: count("skip") ? widest("skip") + 18 + 14 * count("skip") : 0,
    // Right: the routes that go back up (or to their own step), labelled on their curve.
    right: count("back") + count("loop") ? 50 + 16 * count("back") + Math.max(widest("back"), widest("loop")) / 2 : 0,
  };
  const size = place(rows, nodes, out, room);
  const arrow = `arrow-${uid}`;
  const titleId = `flow-title-${uid}`;
  const steps = flow.steps.length;
  const svg = el("svg:svg", {
    class: "flow-diagram",
    "data-testid": `flow-diagram-${flow.name}`,
    viewBox: `0 0 ${size.width} ${size.height}`,
    width: size.width,
    height: size.height,
    role: "img",
    "aria-labelledby": titleId,
  });
  svg.append(
    el("svg:title", { id: titleId }, `Drawing of flow ${flow.name}: ${steps} step${steps === 1 ? "" : "s"}, starting at ${flow.start}. The list after it gives the same steps and routes.`),
    el(
      "svg:defs",
      {},
      el(
        "svg:marker",
        { id: arrow, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        el("svg:path", { d: "M0,0 L10,5 L0,10 z", class: "flow-arrow" }),
      ),
    ),
  );
  let back = 0;
  let long = 0;
  const labels = [];
  for (const edge of edges) {
    const nth = edge.way === "back" ? back++ : edge.way === "skip" ? long++ : 0;
    const path = edgePath(edge.a, edge.b, nth, size.left);
    svg.append(el("svg:path", { d: path.d, class: `flow-edge${edge.way === "back" ? " flow-edge-back" : ""}`, "marker-end": `url(#${arrow})` }));
    const anchor = path.anchor || "middle";
    labels.push(el("svg:text", { x: path.lx, y: path.ly, class: "flow-edge-label", "text-anchor": anchor, "dominant-baseline": "middle" }, edge.label));
  }
  for (const node of nodes.values()) {
    const start = node.id === flow.start;
    svg.append(
      el(
        "svg:g",
        { class: `flow-node kind-${node.kind.replace(/[^a-z0-9_-]/gi, "")}${start ? " flow-start" : ""}` },
        el("svg:title", {}, node.step?.text ? `${node.id}: ${node.step.text}` : node.id),
        el("svg:rect", { x: node.x - node.w / 2, y: node.y - node.h / 2, width: node.w, height: node.h, rx: 8 }),
        el("svg:text", { x: node.x, y: node.y - 6, class: "flow-node-id", "text-anchor": "middle" }, node.id),
        el("svg:text", { x: node.x, y: node.y + 13, class: "flow-node-kind", "text-anchor": "middle" }, start ? `${node.kind} · start` : node.kind),
      ),
    );
  }
  svg.append(...labels); // over the edges and nodes, so they stay readable
  return svg;
}

function stepList(flow) {
  return el(
    "ol",
    { class: "flow-steps" },
    flow.steps.map((step) =>
      el(
        "li",
        {},
        el("strong", {}, step.id),
        ` (${step.kind || "step"}${step.id === flow.start ? ", start" : ""})`,
        step.text ? `: “${step.text}”` : "",
        (step.edges || []).length
          ? el("ul", {}, step.edges.map((e) => el("li", {}, `${e.label} → ${e.to}`)))
          : el("span", {}, " – ends here."),
      ),
    ),
  );
}

function problemList(flow) {
  const problems = flow.problems || [];
  if (!problems.length) return el("p", { class: "ok" }, "flows check: no problems.");
  return el(
    "ul",
    { class: "problems", "aria-label": `Problems in flow ${flow.name}` },
    problems.map((p) =>
      el(
        "li",
        { class: `problem problem-${p.level}` },
        el("span", { class: "problem-level" }, p.level),
        p.line ? ` line ${p.line}` : "",
        p.step ? ` step ${p.step}` : "",
        `: ${p.message}`,
      ),
    ),
  );
}

export function renderFlows(container, flows) {
  container.replaceChildren(
    ...flows.map((flow, i) => {
      const headingId = `flow-${i}-name`;
      return el(
        "article",
        { class: "flow", "aria-labelledby": headingId, dataset: { flow: flow.name } },
        el("h3", { id: headingId }, flow.name),
        flow.description ? el("p", { class: "flow-description" }, flow.description) : null,
        flow.file ? el("p", { class: "muted flow-file" }, flow.file) : null,
        problemList(flow),
        flow.steps && flow.steps.length
          ? el("div", { class: "diagram-scroll", role: "region", "aria-label": `Drawing of flow ${flow.name}`, tabindex: 0 }, drawing(flow, i))
          : el("p", {}, "No steps to draw."),
        flow.steps && flow.steps.length
          ? el("details", { class: "flow-text" }, el("summary", {}, "Steps and routes as a list"), stepList(flow))
          : null,
      );
    }),
  );
}
