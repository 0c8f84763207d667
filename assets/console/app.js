// The leadgate console: a page over the public HTTP API (see /openapi.json), nothing else.
"use strict";

const WORDS = window.LEADGATE_I18N;
const TOKEN_KEY = "leadgate.token";
const LANG_KEY = "leadgate.lang";
const REFRESH_MS = 5000;

let lang = pickLanguage();
let refresh = null;
let lastRender = null;

function pickLanguage() {
  const chosen = localStorage.getItem(LANG_KEY);
  if (chosen && WORDS[chosen]) return chosen;
  const asked = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
  return asked.some((l) => l.toLowerCase().startsWith("zh")) ? "zh" : "en";
}

function t(key, vars) {
  let text = (WORDS[lang] && WORDS[lang][key]) || WORDS.en[key] || key;
  for (const [k, v] of Object.entries(vars || {})) text = text.replace(`{${k}}`, String(v));
  return text;
}

function applyLanguage() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.getElementById("lang").value = lang;
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
  for (const el of document.querySelectorAll("[data-t-label]")) el.setAttribute("aria-label", t(el.dataset.tLabel));
  if (me && sessionStorage.getItem(TOKEN_KEY)) document.getElementById("who").textContent = t("signed_in_as", { name: me.name });
  if (lastRender) lastRender();
}

class Unauthorized extends Error {}

// An error answer of the API: its status, code, field and (for a 422) every field's problem.
class ApiFailure extends Error {
  constructor(status, error) {
    const e = error || {};
    super(e.field ? `${e.field}: ${e.message}` : e.message || (typeof error === "string" ? error : `HTTP ${status}`));
    this.status = status;
    this.code = e.code;
    this.field = e.field;
    this.details = Array.isArray(e.errors) ? e.errors : e.field ? [{ field: e.field, message: e.message }] : [];
  }
}

function authorized(headers) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

// A JSON call; an error answer becomes an Error with the API's message (and field). /readyz's
// 503 is an answer, not an error.
async function api(path, options) {
  const resp = await call(path, options);
  return resp.body;
}

// The same, with the answer's ETag: { body, etag }. `options.json` is sent as the JSON body,
// `options.ifMatch` as If-Match.
async function call(path, options) {
  const o = { ...(options || {}) };
  const headers = authorized({ Accept: "application/json" });
  if (o.json !== undefined) {
    headers["Content-Type"] = "application/json";
    o.body = JSON.stringify(o.json);
    delete o.json;
  }
  if (o.ifMatch) headers["If-Match"] = o.ifMatch;
  delete o.ifMatch;
  const resp = await fetch(path, { ...o, headers });
  if (resp.status === 401) throw new Unauthorized();
  const body = resp.status === 204 ? null : await resp.json().catch(() => null);
  if (!resp.ok && !(body && body.status)) throw new ApiFailure(resp.status, body && body.error);
  return { body, etag: resp.headers.get("ETag") };
}

function show(id) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== id;
  const signedIn = id !== "sign-in";
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn || !sessionStorage.getItem(TOKEN_KEY);
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#/${id}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function signIn(message) {
  clearInterval(refresh);
  lastRender = null;
  show("sign-in");
  const error = document.getElementById("token-error");
  error.textContent = message || "";
  const input = document.getElementById("token");
  input.setAttribute("aria-invalid", message ? "true" : "false");
  input.focus();
}

function when(at) {
  return at ? new Date(at).toLocaleString(lang === "zh" ? "zh-CN" : "en") : t("never");
}

function number(n) {
  return Number(n).toLocaleString(lang === "zh" ? "zh-CN" : "en");
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
}

// Overview: delivery, the rates in and out, backlog, and what needs attention with what to do.
let lastCounts = null; // { at, in, out } from the previous /metrics reading

async function overview() {
  show("overview");
  const problem = document.getElementById("load-error");
  try {
    const [ready, list, counts] = await Promise.all([api("/readyz"), api("/v1/connectors"), throughput()]);
    const rate = counts && lastCounts && counts.at > lastCounts.at
      ? { in: ((counts.in - lastCounts.in) * 60000) / (counts.at - lastCounts.at), out: ((counts.out - lastCounts.out) * 60000) / (counts.at - lastCounts.at) }
      : null;
    if (counts) lastCounts = counts;
    lastRender = () => renderOverview(ready, list, rate, Boolean(counts));
    lastRender();
    problem.textContent = "";
  } catch (e) {
    if (e instanceof Unauthorized) return signIn(t("sign_in.invalid"));
    problem.textContent = t("load.failed", { error: e.message });
  }
}

// Leads taken in and records delivered so far, summed from /metrics; null when metrics are off.
async function throughput() {
  const resp = await fetch("/metrics", { headers: authorized({}) });
  if (!resp.ok) return null;
  const text = await resp.text();
  const sum = (name) => text.split("\n")
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((n, l) => n + (Number(l.slice(l.lastIndexOf(" ") + 1)) || 0), 0);
  return { at: Date.now(), in: sum("leadgate_component_received_events_total"), out: sum("leadgate_component_sent_events_total") };
}

// What an operator should do about a connector, if anything: [problem, what to do].
function problemsOf(c) {
  const out = [];
  const token = c.token || {};
  if (c.state === "stopped") out.push([c.last_error || t("state.stopped"), token.refused ? t("todo.authorize", { name: c.name }) : t("todo.stopped")]);
  else if (c.state === "failing") out.push([c.last_error || t("state.failing"), t("todo.failing", { n: c.consecutive_errors })]);
  if (token.refused && c.state !== "stopped") out.push([token.refused, t("todo.authorize", { name: c.name })]);
  if (token.refresh_expiring_soon) out.push([t("problem.refresh_expiring", { at: when(token.refresh_expires_at) }), t("todo.authorize", { name: c.name })]);
  if (token.expiring_soon) out.push([t("problem.token_expiring", { at: when(token.expires_at) }), t("todo.authorize", { name: c.name })]);
  if (token.last_refresh_error) out.push([token.last_refresh_error, t("todo.refresh")]);
  return out;
}

const PROBLEMS_SHOWN = 20;

