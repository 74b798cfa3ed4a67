// The Strata web console: one page, routed by the URL's hash, reading the admin API with
// the session cookie (HttpOnly: this script never sees it) and the x-strata-console
// header the server requires of cookie-authenticated requests.

import { signedHeaders } from "./sigv4.js";
import { drawLineage } from "./lineage.js";

const API = "/_strata/v1";
const PAGE = 25;
const $ = (id) => document.getElementById(id);
let throughputTimer = null;

class ApiError extends Error {
  constructor(status, type, message) {
    super(message || type || `HTTP ${status}`);
    this.status = status;
    this.type = type;
  }
}

async function api(path, { method = "GET" } = {}) {
  const response = await fetch(API + path, {
    method,
    credentials: "same-origin",
    headers: { "x-strata-console": "1" },
  });
  if (!response.ok) {
    let message = "";
    try { message = (await response.json()).Message || ""; } catch { /* not JSON */ }
    throw new ApiError(response.status, response.headers.get("x-amzn-ErrorType"), message);
  }
  return response.status === 204 ? null : response.json();
}

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

const time = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "—");
const tags = (s) => s.tags.map((t) => `${t.key}=${t.value}`).join(", ");

function showSignIn(message = "") {
  $("nav").hidden = true;
  $("view").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
}

function show(...children) {
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  const view = $("view");
  view.hidden = false;
  view.replaceChildren(...children);
}

async function signIn(event) {
  event.preventDefault();
  const accessKeyId = $("access-key-id").value.trim();
  const secretField = $("secret-access-key");
  try {
    const path = `${API}/session`;
    // The secret is read here, used to sign, and the field cleared: it is kept nowhere.
    const headers = await signedHeaders({ method: "POST", path, host: location.host, accessKeyId, secret: secretField.value });
    secretField.value = "";
    const response = await fetch(path, { method: "POST", headers, credentials: "same-origin" });
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try { message = (await response.json()).Message || message; } catch { /* not JSON */ }
      showSignIn(`Sign-in refused: ${message}`);
      return;
    }
    sessionStorage.setItem("strata-key", accessKeyId);
    if (!location.hash || location.hash === "#/") location.hash = "#/snapshots";
    else route();
  } catch (error) {
    secretField.value = "";
    showSignIn(`Sign-in failed: ${error.message}`);
  }
}

async function signOut() {
  try { await api("/session/end", { method: "POST" }); } catch { /* the cookie is gone anyway */ }
  sessionStorage.removeItem("strata-key");
  showSignIn("Signed out.");
}

function params() {
  const [, query = ""] = location.hash.split("?");
  return new URLSearchParams(query);
}

