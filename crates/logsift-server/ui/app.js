// logsift's search page. No framework and no build step: the server embeds this file.
// Log lines are hostile input: everything from the API reaches the page through textContent,
// never innerHTML.
"use strict";

// Severity names as the API gives them, most severe first (the histogram stacks them so).
const SEVERITIES = ["emerg", "alert", "crit", "error", "warning", "notice", "info", "debug", "none"];
const PAGE = 100;
const RANGES = { "15m": 15 * 60e3, "1h": 3600e3, "24h": 24 * 3600e3, "7d": 7 * 24 * 3600e3 };
const TAIL_KEEP = 2000;

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
};

const state = {
  q: "",
  index: "", // comma-separated; empty: every index the token may read
  range: "15m",
  start: null, // ms, absolute ranges only
  end: null,
  cursor: null,
  loading: false,
  generation: 0, // bumps on every new search, so late answers of an old one are ignored
  tail: null,
  view: "lines", // or "patterns": the matches grouped by log pattern
};
const PATTERNS_SHOWN = 50;

// ---- URL state: the whole page can be pasted into an incident channel ----

function readUrl() {
  const p = new URLSearchParams(location.search);
  state.q = p.get("q") || "";
  state.index = p.get("index") || "";
  const start = p.get("start");
  const end = p.get("end");
  if (start && end && !isNaN(Date.parse(start)) && !isNaN(Date.parse(end))) {
    state.range = "abs";
    state.start = Date.parse(start);
    state.end = Date.parse(end);
  } else {
    const r = p.get("range");
    state.range = r && (r in RANGES || r === "all") ? r : "15m";
  }
  $("tail").checked = p.get("tail") === "1";
  state.view = p.get("view") === "patterns" ? "patterns" : "lines";
}

function writeUrl() {
  const p = new URLSearchParams();
  if (state.q) p.set("q", state.q);
  if (state.index) p.set("index", state.index);
  if (state.range === "abs") {
    p.set("start", new Date(state.start).toISOString());
    p.set("end", new Date(state.end).toISOString());
  } else {
    p.set("range", state.range);
  }
  if ($("tail").checked) p.set("tail", "1");
  if (state.view === "patterns") p.set("view", "patterns");
  history.replaceState(null, "", "?" + p.toString());
}

// The indexes of the current search, as API parameters.
const scope = () => (state.index ? { index: state.index } : {});

// The time window of the current search, as API parameters.
function window_() {
  if (state.range === "abs") {
    return { start: new Date(state.start).toISOString(), end: new Date(state.end).toISOString() };
  }
  if (state.range === "all") return {};
  const now = Date.now();
  return { start: new Date(now - RANGES[state.range]).toISOString(), end: new Date(now + 1000).toISOString() };
}

function syncForm() {
  $("q").value = state.q;
  $("view-lines").classList.toggle("on", state.view === "lines");
  $("view-patterns").classList.toggle("on", state.view === "patterns");
  $("view-lines").setAttribute("aria-selected", String(state.view === "lines"));
  $("view-patterns").setAttribute("aria-selected", String(state.view === "patterns"));
  $("range").value = state.range;
  $("abs").hidden = state.range !== "abs";
  if (state.range === "abs") {
    $("start").value = toLocalInput(state.start);
    $("end").value = toLocalInput(state.end);
  }
}

const toLocalInput = (ms) => new Date(ms).toISOString().slice(0, 19);
const fromLocalInput = (v) => Date.parse(v.length === 16 ? v + ":00Z" : v + "Z");

// ---- API token: typed in once per tab, kept in sessionStorage (gone with the tab, never
// in the URL), sent as Bearer on every call ----

const TOKEN_KEY = "logsift-token";

function authHeaders() {
  const t = sessionStorage.getItem(TOKEN_KEY);
  return t ? { Authorization: "Bearer " + t } : {};
}

function askForToken(message) {
  $("auth").hidden = false;
  $("auth-msg").textContent = message;
  $("token").focus();
}