function renderOverview(ready, list, rate, metrics) {
  const state = document.getElementById("delivery-state");
  state.textContent = t(ready.status === "ready" ? "delivery.ready" : "delivery.degraded");
  state.className = `state-${ready.status}`;
  document.getElementById("delivery-error").textContent = ready.delivery_error || "";
  document.getElementById("rate").textContent = rate
    ? t("rate.value", { in: number(Math.round(rate.in)), out: number(Math.round(rate.out)) })
    : metrics ? t("rate.measuring") : t("rate.off");
  document.getElementById("backlog").textContent = t("backlog.value", { backlog: number(ready.backlog), max: number(ready.max_backlog) });
  document.getElementById("quarantined").textContent = number(ready.quarantined);
  const byState = {};
  for (const c of list.connectors) byState[c.state] = (byState[c.state] || 0) + 1;
  document.getElementById("connector-states").textContent = Object.entries(byState)
    .map(([s, n]) => `${t(`state.${s}`)}: ${number(n)}`).join(" · ") || "–";
  const problems = [];
  if (ready.status !== "ready") {
    problems.push({ what: t("problem.delivery"), error: ready.delivery_error || t("problem.backlog_full"), todo: ready.delivery_error ? t("todo.delivery") : t("todo.backlog") });
  }
  if (ready.quarantined > 0) problems.push({ what: t("problem.quarantine"), error: t("problem.quarantined", { n: number(ready.quarantined) }), todo: t("todo.quarantine") });
  for (const c of list.connectors) for (const [error, todo] of problemsOf(c)) problems.push({ connector: c.name, what: c.name, error, todo });
  const ul = document.getElementById("problems");
  ul.replaceChildren();
  for (const p of problems.slice(0, PROBLEMS_SHOWN)) {
    const li = document.createElement("li");
    if (p.connector) li.dataset.connector = p.connector;
    const what = document.createElement("strong");
    what.textContent = p.what;
    const error = document.createElement("span");
    error.className = "error-text";
    error.textContent = p.error;
    const todo = document.createElement("span");
    todo.className = "todo";
    todo.textContent = p.todo;
    li.append(what, ": ", error, " — ", todo);
    ul.appendChild(li);
  }
  if (problems.length > PROBLEMS_SHOWN) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = "#/connectors";
    a.textContent = t("problem.more", { n: number(problems.length - PROBLEMS_SHOWN) });
    li.appendChild(a);
    ul.appendChild(li);
  }
  document.getElementById("problems-none").hidden = problems.length > 0;
}

// Connectors: every connector's health, 50 to a page, filtered by name and state; the webhook
// URL to paste into the platform; pause and resume for those that read on their own.
const CONNECTORS_PAGE = 50;
let connectorPage = 0;

async function connectorsPage() {
  show("connectors");
  const error = document.getElementById("connectors-error");
  try {
    const list = await api("/v1/connectors");
    error.textContent = "";
    lastRender = () => renderConnectors(list);
    lastRender();
  } catch (e) {
    failed(e, "connectors-error");
  }
}

function renderConnectors(list) {
  // Someone is selecting or copying a webhook URL: the table waits. A focused button keeps its
  // focus over the refresh.
  const focused = document.activeElement && document.activeElement.closest("#connector-list tbody") ? document.activeElement : null;
  if (focused && focused.tagName === "INPUT") return;
  const refocus = focused && focused.closest("tr") ? [focused.closest("tr").dataset.connector, focused.closest("td").cellIndex] : null;
  const name = document.getElementById("connector-name").value.trim().toLowerCase();
  const state = document.getElementById("connector-state").value;
  const shown = list.connectors.filter((c) => (!name || c.name.toLowerCase().includes(name)) && (!state || c.state === state));
  const pages = Math.max(1, Math.ceil(shown.length / CONNECTORS_PAGE));
  connectorPage = Math.min(connectorPage, pages - 1);
  const body = document.querySelector("#connector-list tbody");
  body.replaceChildren();
  for (const c of shown.slice(connectorPage * CONNECTORS_PAGE, (connectorPage + 1) * CONNECTORS_PAGE)) {
    const row = document.createElement("tr");
    row.dataset.connector = c.name;
    rowHeader(row, c.name);
    cell(row, c.type || "");
    cell(row, t(`state.${c.state}`), `state state-${c.state}`);
    cell(row, when(c.last_success_at));
    cell(row, c.last_error ? `${c.last_error} (${when(c.last_error_at)})` : "", "last-error");
    const progress = [];
    if (c.lag_seconds !== null && c.lag_seconds !== undefined) progress.push(t("connector.lag", { s: number(Math.round(c.lag_seconds)) }));
    if (c.inbox !== undefined) progress.push(t("connector.inbox", { n: number(c.inbox) }));
    if (c.page_size !== undefined) progress.push(t("connector.page_size", { n: number(c.page_size) }));
    if (c.snapshot) progress.push(t("connector.snapshot", { done: number(c.snapshot.rows_done), total: number(c.snapshot.rows_total) }));
    cell(row, progress.join(" · "), "progress");
    const token = c.token;
    const tokenText = !token ? "" : token.refused ? t("token.refused")
      : [token.expires_at ? t("token.expires", { at: when(token.expires_at) }) : "",
         token.refresh_expires_at ? t("token.refresh_expires", { at: when(token.refresh_expires_at) }) : "",
         token.last_refresh_at ? t("token.refreshed", { at: when(token.last_refresh_at) }) : ""].filter(Boolean).join(" · ") || t("token.accepted");
    cell(row, tokenText, token && (token.refused || token.expiring_soon || token.refresh_expiring_soon) ? "token state-failing" : "token");
    const hook = document.createElement("td");
    hook.className = "webhook";
    if (c.webhook) {
      // The URL to paste into the platform or form tool: this gateway's address and the path.
      const url = document.createElement("input");
      url.readOnly = true;
      url.value = `${location.origin}${c.webhook}`;
      url.setAttribute("aria-label", t("connector.webhook_of", { name: c.name }));
      url.addEventListener("focus", () => url.select());
      const copy = button(t("copy"), async () => {
        url.select();
        try {
          await navigator.clipboard.writeText(url.value);
        } catch (_) {
          document.execCommand("copy"); // not a secure context: the selection is copied instead
        }
        copy.textContent = t("copied");
      }, t("copy_of", { name: c.name }));
      hook.append(url, copy);
    }
    row.appendChild(hook);
    const act = document.createElement("td");
    if (c.pausable) {
      const paused = c.state === "paused" || Boolean(c.paused_at);
      act.appendChild(button(t(paused ? "connector.resume" : "connector.pause"), () => setPaused(c.name, !paused),
        t(paused ? "connector.resume_of" : "connector.pause_of", { name: c.name })));
    }
    row.appendChild(act);
    body.appendChild(row);
  }
  if (refocus) {
    const row = body.querySelector(`tr[data-connector="${CSS.escape(refocus[0])}"]`);
    const again = row && row.cells[refocus[1]] && row.cells[refocus[1]].querySelector("button");
    if (again) again.focus();
  }
  document.getElementById("connectors-page-of").textContent = t("pager.of", { page: connectorPage + 1, pages, n: number(shown.length) });
  document.getElementById("connectors-prev").disabled = connectorPage === 0;
  document.getElementById("connectors-next").disabled = connectorPage >= pages - 1;
}