async function snapshotsView() {
  const p = params();
  const query = new URLSearchParams();
  for (const key of ["status", "tag", "description", "owner", "nextToken"]) {
    if (p.get(key)) query.set(key, p.get(key));
  }
  query.set("maxResults", String(PAGE));
  const list = await api(`/snapshots?${query}`);
  const form = h("form", { id: "filters", onsubmit: (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const key of ["status", "tag", "description", "owner"]) {
      const value = form.elements[key].value.trim();
      if (value) next.set(key, value);
    }
    location.hash = `#/snapshots?${next}`;
  } },
  h("label", {}, "Status ", h("select", { name: "status" },
    ["", "pending", "completed", "error"].map((s) => h("option", { value: s, selected: p.get("status") === s }, s || "any")))),
  h("label", {}, "Tag ", h("input", { name: "tag", placeholder: "key or key=value", value: p.get("tag") || "" })),
  h("label", {}, "Description ", h("input", { name: "description", value: p.get("description") || "" })),
  h("label", {}, "Owner ", h("input", { name: "owner", placeholder: "account (root)", value: p.get("owner") || "" })),
  h("button", { type: "submit", id: "apply-filters" }, "Filter"));
  const owner = p.get("owner") ? `?owner=${encodeURIComponent(p.get("owner"))}` : "";
  const rows = list.snapshots.map((s) => h("tr", { "data-snapshot": s.id },
    h("td", {}, h("a", { href: `#/snapshot/${s.id}${owner}`, class: "snapshot-link" }, s.id)),
    h("td", {}, s.status), h("td", {}, `${s.volume_size_gib} GiB`), h("td", {}, s.written_blocks),
    h("td", {}, s.parent || "—"), h("td", {}, tags(s)), h("td", {}, s.description || ""),
    h("td", {}, time(s.start_time_ms)),
    h("td", {}, h("a", { href: `#/lineage/${s.id}${owner}`, class: "lineage-link" }, "lineage"))));
  const pager = h("p", { class: "pager" });
  if (p.get("nextToken")) pager.append(h("a", { href: "#/snapshots", id: "first-page" }, "« first page"), " ");
  if (list.next_token) {
    const next = new URLSearchParams(p);
    next.set("nextToken", list.next_token);
    pager.append(h("a", { href: `#/snapshots?${next}`, id: "next-page" }, "next page »"));
  }
  show(h("h2", {}, "Snapshots"), form,
    h("table", { id: "snapshots" },
      h("thead", {}, h("tr", {}, ["Id", "Status", "Size", "Blocks written", "Parent", "Tags", "Description", "Started", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)),
    rows.length ? null : h("p", { class: "empty" }, "No snapshot matches."),
    pager);
}

async function snapshotView(id) {
  const owner = params().get("owner");
  const suffix = owner ? `?owner=${encodeURIComponent(owner)}` : "";
  const lineage = await api(`/snapshots/${encodeURIComponent(id)}/lineage${suffix}`);
  const byId = new Map(lineage.nodes.map((n) => [n.snapshot.id, n]));
  const node = byId.get(id);
  const s = node.snapshot;
  const chain = [];
  for (let at = s.parent; at; at = byId.get(at)?.snapshot.parent) chain.push(at);
  const dl = h("dl", { id: "snapshot-details" },
    ...[["Id", s.id], ["Status", s.status + (s.status_message ? ` (${s.status_message})` : "")],
      ["Size", `${s.volume_size_gib} GiB`], ["Blocks written", s.written_blocks],
      ["Changed blocks vs parent", node.changed_blocks ?? "—"], ["Tags", tags(s) || "—"],
      ["Description", s.description || "—"], ["Owner", s.owner], ["Encrypted", s.encrypted ? "yes" : "no"],
      ["Started", time(s.start_time_ms)], ["Completed", time(s.completion_time_ms)]]
      .flatMap(([k, v]) => [h("dt", {}, k), h("dd", { "data-field": k }, v)]));
  show(h("h2", {}, `Snapshot ${s.id}`), dl,
    h("h3", {}, "Parent chain"),
    chain.length ? h("ol", { id: "parent-chain" }, chain.map((p) => h("li", {}, h("a", { href: `#/snapshot/${p}${suffix}` }, p))))
      : h("p", {}, "None: the lineage's first snapshot."),
    h("p", {}, h("a", { href: `#/lineage/${s.id}${suffix}`, id: "open-lineage" }, `Lineage graph (${lineage.nodes.length} snapshots)`)));
}

async function lineageView(id) {
  const owner = params().get("owner");
  const suffix = owner ? `?owner=${encodeURIComponent(owner)}` : "";
  const lineage = await api(`/snapshots/${encodeURIComponent(id)}/lineage${suffix}`);
  const panel = h("div", { id: "lineage", class: "graph-panel" });
  show(h("h2", {}, `Lineage of ${lineage.root}`),
    h("p", {}, `${lineage.nodes.length} snapshots; edges are labelled with the blocks changed against the parent. Highlighted: ${lineage.snapshot}.`),
    panel);
  drawLineage(panel, lineage, (snapshot) => { location.hash = `#/snapshot/${snapshot}${suffix}`; });
}

function growthChart(points) {
  const SVG = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(SVG, "svg");
  const w = 640;
  const ht = 180;
  svg.setAttribute("viewBox", `0 0 ${w} ${ht}`);
  svg.setAttribute("id", "growth-chart");
  if (points.length === 0) return svg;
  const t0 = points[0].time_ms;
  const t1 = Math.max(points[points.length - 1].time_ms, t0 + 1);
  const max = Math.max(points[points.length - 1].written_bytes, 1);
  const xy = (p) => `${20 + ((p.time_ms - t0) / (t1 - t0)) * (w - 40)},${ht - 20 - (p.written_bytes / max) * (ht - 40)}`;
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map(xy).join(" "));
  line.setAttribute("class", "growth");
  const label = document.createElementNS(SVG, "text");
  label.setAttribute("x", "24");
  label.setAttribute("y", "16");
  label.textContent = `${bytes(max)} written over ${points.length} snapshots`;
  svg.append(line, label);
  return svg;
}