// ---- API ----

async function api(path, params) {
  const u = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") u.searchParams.set(k, v);
  }
  const r = await fetch(u, { headers: authHeaders() });
  if (r.status === 401) askForToken("This server needs an API token (a search token will do).");
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = new Error((body.error && body.error.message) || r.statusText);
    err.code = body.error && body.error.code;
    err.status = r.status;
    throw err;
  }
  return body;
}

// ---- query errors, shown where they are ----

function showQueryError(err) {
  const box = $("q-error");
  const m = /at column (\d+)/.exec(err.message);
  $("q").classList.add("invalid");
  box.hidden = false;
  if (m) {
    const col = Number(m[1]);
    box.textContent = state.q + "\n" + " ".repeat(Math.max(0, col - 1)) + "^ " + err.message;
    const input = $("q");
    input.focus();
    input.setSelectionRange(col - 1, col - 1);
  } else {
    box.textContent = err.message;
  }
}

function clearQueryError() {
  $("q").classList.remove("invalid");
  $("q-error").hidden = true;
  $("q-error").textContent = "";
}

// ---- words to highlight: the query's free words and phrases, not field filters ----

function highlightTerms(q) {
  const out = [];
  const re = /(-?)(?:([\w.@]+):)?("([^"]*)"|[^\s()"]+)/g;
  let m;
  while ((m = re.exec(q))) {
    if (m[1] === "-" || m[2]) continue;
    const word = m[4] !== undefined ? m[4] : m[3];
    if (/^(AND|OR|NOT)$/.test(word) || word === "*") continue;
    const clean = word.replace(/\*$/, "");
    if (clean) out.push(clean.toLowerCase());
  }
  return out;
}

function highlighted(text, terms) {
  const frag = document.createDocumentFragment();
  if (!terms.length) {
    frag.append(text);
    return frag;
  }
  const lower = text.toLowerCase();
  let i = 0;
  while (i < text.length) {
    let best = -1;
    let len = 0;
    for (const t of terms) {
      const at = lower.indexOf(t, i);
      if (at !== -1 && (best === -1 || at < best)) {
        best = at;
        len = t.length;
      }
    }
    if (best === -1) break;
    frag.append(text.slice(i, best));
    frag.append(el("mark", null, text.slice(best, best + len)));
    i = best + len;
  }
  frag.append(text.slice(i));
  return frag;
}

// ---- filters: click a value to add it to the query, or to exclude it ----