async function setPaused(name, paused) {
  try {
    await call(`/v1/connectors/${encodeURIComponent(name)}/${paused ? "pause" : "resume"}`, { method: "POST" });
    await connectorsPage();
  } catch (e) {
    failed(e, "connectors-error");
  }
}

// Import: upload a file through POST /v1/imports, then follow GET /v1/imports/{id}.
let following = null;

async function importPage() {
  lastRender = null;
  show("import");
  try {
    const list = await api("/v1/connectors");
    const options = document.getElementById("file-connectors");
    options.replaceChildren();
    for (const c of list.connectors.filter((c) => c.type === "file")) {
      const o = document.createElement("option");
      o.value = c.name;
      options.appendChild(o);
    }
  } catch (e) {
    if (e instanceof Unauthorized) signIn(t("sign_in.invalid"));
  }
}

async function upload(e) {
  e.preventDefault();
  const input = document.getElementById("import-file");
  const error = document.getElementById("import-error");
  const file = input.files[0];
  input.setAttribute("aria-invalid", file ? "false" : "true");
  if (!file) {
    error.textContent = t("import.no_file");
    return input.focus();
  }
  error.textContent = "";
  const query = new URLSearchParams({ source: document.getElementById("import-source").value.trim() || "import" });
  const sheet = document.getElementById("import-sheet").value.trim();
  if (sheet) query.set("sheet", sheet);
  const body = new FormData();
  body.append("file", file, file.name);
  try {
    const status = await api(`/v1/imports?${query}`, { method: "POST", body });
    follow(status);
  } catch (err) {
    if (err instanceof Unauthorized) return signIn(t("sign_in.invalid"));
    error.textContent = t("import.failed", { error: err.message });
  }
}

function follow(status) {
  clearTimeout(following);
  renderImport(status);
  if (status.state === "done" || status.state === "failed") return;
  following = setTimeout(async () => {
    try {
      follow(await api(`/v1/imports/${encodeURIComponent(status.id)}`));
    } catch (err) {
      if (err instanceof Unauthorized) return signIn(t("sign_in.invalid"));
      document.getElementById("import-failure").textContent = t("load.failed", { error: err.message });
      following = setTimeout(() => follow(status), 2000);
    }
  }, 1000);
}

function renderImport(s) {
  lastRender = () => renderImport(s);
  document.getElementById("import-status").hidden = false;
  document.getElementById("import-file-name").textContent = s.file_name;
  const state = document.getElementById("import-state");
  state.textContent = t(`import.state.${s.state}`);
  state.className = `state-${s.state}`;
  document.getElementById("import-rows-read").textContent = number(s.rows_read);
  document.getElementById("import-rows-journaled").textContent = number(s.rows_journaled);
  document.getElementById("import-rows-rejected").textContent = number(s.rows_rejected);
  const notes = document.getElementById("import-notes");
  notes.replaceChildren();
  for (const n of s.notes || []) {
    const li = document.createElement("li");
    li.textContent = n;
    notes.appendChild(li);
  }
  document.getElementById("import-failure").textContent = s.error || "";
  const report = document.getElementById("import-report");
  report.hidden = !(s.rows_rejected > 0);
  report.onclick = () => download(`/v1/imports/${encodeURIComponent(s.id)}/rejected.csv`, `${s.file_name}.rejected.csv`);
}

