// Drives the web console in Debian's Chromium (headless, through playwright-core) and
// checks it against the admin API. Run by crates/strata-e2e/tests/console.rs with one
// argument: a JSON file naming the endpoint, the keys, the snapshots the test made and
// where to write the screenshot. Exits 0 only if every check passed.

import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const CHROMIUM = spec.chromium || "/usr/bin/chromium";

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

function sameSet(a, b, what) {
  const left = [...a].sort();
  const right = [...b].sort();
  check(JSON.stringify(left) === JSON.stringify(right), `${what}: page ${JSON.stringify(left)} vs expected ${JSON.stringify(right)}`);
}

// Poll `predicate` in the page: waitForFunction would evaluate a string, which the
// console's Content-Security-Policy (no 'unsafe-eval') rightly refuses.
async function waitFor(page, predicate, arg, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await page.evaluate(predicate, arg)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${predicate}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// The graph as the page drew it: nodes and edges from their data attributes.
async function graphOnPage(page) {
  return page.evaluate(() => ({
    nodes: [...document.querySelectorAll("#lineage-graph g.node")].map((g) => ({ id: g.dataset.snapshot, parent: g.dataset.parent || null })),
    edges: [...document.querySelectorAll("#lineage-graph g.edge")].map((g) => ({ child: g.dataset.snapshot, parent: g.dataset.parent, changed: g.dataset.changed })),
  }));
}

// The lineage as the API answers it, fetched with the page's session.
async function lineageFromApi(page, id) {
  return page.evaluate(async (snapshot) => {
    const response = await fetch(`/_strata/v1/snapshots/${snapshot}/lineage`, { headers: { "x-strata-console": "1" } });
    if (!response.ok) throw new Error(`lineage: HTTP ${response.status}`);
    return response.json();
  }, id);
}

async function checkLineage(page, expected, api) {
  const drawn = await graphOnPage(page);
  const nodeKey = (n) => `${n.id}<-${n.parent ?? ""}`;
  const edgeKey = (e) => `${e.parent}->${e.child}:${e.changed}`;
  sameSet(drawn.nodes.map(nodeKey), expected.map((n) => nodeKey({ id: n.id, parent: n.parent })), "nodes vs the snapshots made");
  sameSet(drawn.edges.map(edgeKey), expected.filter((n) => n.parent).map((n) => edgeKey({ parent: n.parent, child: n.id, changed: String(n.changed) })), "edges vs the blocks written");
  sameSet(drawn.nodes.map(nodeKey), api.nodes.map((n) => nodeKey({ id: n.snapshot.id, parent: n.snapshot.parent })), "nodes vs the API");
  sameSet(drawn.edges.map(edgeKey), api.nodes.filter((n) => n.snapshot.parent).map((n) => edgeKey({ parent: n.snapshot.parent, child: n.snapshot.id, changed: String(n.changed_blocks) })), "edges vs the API");
  // Readable: no two nodes overlap, and every label is inside the drawing.
  const boxes = await page.$$eval("#lineage-graph g.node rect", (rects) => rects.map((r) => {
    const b = r.getBoundingClientRect();
    return [b.left, b.top, b.right, b.bottom];
  }));
  for (let i = 0; i < boxes.length; i += 1) {
    for (let j = i + 1; j < boxes.length; j += 1) {
      const [a, b] = [boxes[i], boxes[j]];
      const overlap = a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
      check(!overlap, `nodes ${i} and ${j} overlap`);
    }
  }
}

const profile = mkdtempSync(join(tmpdir(), "strata-console-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
    viewport: { width: 1280, height: 760 },
  });
  const page = context.pages()[0] || await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => { if (message.type() === "error") problems.push(`console error: ${message.text()}`); });

  await page.goto(`${spec.endpoint}/console/`);
  await page.waitForSelector("#sign-in:not([hidden])");
  await page.fill("#access-key-id", spec.key);
  await page.fill("#secret-access-key", spec.secret);
  await page.click("#sign-in-button");
  await page.waitForSelector("#snapshots tbody tr");

  // The secret is nowhere the page keeps state, and the session cookie is HttpOnly.
  const kept = await page.evaluate(() => ({
    cookie: document.cookie,
    session: JSON.stringify({ ...sessionStorage }),
    local: JSON.stringify({ ...localStorage }),
    field: document.getElementById("secret-access-key").value,
  }));
  check(!kept.cookie.includes("strata_session"), "the session cookie is readable by script");
  for (const [where, value] of Object.entries(kept)) check(!value.includes(spec.secret), `the secret is kept in ${where}`);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "strata_session");
  check(session && session.httpOnly && session.sameSite === "Strict", `session cookie ${JSON.stringify(session)}`);

  // Paging: the first page is full and a next page exists (the test made more than 25).
  const firstPage = await page.$$eval("#snapshots tbody tr", (rows) => rows.length);
  check(firstPage === 25, `first page has ${firstPage} rows`);
  check(await page.$("#next-page"), "a next page link");

  // Find the snapshot by its tag.
  await page.fill("input[name=tag]", spec.tag);
  await page.click("#apply-filters");
  await waitFor(page, (id) => {
    const rows = [...document.querySelectorAll("#snapshots tbody tr")];
    return rows.length === 1 && rows[0].dataset.snapshot === id;
  }, spec.tagged);

  // Its lineage: the branched tree.
  await page.click(`#snapshots tr[data-snapshot="${spec.tagged}"] a.lineage-link`);
  await page.waitForSelector("#lineage-graph g.node");
  await checkLineage(page, spec.tree, await lineageFromApi(page, spec.tagged));
  await page.screenshot({ path: spec.screenshot, fullPage: true });

  // A snapshot's page, from a node of the graph.
  const branchChild = spec.tree.find((n) => n.parent && n.id !== spec.tagged);
  await page.click(`#lineage-graph g.node[data-snapshot="${branchChild.id}"]`);
  await page.waitForSelector("#snapshot-details");
  const changed = await page.textContent('#snapshot-details dd[data-field="Changed blocks vs parent"]');
  check(changed === String(branchChild.changed), `changed blocks on the snapshot page: ${changed}`);
  const chain = await page.$$eval("#parent-chain li", (items) => items.map((li) => li.textContent));
  check(chain[0] === branchChild.parent, `parent chain ${JSON.stringify(chain)}`);

  // The chain of 50: one row, every node and edge, scrollable sideways.
  await page.goto(`${spec.endpoint}/console/#/lineage/${spec.chainTip}`);
  await waitFor(page, (n) => document.querySelectorAll("#lineage-graph g.node").length === n, spec.chain.length);
  await checkLineage(page, spec.chain, await lineageFromApi(page, spec.chainTip));
  const scrolls = await page.$eval("#lineage", (panel) => panel.scrollWidth > panel.clientWidth);
  check(scrolls, "the 50-long chain scrolls sideways instead of shrinking");

  // Storage: figures with numbers, a growth line.
  await page.goto(`${spec.endpoint}/console/#/storage`);
  await page.waitForSelector("#storage-figures");
  for (const figure of ["logical", "physical", "completed", "dedup", "zero"]) {
    const text = await page.textContent(`#storage-figures dd[data-figure="${figure}"]`);
    check(/[1-9]/.test(text), `storage figure ${figure} shows a number: '${text}'`);
  }
  check(await page.$("#growth-chart polyline"), "a growth line");

  // Activity: the throughput is measured, the last GC and scrub shown.
  await page.goto(`${spec.endpoint}/console/#/activity`);
  await waitFor(page, () => document.getElementById("throughput")?.textContent.startsWith("in "));
  const runs = await page.$$eval("p.run", (ps) => ps.map((p) => p.textContent));
  check(runs.length === 2 && runs.every((r) => r.startsWith("ok")), `last runs ${JSON.stringify(runs)}`);

  // Sign out: the session ends, and the API no longer answers the page.
  await page.click("#sign-out");
  await page.waitForSelector("#sign-in:not([hidden])");
  const after = await page.evaluate(async () => (await fetch("/_strata/v1/snapshots", { headers: { "x-strata-console": "1" } })).status);
  check(after === 403, `after sign-out the API answers ${after}`);
  // (The 403 just provoked is the only console error expected.)
  const unexpected = problems.filter((p) => !p.includes("403"));
  check(unexpected.length === 0, unexpected.join("; "));
  console.log("console checks passed");
} catch (error) {
  console.error(error.stack || String(error));
  process.exitCode = 1;
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