function quoteValue(v) {
  return /^[\w.\-@/]+$/.test(v) ? v : '"' + String(v).replace(/["\\]/g, "\\$&") + '"';
}

function addFilter(field, value, exclude) {
  const clause = (exclude ? "-" : "") + field + ":" + quoteValue(value);
  state.q = state.q.trim() ? state.q.trim() + " " + clause : clause;
  syncForm();
  runSearch();
}

// ---- rendering hits ----

function fmtTime(ts) {
  // 2024-05-01T12:00:00.123456789Z → 2024-05-01 12:00:00.123
  return ts ? ts.replace("T", " ").replace(/(\.\d{3})\d*Z$/, "$1").replace(/Z$/, "") : "";
}

function hitRow(hit, terms, opts = {}) {
  const row = el("div", "hit");
  row.setAttribute("role", "listitem");
  row.dataset.id = hit.id;
  const line = el("div", "line");
  const sev = hit.severity || "none";
  line.append(
    el("span", "t", fmtTime(hit.timestamp)),
    el("span", "sev sev-" + sev, hit.severity || "-"),
    el("span", "h", hit.host || "-"),
    el("span", "a", hit.app || "-"),
  );
  const msg = el("span", "m");
  msg.append(highlighted(hit.message || "", terms));
  line.append(msg);
  row.append(line);
  if (!opts.plain) line.addEventListener("click", () => toggleDetails(row, hit));
  return row;
}

function toggleDetails(row, hit) {
  const open = row.querySelector(".details");
  if (open) {
    open.remove();
    return;
  }
  const d = el("div", "details");
  const table = el("table");
  const fields = [
    ["timestamp", hit.timestamp], ["received_at", hit.received_at], ["index", hit.index],
    ["severity", hit.severity], ["facility", hit.facility], ["host", hit.host], ["app", hit.app],
    ["procid", hit.procid], ["msgid", hit.msgid], ["source", hit.source], ["id", hit.id],
  ];
  if (hit.pattern_id) fields.push(["pattern", hit.pattern_id]);
  for (const [k, v] of Object.entries(hit.fields || {})) {
    fields.push(["fields." + k, typeof v === "object" ? JSON.stringify(v) : v]);
  }
  const filterable = new Set(["severity", "facility", "host", "app", "procid", "msgid", "pattern"]);
  for (const [k, v] of fields) {
    if (v === null || v === undefined || v === "") continue;
    const tr = el("tr");
    tr.append(el("td", "k", k));
    const td = el("td");
    const val = el("span", "val", k === "pattern" ? `[${v}] ${hit.pattern || ""}` : v);
    td.append(val);
    if (filterable.has(k) || k.startsWith("fields.")) {
      val.title = "filter on this value";
      val.addEventListener("click", () => addFilter(k, v, false));
      const plus = el("button", "act", "+");
      plus.type = "button";
      plus.title = "only this value";
      plus.addEventListener("click", () => addFilter(k, v, false));
      const minus = el("button", "act", "−");
      minus.type = "button";
      minus.title = "exclude this value";
      minus.addEventListener("click", () => addFilter(k, v, true));
      td.append(plus, minus);
    }
    tr.append(td);
    table.append(tr);
  }
  d.append(table);
  const ctx = el("button", "act show-context", "Show context");
  ctx.type = "button";
  ctx.addEventListener("click", () => showContext(hit));
  d.append(ctx);
  d.append(el("pre", "raw", hit.raw));
  row.append(d);
}

// ---- search, pages loaded as you scroll ----

async function runSearch() {
  state.q = $("q").value.trim();
  if (state.range === "abs") {
    const s = fromLocalInput($("start").value);
    const e = fromLocalInput($("end").value);
    if (!isNaN(s) && !isNaN(e) && s < e) {
      state.start = s;
      state.end = e;
    }
  }
  writeUrl();
  clearQueryError();
  const gen = ++state.generation;
  state.cursor = null;
  $("hits").textContent = "";
  $("patterns").textContent = "";
  $("more").textContent = "searching…";
  $("summary").textContent = "";
  const win = window_();
  stopTail();
  const patterns = state.view === "patterns";
  $("patterns").hidden = !patterns;
  $("hits").hidden = patterns;
  $("more").hidden = patterns;
  if (patterns) {
    loadPatterns(gen, win);
    loadHistogram(gen, win);
    loadFacets(gen, win);
    return;
  }
  try {
    const page = await api("/api/v1/search", { q: state.q, ...scope(), limit: PAGE, ...win });
    if (gen !== state.generation) return;
    renderSummary(page);
    appendHits(page);
  } catch (err) {
    if (gen !== state.generation) return;
    $("more").textContent = "";
    if (err.code === "bad_query") showQueryError(err);
    else $("summary").textContent = "search failed: " + err.message;
    return;
  }
  loadHistogram(gen, win);
  loadFacets(gen, win);
  if ($("tail").checked) startTail();
}

function renderSummary(page) {
  const s = $("summary");
  s.textContent = "";
  s.append(`${Number(page.total).toLocaleString("en")} matches · ${page.took_ms} ms`);
  if (page.partial) {
    s.append(" · ");
    s.append(el("span", "partial", "partial answer (time limit): not every segment was searched"));
  }
}

function appendHits(page) {
  const terms = highlightTerms(state.q);
  const box = $("hits");
  for (const hit of page.hits) box.append(hitRow(hit, terms));
  state.cursor = page.next_cursor || null;
  $("more").textContent = state.cursor ? "scroll for more" : box.children.length ? "end of results" : "no matches";
}

async function loadMore() {
  if (!state.cursor || state.loading) return;
  state.loading = true;
  const gen = state.generation;
  $("more").textContent = "loading…";
  try {
    const page = await api("/api/v1/search", { q: state.q, ...scope(), limit: PAGE, cursor: state.cursor, ...window_() });
    if (gen === state.generation) appendHits(page);
  } catch (err) {
    $("more").textContent = "loading more failed: " + err.message;
  } finally {
    state.loading = false;
  }
}

// ---- patterns: the matches grouped by log pattern, each with its counts over the range ----

function setView(view) {
  if (state.view === view) return;
  state.view = view;
  syncForm();
  runSearch();
}

// `pattern:<id>` added to the query, back to the lines.
function filterPattern(id) {
  state.view = "lines";
  addFilter("pattern", String(id), false);
}

function sparkline(counts) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const W = 160;
  const H = 22;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1, ...counts);
  const bw = W / Math.max(1, counts.length);
  counts.forEach((n, i) => {
    if (!n) return;
    const h = Math.max(1, (n / max) * H);
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("x", String(i * bw));
    r.setAttribute("y", String(H - h));
    r.setAttribute("width", String(Math.max(0.5, bw - 0.5)));
    r.setAttribute("height", String(h));
    svg.append(r);
  });
  return svg;
}