// A download that needs the token: fetched, then saved from memory.
async function download(path, name, errorAt) {
  const resp = await fetch(path, { headers: authorized({}) });
  if (resp.status === 401) return signIn(t("sign_in.invalid"));
  if (!resp.ok) {
    const body = await resp.json().catch(() => null);
    const why = body && body.error ? body.error.message : `HTTP ${resp.status}`;
    document.getElementById(errorAt || "import-failure").textContent = t("load.failed", { error: why });
    return;
  }
  const url = URL.createObjectURL(await resp.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// Campaigns (效果分析): GET /v1/stats as a table, and its CSV.
const STAT_COLUMNS = ["received", "clean", "rejected", "duplicate", "merged", "assigned"];
const MAX_ROWS = 500;

function statsQuery(format) {
  const form = document.getElementById("stats-form");
  const q = new URLSearchParams();
  q.set("group_by", [...form.querySelectorAll("input[name=group_by]:checked")].map((i) => i.value).join(","));
  q.set("interval", document.getElementById("stats-interval").value);
  for (const name of ["from", "to"]) {
    const v = document.getElementById(`stats-${name}`).value;
    if (v) q.set(name, v);
  }
  if (format) q.set("format", format);
  return q;
}

async function campaigns() {
  lastRender = null;
  show("campaigns");
  const error = document.getElementById("stats-error");
  try {
    const by = document.getElementById("funnel-by").value;
    const [stats, funnel] = await Promise.all([
      api(`/v1/stats?${statsQuery()}`),
      api(`/v1/stats/funnel?by=${encodeURIComponent(by)}`),
    ]);
    error.textContent = "";
    lastRender = () => {
      renderStats(stats);
      renderFunnel(funnel);
    };
    lastRender();
  } catch (e) {
    if (e instanceof Unauthorized) return signIn(t("sign_in.invalid"));
    error.textContent = t("load.failed", { error: e.message });
  }
}

function renderStats(stats) {
  const zone = { timeZone: stats.timezone };
  const day = (at) => new Date(at).toLocaleString(lang === "zh" ? "zh-CN" : "en",
    stats.interval === "hour" ? { ...zone, dateStyle: "short", timeStyle: "short" } : { ...zone, dateStyle: "medium" });
  document.getElementById("stats-summary").textContent = t("stats.summary", { from: day(stats.from), to: day(stats.to), timezone: stats.timezone });
  const head = document.querySelector("#stats thead tr");
  head.replaceChildren();
  const th = (text, numeric) => {
    const el = document.createElement("th");
    el.scope = "col";
    el.textContent = text;
    if (numeric) el.className = "n";
    head.appendChild(el);
  };
  th(t("stats.start"));
  for (const g of stats.group_by) th(t(`stats.${g}`));
  for (const c of STAT_COLUMNS) th(t(`stats.${c}`), true);
  const body = document.querySelector("#stats tbody");
  body.replaceChildren();
  const row = (first, groups, counts, className) => {
    const tr = document.createElement("tr");
    if (className) tr.className = className;
    cell(tr, first);
    // A group the lead named none for shows "(none)"; the totals row has no groups.
    for (const g of groups) cell(tr, g === null ? "" : g === "" ? t("stats.none") : g);
    for (const c of STAT_COLUMNS) cell(tr, number(counts[c] || 0), "n");
    body.appendChild(tr);
    return tr;
  };
  for (const r of stats.rows.slice(0, MAX_ROWS)) {
    const tr = row(day(r.start), stats.group_by.map((g) => r[g]), r.counts);
    tr.dataset.group = stats.group_by.map((g) => r[g]).join("/");
  }
  row(t("stats.totals"), stats.group_by.map(() => null), stats.totals, "totals");
  document.getElementById("stats-more").textContent =
    stats.rows.length > MAX_ROWS ? t("stats.more", { shown: MAX_ROWS, rows: number(stats.rows.length) }) : "";
}

// The conversion funnel: GET /v1/stats/funnel, one row per campaign (or source, segment, owner).
function renderFunnel(funnel) {
  const head = document.querySelector("#funnel thead tr");
  head.replaceChildren();
  const columns = [funnel.by === "connector" ? "stats.connector" : funnel.by === "campaign" ? "stats.campaign" : `funnel.${funnel.by}`,
    ...funnel.stages.map((s) => `funnel.${s}`), "funnel.rate"];
  columns.forEach((key, i) => {
    const el = document.createElement("th");
    el.scope = "col";
    el.textContent = t(key);
    if (i > 0) el.className = "n";
    head.appendChild(el);
  });
  const body = document.querySelector("#funnel tbody");
  body.replaceChildren();
  for (const r of funnel.rows.slice(0, MAX_ROWS)) {
    const tr = document.createElement("tr");
    tr.dataset.value = r.value;
    cell(tr, r.value);
    for (const s of funnel.stages) cell(tr, number(r.counts[s] || 0), "n");
    cell(tr, percent(r.counts.converted || 0, r.counts.received || 0), "n");
    body.appendChild(tr);
  }
  if (!funnel.rows.length) {
    const tr = document.createElement("tr");
    cell(tr, t("funnel.empty"));
    tr.firstChild.colSpan = columns.length;
    body.appendChild(tr);
  }
}

// Data quality: /v1/stats by connector and day, as rates, reasons and a chart.
function percent(part, whole) {
  return whole ? `${((100 * part) / whole).toFixed(1)}%` : "–";
}

async function quality() {
  lastRender = null;
  show("quality");
  const error = document.getElementById("quality-error");
  try {
    const [bySource, byDay] = await Promise.all([
      api("/v1/stats?group_by=connector&interval=day"),
      api("/v1/stats?group_by=&interval=day"),
    ]);
    error.textContent = "";
    lastRender = () => renderQuality(bySource, byDay);
    lastRender();
    await loadRejections();
  } catch (e) {
    if (e instanceof Unauthorized) return signIn(t("sign_in.invalid"));
    error.textContent = t("load.failed", { error: e.message });
  }
}

function renderQuality(bySource, byDay) {
  // The period's counts of each connector: the sum of its days.
  const sources = new Map();
  for (const r of bySource.rows) {
    const s = sources.get(r.connector) || { received: 0, rejected: 0, duplicate: 0, test: 0, reasons: {} };
    for (const k of ["received", "rejected", "duplicate", "test"]) s[k] += r.counts[k] || 0;
    for (const [code, n] of Object.entries(r.counts.rejected_by || {})) s.reasons[code] = (s.reasons[code] || 0) + n;
    sources.set(r.connector, s);
  }
  const body = document.querySelector("#quality-sources tbody");
  body.replaceChildren();
  for (const [name, s] of [...sources].sort((a, b) => b[1].rejected - a[1].rejected)) {
    const tr = document.createElement("tr");
    tr.dataset.connector = name;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name;
    tr.appendChild(th);
    cell(tr, number(s.received), "n");
    cell(tr, number(s.rejected), "n");
    cell(tr, percent(s.rejected, s.received), "n rejected-rate");
    cell(tr, percent(s.duplicate, s.received), "n");
    cell(tr, percent(s.test, s.received), "n");
    const reasons = document.createElement("td");
    const list = document.createElement("ul");
    list.className = "reasons";
    for (const [code, n] of Object.entries(s.reasons).sort((a, b) => b[1] - a[1])) {
      const li = document.createElement("li");
      li.dataset.code = code;
      li.textContent = `${code}: ${number(n)}`;
      list.appendChild(li);
    }
    reasons.appendChild(list);
    tr.appendChild(reasons);
    body.appendChild(tr);
  }
  // One bar a day with rejections, its count above it; the figure's label says the same in words.
  const days = byDay.rows.map((r) => [new Date(r.start).toLocaleDateString(lang === "zh" ? "zh-CN" : "en", { timeZone: byDay.timezone, month: "numeric", day: "numeric" }), r.counts.rejected || 0]);
  const figure = document.getElementById("quality-chart");
  figure.setAttribute("aria-label", t("quality.chart", { days: days.map(([d, n]) => `${d} ${n}`).join(", ") || "–" }));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const width = Math.max(days.length, 1) * 36;
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", "140");
  svg.setAttribute("viewBox", `0 0 ${width} 140`);
  const most = Math.max(1, ...days.map(([, n]) => n));
  days.forEach(([day, n], i) => {
    const h = Math.round((100 * n) / most);
    const bar = document.createElementNS(ns, "rect");
    for (const [k, v] of Object.entries({ x: i * 36 + 6, y: 115 - h, width: 24, height: h })) bar.setAttribute(k, String(v));
    bar.dataset.count = String(n);
    svg.appendChild(bar);
    const label = (y, text) => {
      const el = document.createElementNS(ns, "text");
      el.setAttribute("x", String(i * 36 + 18));
      el.setAttribute("y", String(y));
      el.setAttribute("text-anchor", "middle");
      el.textContent = text;
      svg.appendChild(el);
    };
    label(111 - h, String(n));
    label(132, day);
  });
  figure.replaceChildren(svg);
}

// Data quality: the latest rejected leads, masked by the API.
const REJECTIONS_SHOWN = 20;

async function loadRejections() {
  const page = await api(`/v1/rejections?limit=${REJECTIONS_SHOWN}`);
  const body = document.querySelector("#rejections tbody");
  body.replaceChildren();
  for (const r of page.entries) {
    const tr = document.createElement("tr");
    tr.dataset.event = r.event_id;
    cell(tr, when(r.received_at));
    cell(tr, r.connector);
    const why = document.createElement("td");
    const list = document.createElement("ul");
    list.className = "reasons";
    for (const reason of r.reasons) {
      const li = document.createElement("li");
      li.dataset.code = reason.code;
      li.textContent = `${reason.code}: ${reason.message}`;
      list.appendChild(li);
    }
    why.appendChild(list);
    tr.appendChild(why);
    cell(tr, Object.entries(r.fields).map(([k, v]) => `${k}: ${v}`).join(", "), "fields");
    body.appendChild(tr);
  }
  document.getElementById("rejections-none").hidden = page.entries.length > 0;
}

// Leads: find a person by phone, email or lead id, and see why its records are one person.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
let found = null;

function leadsPage() {
  lastRender = found ? () => renderLeads(found) : null;
  show("leads");
  document.getElementById("lead-query").focus();
}

async function findLead(e) {
  e.preventDefault();
  const input = document.getElementById("lead-query");
  const error = document.getElementById("lead-query-error");
  const q = input.value.trim();
  error.textContent = "";
  input.removeAttribute("aria-invalid");
  if (!q) {
    error.textContent = t("leads.empty");
    input.setAttribute("aria-invalid", "true");
    return input.focus();
  }
  // The gateway masks personal data until it is asked to show it (and records that it did).
  const pii = document.getElementById("lead-reveal").checked ? "clear" : "masked";
  try {
    if (UUID.test(q)) {
      try {
        found = [await api(`/v1/leads/${encodeURIComponent(q)}?pii=${pii}`)];
      } catch (err) {
        if (err.status !== 404) throw err;
        found = [];
      }
    } else {
      const by = q.includes("@") ? "email" : "phone";
      found = (await api(`/v1/leads?${new URLSearchParams({ [by]: q, pii })}`)).leads;
    }
  } catch (err) {
    if (err instanceof Unauthorized) return signIn(t("sign_in.invalid"));
    error.textContent = err.status === 422 ? t("leads.unusable", { field: t(`leads.by_${err.field}`) }) : t("load.failed", { error: err.message });
    input.setAttribute("aria-invalid", "true");
    return input.focus();
  }
  lastRender = () => renderLeads(found);
  renderLeads(found);
}

function table(headers, rows, className) {
  const el = document.createElement("table");
  if (className) el.className = className;
  const head = document.createElement("tr");
  for (const h of headers) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = h;
    head.appendChild(th);
  }
  el.createTHead().appendChild(head);
  const body = el.createTBody();
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const text of r) cell(tr, text);
    body.appendChild(tr);
  }
  return el;
}

