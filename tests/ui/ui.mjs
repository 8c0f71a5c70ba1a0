// Drives logsift's web UI in Debian's Chromium with playwright-core, the way an engineer
// would during an incident. Started by tests/ui.rs against a real server it has seeded:
//
//   node tests/ui/ui.mjs <base-url> <screenshot-dir> <expected.json> <api-token>
//
// The server has tokens, so the page asks for one first (step 0) and every call carries it.
// Every step saves a screenshot; any failed expectation exits non-zero with what was seen.
import { chromium } from "playwright-core";
import { readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, shots, expectedFile, apiToken] = process.argv.slice(2);
const expected = JSON.parse(readFileSync(expectedFile, "utf8"));
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // As root in a sandboxed CI: no Chromium sandbox; no background connections (closed network).
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const errors = [];
let step = 0;

async function shot(page, name) {
  step += 1;
  await page.screenshot({ path: join(shots, `${String(step).padStart(2, "0")}-${name}.png`) });
}

function check(cond, what) {
  if (!cond) throw new Error("expectation failed: " + what);
}

async function summaryTotal(page) {
  const text = await page.locator("#summary").innerText();
  const m = /([\d,]+) matches/.exec(text);
  return m ? Number(m[1].replace(/,/g, "")) : null;
}

async function waitTotal(page, total, what) {
  await page.waitForFunction(
    (t) => {
      const m = /([\d,]+) matches/.exec(document.getElementById("summary").innerText);
      return m && Number(m[1].replace(/,/g, "")) === t;
    },
    total,
    { timeout: 10000 },
  ).catch(async () => {
    throw new Error(`${what}: expected ${total} matches, page says ${JSON.stringify(await page.locator("#summary").innerText())}`);
  });
}

async function search(page, q) {
  await page.fill("#q", q);
  await page.click("#go");
}