async function loadPatterns(gen, win) {
  const box = $("patterns");
  try {
    const p = await api("/api/v1/patterns", { q: state.q, ...scope(), size: PATTERNS_SHOWN, ...win });
    if (gen !== state.generation) return;
    const s = $("summary");
    s.textContent = "";
    s.append(`${Number(p.total).toLocaleString("en")} matches in ${Number(p.distinct).toLocaleString("en")} patterns · ${p.took_ms} ms`);
    if (p.without_pattern) s.append(` · ${Number(p.without_pattern).toLocaleString("en")} without a pattern`);
    if (p.partial) {
      s.append(" · ");
      s.append(el("span", "partial", "partial answer (time limit): not every segment was counted"));
    }
    box.textContent = "";
    for (const row of p.patterns) {
      const r = el("div", "pattern");
      r.setAttribute("role", "listitem");
      r.dataset.id = String(row.id);
      r.dataset.count = String(row.count);
      r.title = "show these lines" + (row.example ? "\ne.g. " + row.example.message : "");
      r.append(
        el("span", "n", row.count.toLocaleString("en")),
        el("span", "pid", "#" + row.id),
        sparkline(row.counts),
        el("span", "tpl", row.template || "(template unknown)"),
        el("span", "seen", `${fmtTime(row.first_seen)} → ${fmtTime(row.last_seen)}`),
      );
      r.addEventListener("click", () => filterPattern(row.id));
      box.append(r);
    }
    if (!p.patterns.length) box.append(el("div", "more", p.total ? "no match has a pattern" : "no matches"));
  } catch (err) {
    if (gen !== state.generation) return;
    if (err.code === "bad_query") showQueryError(err);
    else $("summary").textContent = "patterns failed: " + err.message;
  }
}

// ---- what changed: the range against the same length before it ----

