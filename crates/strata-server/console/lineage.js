// The lineage graph: an SVG tree laid out in layers by depth (left to right), one row per
// leaf, so a chain of 50 stays one readable row (the panel scrolls sideways) and each
// branch gets a row of its own. Every node and edge carries data-snapshot / data-parent
// (and edges data-changed) so tests and tools can read the graph back.

const SVG = "http://www.w3.org/2000/svg";
const COLUMN = 210;
const ROW = 74;
const NODE_W = 132;
const NODE_H = 44;
const MARGIN = 24;

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// Positions {id: {depth, row}}; parents before children in `nodes` is not assumed.
export function layout(nodes) {
  const ids = new Set(nodes.map((n) => n.snapshot.id));
  const children = new Map();
  const roots = [];
  for (const n of nodes) {
    const parent = n.snapshot.parent;
    if (parent && ids.has(parent)) {
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(n.snapshot.id);
    } else {
      roots.push(n.snapshot.id);
    }
  }
  const positions = new Map();
  let nextRow = 0;
  // Iterative depth-first walk: a chain of thousands must not overflow the stack.
  for (const root of roots) {
    const stack = [[root, 0]];
    while (stack.length) {
      const [id, depth] = stack.pop();
      const kids = children.get(id) || [];
      positions.set(id, { depth, row: kids.length ? null : nextRow });
      if (!kids.length) nextRow += 1;
      for (let i = kids.length - 1; i >= 0; i -= 1) stack.push([kids[i], depth + 1]);
    }
  }
  // A parent sits on its first child's row (computed children first: deepest first).
  const byDepth = [...positions.entries()].sort((a, b) => b[1].depth - a[1].depth);
  for (const [id, pos] of byDepth) {
    if (pos.row === null) pos.row = positions.get(children.get(id)[0]).row;
  }
  return { positions, rows: Math.max(nextRow, 1) };
}

export function drawLineage(container, lineage, onOpen) {
  const { positions, rows } = layout(lineage.nodes);
  const depth = Math.max(0, ...[...positions.values()].map((p) => p.depth));
  const width = MARGIN * 2 + depth * COLUMN + NODE_W;
  const height = MARGIN * 2 + (rows - 1) * ROW + NODE_H;
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "lineage-graph", role: "img" });
  svg.append(el("title", {}, `Lineage of ${lineage.root}: ${lineage.nodes.length} snapshots`));
  const at = (id) => {
    const p = positions.get(id);
    return { x: MARGIN + p.depth * COLUMN, y: MARGIN + p.row * ROW };
  };
  const edges = el("g", { class: "edges" });
  const nodesGroup = el("g", { class: "nodes" });
  for (const n of lineage.nodes) {
    const s = n.snapshot;
    if (s.parent && positions.has(s.parent)) {
      const from = at(s.parent);
      const to = at(s.id);
      const x1 = from.x + NODE_W;
      const y1 = from.y + NODE_H / 2;
      const x2 = to.x;
      const y2 = to.y + NODE_H / 2;
      const mid = (x1 + x2) / 2;
      const changed = n.changed_blocks === null ? "" : String(n.changed_blocks);
      const edge = el("g", { class: "edge", "data-snapshot": s.id, "data-parent": s.parent, "data-changed": changed });
      edge.append(el("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }));
      const label = changed === "" ? "? changed" : `${changed} changed`;
      edge.append(el("text", { x: mid, y: y2 - 6, "text-anchor": "middle", class: "edge-label" }, label));
      edges.append(edge);
    }
    const { x, y } = at(s.id);
    const node = el("g", {
      class: `node status-${s.status}${s.id === lineage.snapshot ? " current" : ""}`,
      "data-snapshot": s.id,
      "data-parent": s.parent || "",
      transform: `translate(${x},${y})`,
      tabindex: 0,
    });
    node.append(el("title", {}, `${s.id}${s.description ? ` — ${s.description}` : ""}`));
    node.append(el("rect", { width: NODE_W, height: NODE_H, rx: 6 }));
    node.append(el("text", { x: 8, y: 18, class: "node-id" }, s.id.length > 16 ? `…${s.id.slice(-14)}` : s.id));
    // The second line: tags first (what an operator searches by), else the description.
    const tag = s.tags.map((t) => `${t.key}=${t.value}`).join(" ") || s.description || s.status;
    node.append(el("text", { x: 8, y: 35, class: "node-tag" }, tag.length > 20 ? `${tag.slice(0, 19)}…` : tag));
    node.addEventListener("click", () => onOpen(s.id));
    node.addEventListener("keydown", (e) => { if (e.key === "Enter") onOpen(s.id); });
    nodesGroup.append(node);
  }
  svg.append(edges, nodesGroup);
  container.replaceChildren(svg);
  const current = positions.get(lineage.snapshot);
  if (current) container.scrollLeft = Math.max(0, MARGIN + current.depth * COLUMN - container.clientWidth / 2);
}