function renderLeads(people) {
  document.getElementById("lead-count").textContent = people.length ? t("leads.found", { n: people.length }) : t("leads.none");
  const out = document.getElementById("lead-results");
  out.replaceChildren();
  for (const c of people) {
    const art = document.createElement("article");
    art.className = "person";
    art.dataset.lead = c.lead_id;
    const h = document.createElement("h2");
    h.textContent = t("leads.person", { id: c.lead_id });
    art.appendChild(h);
    const facts = document.createElement("dl");
    const fact = (label, text) => {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = text;
      facts.append(dt, dd);
    };
    if (c.requested_lead_id) fact(t("leads.asked"), t("leads.merged_into", { id: c.requested_lead_id }));
    if (c.created_at) fact(t("leads.created"), when(c.created_at));
    fact(t("leads.sources"), Object.entries(c.sources || {}).map(([k, n]) => `${k} × ${n}`).join(", "));
    if (c.names && c.names.length) fact(t("leads.names"), c.names.join(", "));
    art.appendChild(facts);
    const sub = (key) => {
      const h3 = document.createElement("h3");
      h3.textContent = t(key);
      art.appendChild(h3);
    };
    sub("leads.profile");
    art.appendChild(table([t("leads.field"), t("leads.value"), t("stats.connector"), t("leads.at")],
      Object.entries(c.profile || {}).map(([f, v]) => [f, v.value, v.connector, when(v.at)]), "profile"));
    sub("leads.keys");
    art.appendChild(table([t("leads.kind"), t("leads.value"), t("leads.identifies")],
      (c.keys || []).map((k) => [k.kind, k.value, k.shared ? t("leads.shared") : t("yes")]), "keys"));
    if (c.merges && c.merges.length) {
      sub("leads.merges");
      art.appendChild(table([t("leads.at"), t("leads.absorbed")],
        c.merges.map((m) => [when(m.at), (m.merged_lead_ids || []).join(", ")]), "merges"));
    }
    sub("leads.events");
    art.appendChild(table([t("leads.at"), t("stats.connector"), t("leads.status"), t("leads.matched_on"), t("leads.event")],
      (c.members || []).map((m) => [when(m.at), m.connector, t(`identity.${m.status}`), (m.matched_on || []).join(", "), m.event_id]), "events"));
    out.appendChild(art);
  }
}

// Assignment (线索分配): /v1/assignment/ rules, owners, teams, preview and audit.
const A = "/v1/assignment";
const AUDIT_PAGE = 50;
let assignmentData = { rules: [], owners: [], teams: [] };
let editing = null; // { id, etag } of the rule in the editor; id null for a new rule

function failed(e, at) {
  if (e instanceof Unauthorized) return signIn(t("sign_in.invalid"));
  document.getElementById(at).textContent = t("load.failed", { error: e.message });
}