async function showChanges() {
  const box = $("changes-body");
  box.textContent = "comparing…";
  $("changes").hidden = false;
  let win = window_();
  if (!win.start) {
    // All time has nothing before it: the last hour against the one before.
    const now = Date.now();
    win = { start: new Date(now - 3600e3).toISOString(), end: new Date(now + 1000).toISOString() };
  }
  try {
    const c = await api("/api/v1/compare", { q: state.q, ...scope(), size: 20, ...win });
    box.textContent = "";
    const ranges = el("div", "range");
    ranges.append(
      `${fmtTime(c.window.start)} → ${fmtTime(c.window.end)}: ${c.window.total.toLocaleString("en")} matches, against `,
      `${fmtTime(c.baseline.start)} → ${fmtTime(c.baseline.end)}: ${c.baseline.total.toLocaleString("en")} matches`,
    );
    box.append(ranges);
    const row = (ch, label, onClick) => {
      const r = el("div", "change");
      r.dataset.kind = ch.kind;
      r.append(
        el("span", "kind kind-" + ch.kind, ch.kind),
        el("span", "score", ch.score.toFixed(1)),
        el("span", "counts", `${ch.count.toLocaleString("en")} vs ${ch.baseline_count.toLocaleString("en")}`),
        el("span", "what", label),
      );
      r.title = "score: how unlikely this change is by chance (G²; 4 ≈ p 0.05)";
      r.addEventListener("click", () => {
        $("changes").hidden = true;
        onClick();
      });
      return r;
    };
    box.append(el("h4", null, "patterns"));
    if (!c.patterns.length) box.append(el("div", "range", "no pattern changed"));
    for (const ch of c.patterns) {
      const r = row(ch, `#${ch.id} ${ch.value || "(template unknown)"}`, () => filterPattern(ch.id));
      r.dataset.id = String(ch.id);
      box.append(r);
    }
    for (const [key, field] of [["hosts", "host"], ["apps", "app"], ["severities", "severity"]]) {
      if (!c[key].length) continue;
      box.append(el("h4", null, `${field}: more than before`));
      for (const ch of c[key]) box.append(row(ch, ch.value, () => addFilter(field, ch.value, false)));
    }
    if (c.partial) box.append(el("div", "partial", "partial answer (time limit): the counts are lower bounds"));
  } catch (err) {
    box.textContent = "compare failed: " + err.message;
  }
}

// ---- histogram coloured by severity; drag to zoom ----

async function loadHistogram(gen, win) {
  const box = $("histogram");
  try {
    const h = await api("/api/v1/histogram", { q: state.q, ...scope(), ...win });
    if (gen !== state.generation) return;
    drawHistogram(h);
  } catch (err) {
    if (gen === state.generation) box.textContent = "histogram: " + err.message;
  }
}

function drawHistogram(h) {
  const box = $("histogram");
  box.textContent = "";
  const buckets = h.buckets || [];
  box.dataset.buckets = String(buckets.length);
  if (!buckets.length) return;
  const W = 1000;
  const H = 100;
  const max = Math.max(1, ...buckets.map((b) => b.count));
  const bw = W / buckets.length;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H + 12}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const styles = getComputedStyle(document.documentElement);
  buckets.forEach((b, i) => {
    let y = H;
    for (const sev of SEVERITIES) {
      const n = (b.by_severity || {})[sev] || 0;
      if (!n) continue;
      const hgt = (n / max) * H;
      y -= hgt;
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("x", String(i * bw + 0.5));
      r.setAttribute("y", String(y));
      r.setAttribute("width", String(Math.max(0.5, bw - 1)));
      r.setAttribute("height", String(hgt));
      r.setAttribute("fill", styles.getPropertyValue("--" + sev).trim() || "#888");
      const title = document.createElementNS(ns, "title");
      title.textContent = `${b.start}: ${n} ${sev}`;
      r.append(title);
      svg.append(r);
    }
  });
  for (const i of [0, Math.floor(buckets.length / 2), buckets.length - 1]) {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", String(Math.min(W - 120, i * bw)));
    t.setAttribute("y", String(H + 11));
    t.setAttribute("class", "axis");
    t.textContent = fmtTime(buckets[i].start);
    svg.append(t);
  }
  box.append(svg);
  const first = Date.parse(buckets[0].start);
  const span = buckets.length * h.interval_ms;
  box.dataset.first = String(first);
  box.dataset.span = String(span);
}