try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("pageerror", (e) => errors.push("page error: " + e.message));
  page.on("console", (m) => {
    // The broken query of step 3 is answered 400 and the calls before the token 401, on
    // purpose; the browser logs those.
    const expectedStatus = m.text().includes("status of 400") || m.text().includes("status of 401");
    if (m.type() === "error" && !expectedStatus) errors.push("console: " + m.text());
  });

  // 0. Without a token the page asks for one; typed in, it is used for this tab.
  await page.goto(`${base}/?range=all`);
  await page.waitForSelector("#auth:not([hidden])");
  check((await page.locator("#hits .hit").count()) === 0, "no hits without a token");
  await shot(page, "token");
  await page.fill("#token", apiToken);
  await page.click("#auth button");
  await waitTotal(page, expected.all, "all records once the token is given");
  check(await page.locator("#auth").isHidden(), "token form hidden once accepted");

  // 1. The page, all time: hits, a histogram, facets.
  await page.goto(`${base}/?range=all`);
  await waitTotal(page, expected.all, "all records");
  await page.waitForSelector("#histogram svg rect");
  check((await page.locator("#hits .hit").count()) === 100, "the first page holds 100 hits");
  await page.waitForSelector("#facets .facet[data-field=host]");
  check((await page.locator("#facets .facet[data-field=host]").count()) === 3, "three hosts in the side panel");
  await shot(page, "all");

  // 2. A query: the exact total, newest first, the word highlighted.
  await search(page, "timeout");
  await waitTotal(page, expected.timeout, "timeout");
  check((await page.locator("#hits .hit mark").first().innerText()).toLowerCase() === "timeout", "query word highlighted");
  const times = await page.locator("#hits .hit .t").allInnerTexts();
  check(times.join() === [...times].sort().reverse().join(), "hits newest first");
  await page.waitForSelector("#histogram svg rect");
  await shot(page, "query");

  // 3. A broken query: the error is shown where it is, with its column.
  await search(page, "timeout AND (host:web-01");
  await page.waitForSelector("#q-error:not([hidden])");
  const qerr = await page.locator("#q-error").innerText();
  check(/column \d+/.test(qerr) && qerr.includes("^"), "query error names its column: " + qerr);
  check(await page.locator("#q.invalid").count() === 1, "query bar marked invalid");
  await shot(page, "query-error");

  // 4. Scrolling loads the next pages (cursor pagination) until every match is there.
  await search(page, "");
  await waitTotal(page, expected.all, "back to all");
  for (let i = 0; i < 20 && (await page.locator("#hits .hit").count()) < expected.all; i++) {
    await page.locator("#more").scrollIntoViewIfNeeded();
    await page.waitForTimeout(150);
  }
  const loaded = await page.locator("#hits .hit").count();
  check(loaded === expected.all, `scrolling loaded every hit once (${loaded} of ${expected.all})`);
  const ids = await page.locator("#hits .hit").evaluateAll((rows) => rows.map((r) => r.dataset.id));
  check(new Set(ids).size === ids.length, "no hit twice");
  await page.evaluate(() => window.scrollTo(0, 0));

  // 5. Drag on the histogram to zoom: an absolute range in the URL, fewer matches.
  const box = await page.locator("#histogram").boundingBox();
  await page.mouse.move(box.x + box.width * 0.25, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(() => location.search.includes("start="));
  await page.waitForFunction((all) => {
    const m = /([\d,]+) matches/.exec(document.getElementById("summary").innerText);
    return m && Number(m[1].replace(/,/g, "")) < all;
  }, expected.all);
  check(await page.locator("#range").inputValue() === "abs", "the range became absolute");
  await shot(page, "zoomed");

  // 6. Click a host in the side panel: the query gains the filter, every hit is that host.
  await page.goto(`${base}/?range=all`);
  await waitTotal(page, expected.all, "all again");
  await page.locator("#facets .facet[data-field=host][data-value=web-01]").click();
  await waitTotal(page, expected.web01, "host facet");
  check((await page.inputValue("#q")).includes("host:web-01"), "facet filter in the query bar");
  const hosts = await page.locator("#hits .hit .h").allInnerTexts();
  check(hosts.length > 0 && hosts.every((h) => h === "web-01"), "every hit from web-01");
  await shot(page, "facet");

  // 7. Expand a line: every field and the raw bytes; exclude a value; then its context.
  await page.locator("#hits .hit .line").nth(3).click();
  await page.waitForSelector("#hits .details pre.raw");
  const raw = await page.locator("#hits .details pre.raw").innerText();
  check(raw.startsWith("{") && raw.includes("web-01"), "raw bytes shown: " + raw);
  await shot(page, "expanded");
  await page.locator("#hits .details .show-context").click();
  await page.waitForSelector("#context:not([hidden]) .hit.anchor");
  const around = await page.locator("#context-lines .hit .h").allInnerTexts();
  check(around.length >= 3 && around.every((h) => h === "web-01"), "context lines from the same host: " + around);
  await shot(page, "context");
  await page.click("#context-close");
  await page.locator("#hits .hit .line").first().click();
  await page.locator("#hits .hit").first().locator(".details tr", { hasText: "severity" })
    .locator("button[title='exclude this value']").click();
  await waitTotal(page, expected.web01_not_info, "excluding a severity");
  check((await page.inputValue("#q")).includes("-severity:info"), "exclusion in the query bar");

  // 8. The URL restores the page: paste it into a new tab.
  const url = page.url();
  const copy = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await copy.goto(url);
  // A new tab has its own sessionStorage: the token is asked for again.
  await copy.waitForSelector("#auth:not([hidden])");
  await copy.fill("#token", apiToken);
  await copy.click("#auth button");
  await waitTotal(copy, expected.web01_not_info, "the pasted URL");
  check((await copy.inputValue("#q")) === (await page.inputValue("#q")), "query restored from the URL");
  await shot(copy, "from-url");
  await copy.close();

  // 9. Export the current view: the records and their signed manifest download.
  const [download, manifestDownload] = await new Promise((resolve) => {
    const got = [];
    page.on("download", (d) => {
      got.push(d);
      if (got.length === 2) resolve(got);
    });
    page.selectOption("#export", "ndjson");
  });
  const exported = readFileSync(await download.path(), "utf8").trim().split("\n");
  check(exported.length === expected.web01_not_info, `export holds ${exported.length} records`);
  check(exported.every((l) => JSON.parse(l).host === "web-01"), "exported records match the query");
  const signed = JSON.parse(readFileSync(await manifestDownload.path(), "utf8"));
  check(signed.manifest.records === expected.web01_not_info && signed.signature.length === 128, "manifest downloaded");
  await shot(page, "exported");

  // 10. Live tail: a line ingested now appears on top within 2 s.
  const token = "tailtoken" + Date.now();
  await page.goto(`${base}/?range=15m&q=${token}`);
  await waitTotal(page, 0, "nothing matches the token yet");
  await page.check("#tail");
  await page.waitForTimeout(500); // the stream is open once the server has answered
  const sent = Date.now();
  const r = await fetch(`${base}/api/v1/logs/ingest`, {
    method: "POST",
    headers: { "content-type": "application/x-ndjson", authorization: `Bearer ${apiToken}` },
    body: JSON.stringify({ host: "web-09", level: "error", msg: `fresh line ${token}` }) + "\n",
  });
  check(r.status === 200, "ingest answered " + r.status);
  await page.waitForSelector(`#hits .hit.new:has-text("${token}")`, { timeout: 2000 });
  const waited = Date.now() - sent;
  check(waited <= 2000, `tail delivered within 2 s (${waited} ms)`);
  check((await page.locator("#hits .hit.new .sev").first().innerText()) === "error", "tail line coloured by severity");
  await shot(page, "tail");

  // 11. Save the current search under a name, then open it by name as a colleague would.
  await page.uncheck("#tail");
  await page.goto(`${base}/?range=all&q=host:web-01`);
  await waitTotal(page, expected.web01, "the search to save");
  page.once("dialog", (d) => d.accept("web01-all"));
  await page.click("#save");
  await page.waitForSelector("#saved option[value='web01-all']", { state: "attached" });
  await page.goto(`${base}/?saved=web01-all`);
  await waitTotal(page, expected.web01, "the saved search, opened by name");
  check((await page.inputValue("#q")) === "host:web-01", "saved query restored");
  await page.goto(`${base}/?range=all`);
  await waitTotal(page, expected.all + 1, "back to everything (and the tail's line)");
  await page.selectOption("#saved", "web01-all");
  await waitTotal(page, expected.web01, "the saved search, picked from the list");
  await shot(page, "saved");

  // 12. The alerts panel lists the rules and their state.
  await page.click("#show-alerts");
  await page.waitForSelector("#alerts:not([hidden]) .alert-rule");
  const rules = await page.locator("#alerts-body").innerText();
  check(rules.includes("ui_errors") && rules.includes("count > 0"), "alert rule listed: " + rules);
  await shot(page, "alerts");
  await page.click("#alerts-close");

  // 13. The Patterns view: the matches grouped by pattern, most frequent first, with their
  // counts over the range; a pattern opens its lines.
  await page.goto(`${base}/?range=all`);
  await waitTotal(page, expected.all + 1, "all, for patterns");
  await page.click("#view-patterns");
  await page.waitForSelector("#patterns .pattern");
  check(page.url().includes("view=patterns"), "the view is in the URL");
  check(await page.locator("#hits").isHidden(), "lines hidden in the patterns view");
  const counts = (await page.locator("#patterns .pattern").evaluateAll((rows) => rows.map((r) => Number(r.dataset.count))));
  check(counts.reduce((a, b) => a + b, 0) === expected.all + 1, `pattern counts add up to every match: ${counts}`);
  check(counts.join() === [...counts].sort((a, b) => b - a).join(), "most frequent first");
  check((await page.locator("#patterns .pattern svg rect").count()) > 0, "each pattern has its counts over time");
  const tpl = await page.locator("#patterns .pattern .tpl").allInnerTexts();
  check(tpl.some((t) => t.includes("<*>")), "templates show their variable parts: " + tpl);
  await shot(page, "patterns");
  const firstId = await page.locator("#patterns .pattern").first().getAttribute("data-id");
  await page.locator("#patterns .pattern").first().click();
  await waitTotal(page, counts[0], "one pattern's lines");
  check((await page.inputValue("#q")).includes(`pattern:${firstId}`), "pattern filter in the query bar");
  check(await page.locator("#patterns").isHidden(), "back to the lines");

  // 14. What changed? over the last 15 minutes: the new error on web-02 comes first; a click
  // shows its lines.
  await page.goto(`${base}/?range=15m`);
  await page.waitForSelector("#hits .hit");
  await page.click("#what-changed");
  await page.waitForSelector("#changes:not([hidden]) .change");
  const first = page.locator("#changes-body .change").first();
  const firstText = await first.innerText();
  check(firstText.includes("I/O error on") && (await first.getAttribute("data-kind")) === "new", "the new error first: " + firstText);
  const body = await page.locator("#changes-body").innerText();
  check(/host[^]*web-02/i.test(body) && /severity[^]*error/i.test(body), "its host and severity stand out: " + body);
  await shot(page, "what-changed");
  await first.click();
  await waitTotal(page, expected.incident, "the new error's lines");
  check(await page.locator("#changes").isHidden(), "the panel closes");

  check(errors.length === 0, "no errors in the page: " + errors.join("; "));
  console.log(`ui: ${step} steps passed; screenshots in ${shots}`);
} catch (e) {
  console.error(e.message);
  if (errors.length) console.error(errors.join("\n"));
  await browser.close();
  process.exit(1);
}
await browser.close();