async function assignment() {
  lastRender = null;
  show("assignment");
  try {
    const [rules, owners, teams] = await Promise.all(["rules", "owners", "teams"].map((k) => api(`${A}/${k}`)));
    assignmentData = { rules, owners, teams };
    document.getElementById("assignment-error").textContent = "";
    lastRender = renderAssignment;
    renderAssignment();
    loadAudit(true);
  } catch (e) {
    failed(e, "assignment-error");
  }
}

function describeConditions(conditions) {
  if (!conditions || !conditions.length) return t("rule.every_lead");
  return conditions.map((c) => {
    const target = c.values ? c.values.join(" | ") : c.value !== undefined ? c.value : c.pattern !== undefined ? c.pattern
      : c.op === "range" ? `${c.min ?? "…"}–${c.max ?? "…"}` : c.op === "working_hours" ? `${(c.weekdays || []).join(",")} ${c.start}–${c.end}` : "";
    return `${c.field || ""} ${t(`op.${c.op}`)} ${target}`.trim();
  }).join(t("rule.and"));
}

function describeAction(a) {
  if (!a) return "";
  return a.type === "owner" ? t("rule.action_owner", { owner: a.owner }) : t("rule.action_team", { team: a.team, strategy: t(`strategy.${a.strategy}`) });
}

function button(text, onClick, label) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

function rowHeader(tr, text) {
  const th = document.createElement("th");
  th.scope = "row";
  th.textContent = text;
  tr.appendChild(th);
}

function renderAssignment() {
  const { rules, owners, teams } = assignmentData;
  const body = document.querySelector("#rules tbody");
  body.replaceChildren();
  for (const r of [...rules].sort((a, b) => a.priority - b.priority || a.id.localeCompare(b.id))) {
    const tr = document.createElement("tr");
    tr.dataset.rule = r.id;
    cell(tr, String(r.priority), "n");
    rowHeader(tr, r.id);
    cell(tr, r.name || "");
    cell(tr, r.enabled === false ? t("no") : t("yes"));
    cell(tr, describeConditions(r.conditions));
    cell(tr, describeAction(r.action));
    const td = document.createElement("td");
    td.appendChild(button(t("rule.edit"), () => editRule(r.id), t("rule.edit_of", { id: r.id })));
    tr.appendChild(td);
    body.appendChild(tr);
  }
  const fill = (select, items) => {
    const keep = select.value;
    select.replaceChildren();
    for (const i of items) {
      const o = document.createElement("option");
      o.value = i.id;
      o.textContent = i.name ? `${i.name} (${i.id})` : i.id;
      select.appendChild(o);
    }
    if (keep) select.value = keep;
  };
  fill(document.getElementById("rule-owner"), owners);
  fill(document.getElementById("rule-team"), teams);
  const ownerBody = document.querySelector("#owners tbody");
  ownerBody.replaceChildren();
  for (const o of owners) {
    const tr = document.createElement("tr");
    tr.dataset.owner = o.id;
    rowHeader(tr, o.id);
    cell(tr, o.name || "");
    cell(tr, t(`owner.status.${o.status || "active"}`), `owner-status state-${o.status || "active"}`);
    cell(tr, number(o.open_leads || 0), "n");
    cell(tr, o.capacity ? number(o.capacity) : t("owner.no_limit"), "n");
    const td = document.createElement("td");
    const active = (o.status || "active") === "active";
    td.appendChild(button(t(active ? "owner.set_off_duty" : "owner.set_active"), () => toggleOwner(o.id, active ? "off_duty" : "active"),
      t(active ? "owner.set_off_duty_of" : "owner.set_active_of", { id: o.id })));
    tr.appendChild(td);
    ownerBody.appendChild(tr);
  }
  const teamBody = document.querySelector("#teams tbody");
  teamBody.replaceChildren();
  for (const team of teams) {
    const tr = document.createElement("tr");
    rowHeader(tr, team.id);
    cell(tr, team.name || "");
    cell(tr, team.members.map((m) => `${m.owner} (${m.weight ?? 1})`).join(", "));
    teamBody.appendChild(tr);
  }
  document.getElementById("rule-form-title").textContent = editing && editing.id ? t("rule.editing", { id: editing.id }) : t("rule.new");
}

const RULE_INPUTS = ["id", "name", "priority", "conditions", "action-type", "owner", "team", "strategy"];

function clearRuleErrors() {
  for (const f of RULE_INPUTS) {
    document.getElementById(`rule-${f}-error`).textContent = "";
    document.getElementById(`rule-${f}`).removeAttribute("aria-invalid");
  }
  document.getElementById("rule-form-error").textContent = "";
}

// The input a field path of the API belongs to: `conditions[1].pattern` -> the conditions.
function ruleInputOf(path) {
  const p = path || "";
  if (p.startsWith("conditions")) return "conditions";
  if (p === "action" || p === "action.type") return "action-type";
  if (p.startsWith("action.")) return p.slice("action.".length);
  return RULE_INPUTS.includes(p) ? p : null;
}

function showRuleErrors(errors) {
  let first = null;
  const rest = [];
  for (const e of errors) {
    const input = ruleInputOf(e.field);
    if (!input) {
      rest.push(e.field ? `${e.field}: ${e.message}` : e.message);
      continue;
    }
    const el = document.getElementById(`rule-${input}`);
    const at = document.getElementById(`rule-${input}-error`);
    // A condition's problem names which one: conditions[1].pattern.
    const text = input === "conditions" && e.field !== "conditions" ? `${e.field}: ${e.message}` : e.message;
    at.textContent = at.textContent ? `${at.textContent} ${text}` : text;
    el.setAttribute("aria-invalid", "true");
    first = first || el;
  }
  document.getElementById("rule-form-error").textContent = rest.length ? rest.join(" ") : t("rule.fix_fields");
  if (first) first.focus();
}

function showActionInputs() {
  const team = document.getElementById("rule-action-type").value === "team";
  for (const [id, shown] of [["rule-owner", !team], ["rule-team", team], ["rule-strategy", team]]) {
    const el = document.getElementById(id);
    el.disabled = !shown;
    document.querySelector(`label[for=${id}]`).hidden = !shown;
    el.hidden = !shown;
  }
}