function setupZoom() {
  const box = $("histogram");
  let from = null;
  let sel = null;
  const frac = (ev) => {
    const r = box.getBoundingClientRect();
    return Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
  };
  box.addEventListener("mousedown", (ev) => {
    if (!box.dataset.span) return;
    from = frac(ev);
    sel = el("div", "sel");
    box.append(sel);
    ev.preventDefault();
  });
  window.addEventListener("mousemove", (ev) => {
    if (from === null) return;
    const to = frac(ev);
    sel.style.left = Math.min(from, to) * 100 + "%";
    sel.style.width = Math.abs(to - from) * 100 + "%";
  });
  window.addEventListener("mouseup", (ev) => {
    if (from === null) return;
    const to = frac(ev);
    sel.remove();
    const [a, b] = [Math.min(from, to), Math.max(from, to)];
    from = null;
    if (b - a < 0.005) return;
    const first = Number(box.dataset.first);
    const span = Number(box.dataset.span);
    state.range = "abs";
    state.start = Math.floor(first + a * span);
    state.end = Math.ceil(first + b * span);
    syncForm();
    runSearch();
  });
}

// ---- top values of host, app and severity ----

async function loadFacets(gen, win) {
  const box = $("facets");
  const fields = ["severity", "host", "app"];
  const answers = await Promise.all(
    fields.map((f) => api("/api/v1/terms", { field: f, q: state.q, size: 10, ...win }).catch((e) => e)),
  );
  if (gen !== state.generation) return;
  box.textContent = "";
  fields.forEach((field, i) => {
    const a = answers[i];
    box.append(el("h3", null, field));
    if (a instanceof Error) {
      box.append(el("div", "facet", a.message));
      return;
    }
    for (const b of a.buckets) {
      const row = el("div", "facet");
      row.dataset.field = field;
      row.dataset.value = b.value;
      row.title = `only ${field}:${b.value}`;
      row.append(el("span", "v" + (field === "severity" ? " sev-" + b.value : ""), b.value), el("span", "n", b.count.toLocaleString("en")));
      row.addEventListener("click", () => addFilter(field, b.value, false));
      box.append(row);
    }
    if (!a.buckets.length) box.append(el("div", "facet n", "—"));
  });
}

// ---- context: the lines before and after a hit from the same host and app ----

async function showContext(hit) {
  const box = $("context-lines");
  box.textContent = "loading…";
  $("context-title").textContent = `context of ${hit.host || "-"} ${hit.app || "-"} around ${fmtTime(hit.timestamp)}`;
  $("context").hidden = false;
  try {
    const c = await api("/api/v1/context", { id: hit.id, before: 20, after: 20 });
    box.textContent = "";
    for (const h of c.before) box.append(hitRow(h, [], { plain: true }));
    const anchor = hitRow(c.hit, highlightTerms(state.q), { plain: true });
    anchor.classList.add("anchor");
    box.append(anchor);
    for (const h of c.after) box.append(hitRow(h, [], { plain: true }));
    anchor.scrollIntoView({ block: "center" });
  } catch (err) {
    box.textContent = "context failed: " + err.message;
  }
}

// ---- live tail: new matching lines stream in on top ----

// EventSource cannot send an Authorization header, so the stream is read with fetch.
// Resolves false when the server refused the token (no point in reconnecting).
async function readEvents(u, signal, onEvent) {
  const r = await fetch(u, { headers: { ...authHeaders(), Accept: "text/event-stream" }, signal });
  if (r.status === 401) {
    askForToken("This server needs an API token (a search token will do).");
    return false;
  }
  if (!r.ok || !r.body) return true;
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return true;
    buf += value;
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, data.join("\n"));
    }
  }
}

function startTail() {
  stopTail();
  const u = new URL("/api/v1/tail", location.origin);
  if (state.q) u.searchParams.set("q", state.q);
  if (state.index) u.searchParams.set("index", state.index);
  const terms = highlightTerms(state.q);
  const ctl = new AbortController();
  const onEvent = (event, data) => {
    if (event === "dropped") {
      $("summary").append(" · tail fell behind and was reconnected");
      return;
    }
    if (event !== "record") return;
    let hit;
    try {
      hit = JSON.parse(data);
    } catch {
      return;
    }
    const row = hitRow(hit, terms);
    row.classList.add("new");
    const box = $("hits");
    box.prepend(row);
    while (box.children.length > TAIL_KEEP) box.lastChild.remove();
  };
  // Follows again after the server ends the stream (dropped, restarted), like EventSource.
  (async () => {
    while (!ctl.signal.aborted) {
      const again = await readEvents(u, ctl.signal, onEvent).catch(() => true);
      if (!again) return;
      await new Promise((done) => setTimeout(done, 1000));
    }
  })();
  state.tail = ctl;
}