async function storageView() {
  const s = await api("/storage");
  const saved = s.logical_bytes > s.physical_bytes ? s.logical_bytes - s.physical_bytes : 0;
  const figures = [
    ["Completed snapshots", s.completed_snapshots, "completed"], ["Pending snapshots", s.pending_snapshots, "pending"],
    ["Logical bytes", bytes(s.logical_bytes), "logical"], ["Physical bytes", bytes(s.physical_bytes), "physical"],
    ["Chunks stored", s.chunks, "chunks"], ["Saved (logical − physical)", bytes(saved), "saved"],
    ["Dedup savings since start", `${bytes(s.dedup_saved_bytes)} (${s.blocks_deduplicated} of ${s.blocks_written} blocks)`, "dedup"],
    ["Zero savings since start", `${bytes(s.zero_saved_bytes)} (${s.zero_blocks} blocks)`, "zero"],
  ];
  show(h("h2", {}, "Storage"),
    h("dl", { id: "storage-figures" }, figures.flatMap(([k, v, id]) => [h("dt", {}, k), h("dd", { "data-figure": id }, v)])),
    h("h3", {}, "Growth over time"), growthChart(s.growth));
}

function runView(title, run, describe) {
  if (!run) return [h("h3", {}, title), h("p", {}, "None since the server started.")];
  return [h("h3", {}, title), h("p", { class: `run run-${run.result}` },
    `${run.result} at ${time(run.finished_ms)}`, run.summary ? ` — ${describe(run.summary)}` : "", run.error ? ` — ${run.error}` : "")];
}

async function activityView() {
  const first = await api("/activity");
  const rate = h("p", { id: "throughput" }, "Measuring…");
  show(h("h2", {}, "Activity"), h("h3", {}, "Throughput"), rate,
    ...runView("Last garbage collection", first.last_gc, (g) => `${g.chunks_deleted} chunks, ${bytes(g.bytes_freed)} freed; ${g.live_chunks} live chunks`),
    ...runView("Last scrub", first.last_scrub, (r) => `${r.chunks_checked} chunks (${bytes(r.bytes_checked)}) checked, ${r.chunk_findings.length + r.node_findings.length} findings`));
  let last = first;
  const tick = async () => {
    try {
      const now = await api("/activity");
      const seconds = Math.max((now.now_ms - last.now_ms) / 1000, 0.001);
      rate.textContent = `in ${bytes((now.bytes_in - last.bytes_in) / seconds)}/s, out ${bytes((now.bytes_out - last.bytes_out) / seconds)}/s, ` +
        `${((now.requests - last.requests) / seconds).toFixed(1)} requests/s, ${((now.blocks_written - last.blocks_written) / seconds).toFixed(1)} blocks/s`;
      last = now;
    } catch (error) { rate.textContent = `Unavailable: ${error.message}`; }
  };
  throughputTimer = setInterval(tick, 2000);
}

async function route() {
  if (throughputTimer) { clearInterval(throughputTimer); throughputTimer = null; }
  const [path] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  try {
    if (parts[0] === "snapshot" && parts[1]) await snapshotView(decodeURIComponent(parts[1]));
    else if (parts[0] === "lineage" && parts[1]) await lineageView(decodeURIComponent(parts[1]));
    else if (parts[0] === "storage") await storageView();
    else if (parts[0] === "activity") await activityView();
    else await snapshotsView();
  } catch (error) {
    // No cookie (MissingAuthenticationToken) or a session expired or ended: sign in again.
    const signedOut = error.type === "MissingAuthenticationTokenException" || /console session/.test(error.message);
    if (error.status === 403 && signedOut) showSignIn();
    else show(h("p", { class: "error", id: "error" }, `${error.type || "Error"}: ${error.message}`));
  }
}

window.addEventListener("hashchange", route);
$("sign-in-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
route();