async function editRule(id) {
  const form = document.getElementById("rule-form");
  clearRuleErrors();
  document.getElementById("assignment-saved").textContent = "";
  let rule = { id: "", name: "", priority: 100, enabled: true, conditions: [], action: { type: "owner", owner: (assignmentData.owners[0] || {}).id } };
  editing = { id: null, etag: null };
  if (id) {
    try {
      const got = await call(`${A}/rules/${encodeURIComponent(id)}`);
      rule = got.body;
      editing = { id, etag: got.etag };
    } catch (e) {
      return failed(e, "assignment-error");
    }
  }
  document.getElementById("rule-id").value = rule.id;
  document.getElementById("rule-id").readOnly = Boolean(id);
  document.getElementById("rule-name").value = rule.name || "";
  document.getElementById("rule-priority").value = String(rule.priority);
  document.getElementById("rule-enabled").checked = rule.enabled !== false;
  document.getElementById("rule-conditions").value = rule.conditions && rule.conditions.length ? JSON.stringify(rule.conditions, null, 2) : "";
  document.getElementById("rule-action-type").value = rule.action.type;
  if (rule.action.owner) document.getElementById("rule-owner").value = rule.action.owner;
  if (rule.action.team) document.getElementById("rule-team").value = rule.action.team;
  document.getElementById("rule-strategy").value = rule.action.strategy || "round_robin";
  document.getElementById("rule-delete").hidden = !id;
  showActionInputs();
  renderAssignment();
  form.hidden = false;
  document.getElementById(id ? "rule-name" : "rule-id").focus();
}

// The rule the form describes, or the errors found before asking the API.
function ruleFromForm() {
  const errors = [];
  const priorityText = document.getElementById("rule-priority").value.trim();
  const priority = Number(priorityText);
  if (!priorityText || !Number.isInteger(priority)) errors.push({ field: "priority", message: t("rule.priority_invalid") });
  let conditions = [];
  const text = document.getElementById("rule-conditions").value.trim();
  if (text) {
    try {
      conditions = JSON.parse(text);
      if (!Array.isArray(conditions)) errors.push({ field: "conditions", message: t("rule.conditions_not_list") });
    } catch (e) {
      errors.push({ field: "conditions", message: t("rule.conditions_not_json", { error: e.message }) });
    }
  }
  const type = document.getElementById("rule-action-type").value;
  const action = type === "owner"
    ? { type, owner: document.getElementById("rule-owner").value }
    : { type, team: document.getElementById("rule-team").value, strategy: document.getElementById("rule-strategy").value };
  const rule = {
    id: document.getElementById("rule-id").value.trim(),
    name: document.getElementById("rule-name").value.trim(),
    priority,
    enabled: document.getElementById("rule-enabled").checked,
    conditions,
    action,
  };
  return { rule, errors };
}

async function saveRule(e) {
  e.preventDefault();
  clearRuleErrors();
  const { rule, errors } = ruleFromForm();
  if (errors.length) return showRuleErrors(errors);
  try {
    if (editing && editing.id) {
      await call(`${A}/rules/${encodeURIComponent(editing.id)}`, { method: "PUT", json: rule, ifMatch: editing.etag });
    } else {
      await call(`${A}/rules`, { method: "POST", json: rule });
    }
  } catch (err) {
    if (err instanceof Unauthorized) return signIn(t("sign_in.invalid"));
    if (err.status === 412) {
      document.getElementById("rule-form-error").textContent = t("rule.changed_meanwhile");
      return;
    }
    return showRuleErrors(err.details && err.details.length ? err.details : [{ message: err.message }]);
  }
  closeRuleForm();
  await assignment();
  document.getElementById("assignment-error").textContent = "";
  document.getElementById("assignment-saved").textContent = t("rule.saved", { id: rule.id });
}

function closeRuleForm() {
  document.getElementById("rule-form").hidden = true;
  editing = null;
}

async function deleteRule() {
  if (!editing || !editing.id || !confirm(t("rule.confirm_delete", { id: editing.id }))) return;
  try {
    await call(`${A}/rules/${encodeURIComponent(editing.id)}`, { method: "DELETE", ifMatch: editing.etag });
  } catch (err) {
    if (err instanceof Unauthorized) return signIn(t("sign_in.invalid"));
    document.getElementById("rule-form-error").textContent = err.status === 412 ? t("rule.changed_meanwhile") : err.message;
    return;
  }
  closeRuleForm();
  assignment();
}

// Off duty and back: read the owner with its ETag, write it back with If-Match. The body leaves
// out `open_leads`, which is leadgate's count and stays as it is.
async function toggleOwner(id, status) {
  const at = "assignment-error";
  try {
    const got = await call(`${A}/owners/${encodeURIComponent(id)}`);
    const body = { ...got.body, status };
    delete body.open_leads;
    await call(`${A}/owners/${encodeURIComponent(id)}`, { method: "PUT", json: body, ifMatch: got.etag });
    await assignment();
    const row = document.querySelector(`#owners tr[data-owner="${CSS.escape(id)}"] button`);
    if (row) row.focus();
  } catch (e) {
    failed(e, at);
  }
}

async function preview(e) {
  e.preventDefault();
  const input = document.getElementById("preview-lead");
  const error = document.getElementById("preview-lead-error");
  const out = document.getElementById("preview-result");
  error.textContent = "";
  input.removeAttribute("aria-invalid");
  let lead;
  try {
    lead = JSON.parse(input.value);
    if (!lead || typeof lead !== "object" || Array.isArray(lead)) throw new Error(t("preview.not_object"));
  } catch (err) {
    error.textContent = t("preview.invalid", { error: err.message });
    input.setAttribute("aria-invalid", "true");
    return input.focus();
  }
  try {
    const connector = document.getElementById("preview-connector").value.trim();
    const got = await api(`${A}/preview`, { method: "POST", json: connector ? { lead, connector } : { lead } });
    lastRender = () => { renderAssignment(); renderPreview(got); };
    renderPreview(got);
  } catch (err) {
    if (err instanceof Unauthorized) return signIn(t("sign_in.invalid"));
    error.textContent = err.message;
    input.setAttribute("aria-invalid", "true");
  }
}