function stopTail() {
  if (state.tail) {
    state.tail.abort();
    state.tail = null;
  }
}

// ---- export: the current query and range, with its signed manifest ----

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

async function runExport(format) {
  const win = window_();
  const body = { q: state.q, ...scope(), format, ...win };
  const status = $("summary");
  status.append(" · exporting…");
  try {
    const r = await fetch("/api/v1/export", {
      method: "POST",
      headers: { ...authHeaders(), "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!r.ok) {
      const e = await r.json().catch(() => ({}));
      throw new Error((e.error && e.error.message) || r.statusText);
    }
    const id = r.headers.get("x-logsift-export-id");
    const data = await r.blob();
    const manifest = await fetch(`/api/v1/exports/${id}/manifest`, { headers: authHeaders() });
    if (!manifest.ok) throw new Error("the export did not complete (no manifest)");
    const name = `logsift-export-${id.slice(0, 8)}.${format}`;
    download(data, name);
    download(await manifest.blob(), `${name}.manifest.json`);
    status.append(` · exported to ${name}`);
  } catch (err) {
    status.append(" · export failed: " + err.message);
  }
}

// ---- saved searches: a name for a query, its indexes and range, shared by name
// (`/?saved=NAME` opens one) ----

async function loadSaved() {
  const box = $("saved");
  try {
    const r = await api("/api/v1/saved", {});
    box.textContent = "";
    box.append(el("option", null, "Saved searches…"));
    for (const s of r.saved) {
      const o = el("option", null, s.name);
      o.value = s.name;
      o.title = s.query;
      box.append(o);
    }
    box.firstChild.value = "";
    return r.saved;
  } catch {
    return [];
  }
}

function openSaved(s) {
  state.q = s.query || "";
  state.index = s.index || "";
  const now = Date.now();
  const parse = (v) => {
    if (!v) return NaN;
    const rel = /^now-(\d+)([smhd])$/.exec(v);
    if (rel) return now - Number(rel[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[rel[2]];
    return v === "now" ? now : Date.parse(v);
  };
  const start = parse(s.start);
  const end = s.end ? parse(s.end) : now;
  const span = end - start;
  const named = Object.keys(RANGES).find((k) => RANGES[k] === span);
  if (!s.start) state.range = "all";
  else if (named && (!s.end || s.end === "now")) state.range = named;
  else if (!isNaN(start) && !isNaN(end)) {
    state.range = "abs";
    state.start = start;
    state.end = end;
  }
  syncForm();
  runSearch();
}

async function saveCurrent() {
  const name = prompt("Save this search as (letters, digits, - _ .):");
  if (!name) return;
  const w = state.range === "all" ? {} : state.range === "abs" ? window_() : { start: "now-" + state.range };
  const body = { name, query: state.q, index: state.index, start: w.start || "", end: w.end || "" };
  const r = await fetch("/api/v1/saved", {
    method: "POST",
    headers: { ...authHeaders(), "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) {
    $("summary").append(" · not saved: " + ((answer.error && answer.error.message) || r.statusText));
    return;
  }
  await loadSaved();
  $("summary").append(` · saved as ${name} (share ${location.origin}/?saved=${encodeURIComponent(name)})`);
}

// ---- alerts: every rule's state and its active groups, each with a link to its lines ----

async function showAlerts() {
  const box = $("alerts-body");
  box.textContent = "loading…";
  $("alerts").hidden = false;
  try {
    const r = await api("/api/v1/alerts", {});
    box.textContent = "";
    if (r.rules.length === 0) box.append(el("div", "alert-rule", "No alert rules."));
    for (const rule of r.rules) {
      const row = el("div", "alert-rule state-" + rule.state);
      row.append(el("span", "alert-state", rule.state), el("b", null, rule.name), el("span", "alert-cond", ` ${rule.spec.condition} over ${rule.spec.window}` + (rule.spec.group_by ? ` by ${rule.spec.group_by}` : "") + ` · every ${rule.spec.interval} · ${rule.source}`));
      if (rule.error) row.append(el("div", "alert-error", rule.error));
      const groups = r.alerts.filter((a) => a.rule === rule.name);
      for (const g of groups) {
        const line = el("div", "alert-group state-" + g.state);
        const label = Object.entries(g.group).map(([k, v]) => `${k}=${v}`).join(" ") || "(rule)";
        const open = el("a", null, label);
        const q = Object.entries(g.group).reduce((acc, [k, v]) => (acc ? `(${acc}) AND ` : "") + `${k}:${quoteValue(v)}`, rule.spec.query && rule.spec.query !== "*" ? rule.spec.query : "");
        const u = new URL("/", location.origin);
        if (q) u.searchParams.set("q", q);
        if (rule.spec.index) u.searchParams.set("index", rule.spec.index);
        u.searchParams.set("range", "1h");
        open.href = u.pathname + u.search;
        line.append(el("span", "alert-state", g.state), open, el("span", null, ` value ${g.value} · since ${g.active_at}`));
        row.append(line);
      }
      box.append(row);
    }
  } catch (err) {
    box.textContent = "alerts: " + err.message;
  }
}

// ---- wiring ----

function init() {
  readUrl();
  syncForm();
  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    $("auth").hidden = true;
    loadSaved();
    runSearch();
  });
  $("search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    runSearch();
  });
  $("range").addEventListener("change", () => {
    state.range = $("range").value;
    if (state.range === "abs" && state.start === null) {
      state.end = Date.now();
      state.start = state.end - RANGES["1h"];
    }
    syncForm();
    if (state.range !== "abs") runSearch();
  });
  $("tail").addEventListener("change", () => {
    writeUrl();
    if ($("tail").checked) startTail();
    else stopTail();
  });
  $("export").addEventListener("change", () => {
    const format = $("export").value;
    $("export").value = "";
    if (format) runExport(format);
  });
  $("context-close").addEventListener("click", () => ($("context").hidden = true));
  $("context").addEventListener("click", (ev) => {
    if (ev.target === $("context")) $("context").hidden = true;
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      $("context").hidden = true;
      $("changes").hidden = true;
    }
  });
  $("view-lines").addEventListener("click", () => setView("lines"));
  $("view-patterns").addEventListener("click", () => setView("patterns"));
  $("what-changed").addEventListener("click", showChanges);
  $("changes-close").addEventListener("click", () => ($("changes").hidden = true));
  $("changes").addEventListener("click", (ev) => {
    if (ev.target === $("changes")) $("changes").hidden = true;
  });
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMore();
  }).observe($("more"));
  $("saved").addEventListener("change", async () => {
    const name = $("saved").value;
    $("saved").value = "";
    if (!name) return;
    try {
      openSaved(await api("/api/v1/saved/" + encodeURIComponent(name), {}));
    } catch (err) {
      $("summary").textContent = "saved search: " + err.message;
    }
  });
  $("save").addEventListener("click", saveCurrent);
  $("show-alerts").addEventListener("click", showAlerts);
  $("alerts-close").addEventListener("click", () => ($("alerts").hidden = true));
  setupZoom();
  const shared = new URLSearchParams(location.search).get("saved");
  loadSaved();
  if (shared) {
    api("/api/v1/saved/" + encodeURIComponent(shared), {})
      .then(openSaved)
      .catch((err) => {
        $("summary").textContent = `saved search ${shared}: ` + err.message;
        runSearch();
      });
  } else {
    runSearch();
  }
}

document.addEventListener("DOMContentLoaded", init);