function renderPreview(got) {
  const out = document.getElementById("preview-result");
  out.replaceChildren();
  const verdict = document.createElement("p");
  verdict.id = "preview-verdict";
  const a = got.assignment;
  verdict.textContent = a ? t("preview.goes_to", { owner: a.owner, rule: a.rule_id, reason: a.reason }) : t("preview.nobody");
  out.appendChild(verdict);
  const list = document.createElement("ol");
  list.className = "trace";
  for (const r of got.rules || []) {
    const li = document.createElement("li");
    li.dataset.rule = r.rule_id;
    li.textContent = r.matched ? t("preview.rule_decides", { rule: r.rule_id })
      : t("preview.rule_skipped", { rule: r.rule_id, why: (r.why_not || []).join("; ") });
    list.appendChild(li);
  }
  out.appendChild(list);
  // Its segments and score, as a posted lead would get them, with every point explained.
  if (got.segments) {
    const p = document.createElement("p");
    p.id = "preview-segments";
    p.textContent = t("preview.segments", { segments: got.segments.map((s) => s.name || s.id).join(", ") || t("preview.none") });
    out.appendChild(p);
  }
  if (got.score) {
    const p = document.createElement("p");
    p.id = "preview-score";
    p.textContent = t("preview.score", { total: got.score.total });
    out.appendChild(p);
    const points = document.createElement("ul");
    points.className = "trace";
    for (const r of got.score.reasons) {
      const li = document.createElement("li");
      li.textContent = r.reason;
      points.appendChild(li);
    }
    out.appendChild(points);
  }
}

// The audit log, newest first, a page at a time.
let auditBefore = null;

async function loadAudit(fresh) {
  const body = document.querySelector("#audit tbody");
  const q = new URLSearchParams({ order: "newest", limit: String(AUDIT_PAGE) });
  if (!fresh && auditBefore) q.set("before", String(auditBefore));
  try {
    const page = await api(`${A}/audit?${q}`);
    if (fresh) body.replaceChildren();
    for (const e of page.entries) {
      const tr = document.createElement("tr");
      cell(tr, when(e.at));
      cell(tr, t(`audit.${e.action}`));
      cell(tr, t(`audit.kind.${e.kind}`));
      cell(tr, e.id);
      cell(tr, String(e.version), "n");
      body.appendChild(tr);
    }
    auditBefore = page.next_before;
    document.getElementById("audit-older").hidden = !auditBefore;
  } catch (e) {
    failed(e, "assignment-error");
  }
}

// Pages, and whether they refresh themselves.
const PAGES = {
  overview: [overview, true],
  connectors: [connectorsPage, true],
  quality: [quality, true],
  campaigns: [campaigns, false],
  import: [importPage, false],
  leads: [leadsPage, false],
  assignment: [assignment, false],
};

function route() {
  clearInterval(refresh);
  const page = (location.hash.replace(/^#\//, "") || "overview").split("?")[0];
  const [open, refreshes] = PAGES[page] || PAGES.overview;
  open();
  if (refreshes) refresh = setInterval(open, REFRESH_MS);
}

// The signed-in token: its name in the header, and what the pages offer it.
let me = null;

async function whoami() {
  me = await api("/v1/whoami");
  const who = document.getElementById("who");
  who.textContent = sessionStorage.getItem(TOKEN_KEY) ? t("signed_in_as", { name: me.name }) : "";
  document.getElementById("lead-reveal-label").hidden = !me.reads_pii;
  if (!me.reads_pii) document.getElementById("lead-reveal").checked = false;
}

async function start() {
  applyLanguage();
  document.getElementById("lang").addEventListener("change", (e) => {
    lang = e.target.value;
    localStorage.setItem(LANG_KEY, lang);
    applyLanguage();
  });
  document.getElementById("sign-in-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = document.getElementById("token").value.trim();
    if (!token) return signIn(t("sign_in.empty"));
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await whoami();
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      return signIn(err instanceof Unauthorized ? t("sign_in.invalid") : t("sign_in.unreachable", { error: err.message }));
    }
    document.getElementById("token").value = "";
    route();
    document.getElementById("main").focus();
  });
  document.getElementById("import-form").addEventListener("submit", upload);
  document.getElementById("stats-form").addEventListener("submit", (e) => {
    e.preventDefault();
    campaigns();
  });
  document.getElementById("funnel-form").addEventListener("submit", (e) => e.preventDefault());
  document.getElementById("funnel-by").addEventListener("change", campaigns);
  document.getElementById("stats-csv").addEventListener("click", () =>
    download(`/v1/stats?${statsQuery("csv")}`, "leadgate-stats.csv", "stats-error"));
  document.getElementById("lead-search").addEventListener("submit", findLead);
  const refilter = () => {
    connectorPage = 0;
    if (lastRender) lastRender();
  };
  document.getElementById("connector-filter").addEventListener("submit", (e) => e.preventDefault());
  document.getElementById("connector-name").addEventListener("input", refilter);
  document.getElementById("connector-state").addEventListener("change", refilter);
  document.getElementById("connectors-prev").addEventListener("click", () => {
    connectorPage -= 1;
    if (lastRender) lastRender();
  });
  document.getElementById("connectors-next").addEventListener("click", () => {
    connectorPage += 1;
    if (lastRender) lastRender();
  });
  document.getElementById("lead-reveal").addEventListener("change", (e) => {
    if (document.getElementById("lead-query").value.trim()) findLead(e);
  });
  document.getElementById("rule-form").addEventListener("submit", saveRule);
  document.getElementById("rule-new").addEventListener("click", () => editRule(null));
  document.getElementById("rule-cancel").addEventListener("click", () => {
    closeRuleForm();
    document.getElementById("rule-new").focus();
  });
  document.getElementById("rule-delete").addEventListener("click", deleteRule);
  document.getElementById("rule-action-type").addEventListener("change", showActionInputs);
  document.getElementById("preview-form").addEventListener("submit", preview);
  document.getElementById("audit-older").addEventListener("click", () => loadAudit(false));
  document.getElementById("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById("who").textContent = "";
    signIn();
  });
  window.addEventListener("hashchange", () => {
    if (!document.getElementById("sign-in").hidden) return;
    route();
  });
  // A gateway without a token lets everyone in; one with a token asks for it first.
  try {
    await whoami();
    route();
  } catch (e) {
    signIn(e instanceof Unauthorized ? "" : t("sign_in.unreachable", { error: e.message }));
  }
}

document.addEventListener("DOMContentLoaded", start);
