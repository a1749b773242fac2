// The morag-progress dashboard: no build step, no third-party code. The API key stays in this
// tab (sessionStorage) and goes only into Authorization headers; the event stream opens with a
// short-lived stream token, since EventSource cannot send headers.
//
// Every view has a URL (#/jobs?status=..., #/jobs/<id>, #/workers), so reload, back and
// sharing work. Lists, filters, search and counts come from the server a page at a time; the
// event stream only moves what is on screen and says when to ask again.
"use strict";

/** Whether the server exports job spans (its page says): a trace id shows only where a trace is. */
const TRACING = document.querySelector('meta[name="morag-tracing"]')?.content === "on";

const TERMINAL = new Set(["FINISHED", "FAILED", "CANCELLED"]);
const REQUEUABLE = new Set(["FAILED", "CANCELLED", "STALLED"]);
const STATUSES = [
  "PENDING", "WAITING_FOR_REMOTE_WORKER", "PROCESSING", "STALLED", "FINISHED", "FAILED",
  "CANCELLED",
];
const LABELS = { WAITING_FOR_REMOTE_WORKER: "WAITING" };
const PAGE = 50;
const HISTORY_PAGE = 25;
const CHART_POINTS = 10000;
const $ = (selector) => document.querySelector(selector);

const state = {
  key: sessionStorage.getItem("morag-progress-key"),
  // A read-only sign-in link carries a stream token in its fragment (never sent to servers).
  token: sessionStorage.getItem("morag-progress-token"),
  source: null,
  route: null,
  rows: new Map(), // id -> job on the current list page
  job: null, // the job whose page is open
  chart: [], // its changes, oldest first
  historyBefore: [null], // history pages, newest first: the `before` of each page seen
  names: new Map(), // parent id -> name, for links
  childrenCursor: null,
  timers: new Map(),
  seq: 0, // the latest list request: older answers are dropped
  workersSeq: 0,
  historySeq: 0,
  streams: 0, // event streams opened in this tab
};

// -- talking to the API ----------------------------------------------------------------------------

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: {
      Authorization: `Bearer ${state.key || state.token}`,
      ...(body ? { "Content-Type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401 && !state.key && state.token) {
    linkExpired(); // a read-only link's token ran out: stop, rather than knock on with it
    throw new Error("this link has expired");
  }
  if (!response.ok) {
    const detail = data && (data.detail || data.message) ? data.detail || data.message : response.statusText;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : "";
}

/** Run fn at most once per `ms` for `name` (the first call waits `ms`, later ones join it). */
function soon(name, fn, ms) {
  if (state.timers.has(name)) return;
  state.timers.set(name, setTimeout(() => { state.timers.delete(name); fn(); }, ms));
}

// -- small renderers -------------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "data") Object.assign(node.dataset, v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function clock(totalSeconds) {
  if (totalSeconds === null || totalSeconds === undefined || !isFinite(totalSeconds)) return "";
  const s = Math.max(0, Math.round(totalSeconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(r)}` : `${m}:${pad(r)}`;
}

const RELATIVE = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

function relative(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  const abs = Math.abs(seconds);
  if (abs < 10) return seconds > 0 ? "in a moment" : "just now";
  for (const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60]]) {
    if (abs >= size) return RELATIVE.format(Math.round(seconds / size), unit);
  }
  return RELATIVE.format(Math.round(seconds), "second");
}

/** A moment as this page writes every absolute date, in local time: "2026-12-02 18:21:36"
 * (the browser's locale made it "12/2/2026, 6:21:36 PM" in one place and 18:21:36 in another). */
function dateTime(value) {
  const at = new Date(value);
  const two = (n) => String(n).padStart(2, "0");
  return `${at.getFullYear()}-${two(at.getMonth() + 1)}-${two(at.getDate())} ` +
    `${two(at.getHours())}:${two(at.getMinutes())}:${two(at.getSeconds())}`;
}

/** A <time>: relative text, the absolute local and UTC time on hover. */
function when(iso) {
  if (!iso) return "";
  const local = dateTime(iso);
  return el("time", { datetime: iso, title: `${local} (${iso})`, data: { relative: "1" } }, relative(iso));
}

/** A <time> for a change in a history: its time of day, the full date on hover. */
function timeOfDay(iso) {
  const at = new Date(iso);
  const text = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 1, hour12: false });
  return el("time", { datetime: iso, title: `${dateTime(at)} (${iso})` }, text);
}

/** A length of time as an axis shows it: milliseconds or seconds when short, m:ss when long. */
/** Round steps for a time axis, in milliseconds: 1-2-5 below a second, then the clock's own. */
const TICK_STEPS = [
  1, 2, 5, 10, 20, 50, 100, 200, 500,
  1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5, 18e5,
  36e5, 72e5, 108e5, 216e5, 432e5, 864e5,
];

/** The round step that puts at most five ticks on a span (ms). */
function tickStep(span) {
  return TICK_STEPS.find((step) => span / step <= 5) || Math.ceil(span / 5 / 864e5) * 864e5;
}

/** A tick's label on an axis of round ``step``s. */
function tick(milliseconds, step) {
  if (step < 1000) return `${Math.round(milliseconds)} ms`;
  if (step < 60000) return `${Math.round(milliseconds / 1000)} s`;
  return clock(milliseconds / 1000);
}

function refreshTimes() {
  for (const node of document.querySelectorAll("time[data-relative]")) {
    node.textContent = relative(node.dateTime);
  }
}

function duration(job) {
  if (!job.start_date) return "";
  const end = job.end_date ? Date.parse(job.end_date) : TERMINAL.has(job.status) ? Date.parse(job.updated_at) : Date.now();
  return clock((end - Date.parse(job.start_date)) / 1000);
}

const BASIS = {
  live: "from this job's pace",
  history: "from finished jobs of its kind",
  blend: "from this job's pace and finished jobs of its kind",
};

/** Seconds without a report before a running job's estimate gives way to the silence. */
const SILENT_AFTER = 30;

/** How long a running or stalled job's worker has sent nothing (seconds), once that is at
 * least ``SILENT_AFTER``; else null. */
function silentFor(job) {
  if ((job.status !== "PROCESSING" && job.status !== "STALLED") || !job.last_seen_at) return null;
  const seconds = (Date.now() - Date.parse(job.last_seen_at)) / 1000;
  return seconds >= SILENT_AFTER ? seconds : null;
}

function silenceText(seconds) {
  return `no report for ${clock(seconds)}`;
}

/** The silence, counting (``refreshSilences``): an estimate that went on counting down for a
 * job nobody hears from would look live. */
function silence(job) {
  return el(
    "span",
    { class: "silent", data: { silentSince: job.last_seen_at }, title: `nothing from the worker since ${dateTime(job.last_seen_at)}` },
    silenceText(silentFor(job)),
  );
}

function refreshSilences() {
  for (const node of document.querySelectorAll("[data-silent-since]")) {
    node.textContent = silenceText((Date.now() - Date.parse(node.dataset.silentSince)) / 1000);
  }
}

/** The server's estimate: time left (its p10-p90 range and basis on hover), or for a queued
 * job when it is expected to start; the silence instead once the worker has gone quiet. */
function eta(job) {
  if (silentFor(job) !== null) return silence(job);
  if (job.status === "WAITING_FOR_REMOTE_WORKER" && job.expected_start_at) {
    return el("span", { title: `expected to start ${dateTime(job.expected_start_at)}` }, `starts ${relative(job.expected_start_at)}`);
  }
  if (job.status !== "PROCESSING" || job.eta_seconds === null || job.eta_seconds === undefined) return "";
  const range = `${clock(job.eta_low_seconds)}–${clock(job.eta_high_seconds)}`;
  return el("span", { title: `likely ${range} (p10–p90), ${BASIS[job.eta_basis] || ""}` }, clock(job.eta_seconds));
}

function etaFact(job) {
  if (silentFor(job) !== null) return silence(job);
  if (job.status === "WAITING_FOR_REMOTE_WORKER" && job.expected_start_at) {
    return el("span", {}, "expected to start ", when(job.expected_start_at));
  }
  if (job.status !== "PROCESSING" || job.eta_seconds === null || job.eta_seconds === undefined) return null;
  return `${clock(job.eta_seconds)} left (likely ${clock(job.eta_low_seconds)}–${clock(job.eta_high_seconds)}; ${BASIS[job.eta_basis] || ""})`;
}

// A worker's state, worded and coloured as the job states it mirrors (running as PROCESSING,
// stalled as STALLED; idle and offline grey, offline struck through).
const WORKER_BADGES = { running: "PROCESSING", stalled: "STALLED", idle: "idle", offline: "offline" };

function workerBadge(state) {
  return el("span", { class: `badge ${WORKER_BADGES[state] || ""}`, title: state }, state);
}

function badge(status) {
  return el("span", { class: `badge ${status}`, title: status }, LABELS[status] || status);
}

// How far along in time a running job is, from its kind's history (time_progress), where it
// differs from its percentage by 5 points or more: uneven stages (docs/eta.md).
function inTime(job) {
  const t = job.time_progress;
  if (job.status !== "PROCESSING" || !Number.isInteger(t) || Math.abs(t - job.percentage) < 5) return null;
  return el("span", { class: "in-time", title: `Jobs of this kind had spent ${t}% of their time when they reached ${job.percentage}%` }, ` · ${t}% of its time`);
}

// A run's children it expects but has not got yet count too (docs/ranks.md).
function childCount(job) {
  return Math.max(job.children || 0, job.expected_children || 0);
}

// A run's stragglers, a rank flagged as one, or a job at risk: the server's sweeps decide
// (docs/ranks.md, docs/deadlines.md).
function straggling(job) {
  const running = job.status === "PROCESSING" || job.status === "STALLED";
  if (job.at_risk === "deadline" && running) return el("span", { class: "badge at-risk", title: "Likely to miss its deadline" }, "at risk");
  if (job.at_risk === "long" && running) return el("span", { class: "badge longer", title: "Running longer than jobs of its kind usually take" }, "longer than usual");
  if (job.straggler) return el("span", { class: "badge straggler", title: "Behind its sibling jobs' median for a while" }, "straggler");
  if (job.stragglers > 0) return el("span", { class: "badge straggler", title: "Child jobs behind their siblings' median for a while" }, `${job.stragglers} straggling`);
  return null;
}

function bar(job) {
  return el(
    "span", { class: `bar ${job.status}` },  // coloured as its status: a failed job's is red
    el("progress", { max: 100, value: job.percentage, "aria-label": `${job.document_name} progress` }),
    el("span", { class: "pct" }, `${job.percentage}%`),
    inTime(job),
  );
}

function jobLink(job) {
  return el("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.document_name);
}

// -- signing in and the stream -------------------------------------------------------------------

async function signIn(key) {
  state.key = key;
  await openStream(); // throws on a wrong key: nothing is kept then
  sessionStorage.setItem("morag-progress-key", key);
  sessionStorage.removeItem("morag-progress-token");
  state.token = null;
  showApp();
}

async function signInWithToken(token) {
  state.token = token;
  await api("GET", "/api/v1/jobs?limit=1"); // throws on an expired link
  sessionStorage.setItem("morag-progress-token", token);
  await openStream();
  showApp();
}

function showApp() {
  $("#signin").hidden = true;
  $("#nav").hidden = false;
  $("#signout").hidden = false;
  route();
}

function linkExpired() {
  signOut();
  $("#signin-error").textContent = "This sign-in link has expired: sign in with a key.";
}

function signOut() {
  if (state.source) state.source.close();
  sessionStorage.removeItem("morag-progress-key");
  sessionStorage.removeItem("morag-progress-token");
  Object.assign(state, { key: null, token: null, source: null, job: null, route: null, lostAt: null });
  document.body.classList.remove("disconnected");
  state.rows.clear();
  for (const view of ["#jobs-view", "#job-view", "#workers-view", "#nav", "#signout"]) $(view).hidden = true;
  $("#signin").hidden = false;
  $("#connection").textContent = "Signed out";
  $("#key").focus();
}

async function openStream() {
  const token = state.key ? (await api("POST", "/api/v1/stream-tokens")).token : state.token;
  if (state.source) state.source.close();
  // A new stream starts with a snapshot, so nothing missed meanwhile is lost; within one
  // stream the browser itself resumes with Last-Event-ID.
  const source = new EventSource(`/api/v1/events?token=${encodeURIComponent(token)}`);
  state.source = source;
  source.addEventListener("open", () => {
    document.body.classList.remove("disconnected");
    state.lostAt = null;
    $("#connection").textContent = state.key ? "Live" : "Live (read-only link: sign in with a key to act)";
  });
  const again = state.streams++ > 0;
  // A later stream's snapshot follows a gap (a new token, a restarted server): ask again.
  source.addEventListener("snapshot", () => { if (again) refreshView(); });
  source.addEventListener("progress", (event) => onChange(JSON.parse(event.data)));
  source.addEventListener("error", () => {
    if (state.source !== source) return;
    // What is on screen stops moving: say since when, and grey it, until the stream is back.
    state.lostAt = state.lostAt || new Date();
    document.body.classList.add("disconnected");
    $("#connection").textContent = `Disconnected since ${dateTime(state.lostAt).slice(11)}: reconnecting…`;
    if (source.readyState === EventSource.CLOSED) {
      if (state.key) reconnect(1000); // the token expired or the server restarted
      else linkExpired(); // a read-only link cannot make a new token
    }
  });
}

/** A new stream token and stream after ``delay`` ms, trying again (up to 30 s apart) until
 * the server answers or the user signs out. */
function reconnect(delay) {
  setTimeout(() => {
    if (!state.key) return;
    openStream().catch(() => reconnect(Math.min(30000, delay * 2)));
  }, delay);
}

/** A change its worker made (a report, a heartbeat that woke the job, a claim) says when the
 * worker was last heard from; the server's own changes (a stall) do not. */
function seen(event) {
  return ["report", "start", "claim"].includes(event.action) ? { last_seen_at: event.recorded_at } : {};
}

/** One applied change: move what is on screen now, ask the server again soon. */
function onChange(event) {
  const view = state.route && state.route.view;
  if (view === "jobs") {
    const job = state.rows.get(event.job_id);
    if (job) {
      Object.assign(job, {
        status: event.status, percentage: event.percentage, summary: event.message,
        stage: event.stage, updated_at: event.recorded_at, ...seen(event),
      });
      const tr = document.querySelector(`#jobs tr[data-job-id="${CSS.escape(job.id)}"]`);
      if (tr) tr.replaceWith(jobRow(job));
    }
    soon("list", loadJobs, 1000);
  } else if (view === "job" && state.job) {
    const job = state.job;
    if (event.job_id === job.id) {
      Object.assign(job, {
        status: event.status, percentage: event.percentage, summary: event.message,
        stage: event.stage, attempt: event.attempt, updated_at: event.recorded_at, ...seen(event),
      });
      state.chart.push(event);
      renderJob();
      soon("job", () => loadJob(job.id, false), 1000);
    } else if (job.children) {
      soon("children", () => loadChildren(true), 1000);
    }
  } else if (view === "workers") {
    soon("workers", loadWorkers, 2000);
  }
}

// -- routes -----------------------------------------------------------------------------------------

function parseRoute() {
  const hash = location.hash.replace(/^#/, "") || "/jobs";
  const [path, search = ""] = hash.split("?");
  const params = new URLSearchParams(search);
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "workers") return { view: "workers", params };
  if (parts[0] === "jobs" && parts.length > 1) {
    let id = parts.slice(1).join("/");
    try { id = decodeURIComponent(id); } catch { /* not an encoded id: take it as written */ }
    return { view: "job", id, params };
  }
  return { view: "jobs", params };
}

function listHash(changes) {
  const params = new URLSearchParams(state.lastList || "");
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === "" || v === false) params.delete(k); else params.set(k, v);
  }
  const text = params.toString();
  return `#/jobs${text ? `?${text}` : ""}`;
}

function go(hash) {
  if (location.hash !== hash) location.hash = hash; // hashchange routes
}

function route() {
  if ($("#signin").hidden === false) return;
  state.route = parseRoute();
  const view = state.route.view;
  $("#jobs-view").hidden = view !== "jobs";
  $("#job-view").hidden = view !== "job";
  $("#workers-view").hidden = view !== "workers";
  $("#nav-jobs").toggleAttribute("aria-current", view !== "workers");
  $("#nav-workers").toggleAttribute("aria-current", view === "workers");
  if (view !== "job") state.job = null;
  refreshView(true);
}

function refreshView(first) {
  const r = state.route;
  if (!r) return;
  if (r.view === "jobs") {
    state.lastList = r.params.toString();
    loadJobs();
  } else if (r.view === "job") {
    loadJob(r.id, first === true);
  } else {
    loadWorkers();
  }
}

// -- the job list --------------------------------------------------------------------------------

async function loadJobs() {
  const p = parseRoute().params;
  if (parseRoute().view !== "jobs") return;
  const seq = ++state.seq;
  const search = p.get("q") || "";
  const children = p.get("children") === "1";
  const filters = {
    status: p.get("status"), document_type: p.get("type"), q: search,
    top_level: children || search ? null : "true",
  };
  $("#search").value = document.activeElement === $("#search") ? $("#search").value : search;
  $("#show-children").checked = children;
  // The page and the counts paint as each arrives: counting a large store takes longer.
  api("GET", `/api/v1/stats${query({ document_type: filters.document_type, q: search, top_level: filters.top_level })}`)
    .then((stats) => {
      if (seq !== state.seq) return;
      renderCounts(stats, p);
      renderTypes(stats, p.get("type") || "");
    })
    .catch(() => {});
  try {
    const page = await api("GET", `/api/v1/jobs${query({ ...filters, limit: PAGE, cursor: p.get("cursor") })}`);
    if (seq !== state.seq) return; // a newer request answers
    $("#jobs-error").textContent = "";
    state.rows = new Map(page.jobs.map((job) => [job.id, job]));
    $("#jobs tbody").replaceChildren(...page.jobs.map(jobRow));
    const filtered = p.get("status") || p.get("type") || search;
    $("#empty").hidden = page.jobs.length > 0;
    $("#empty").textContent = filtered ? "No jobs match these filters." : "No jobs yet.";
    $("#older").hidden = !page.next_cursor;
    if (page.next_cursor) $("#older").href = listHash({ cursor: page.next_cursor });
    $("#newest").hidden = !p.get("cursor");
    $("#newest").href = listHash({ cursor: null });
  } catch (error) {
    if (seq === state.seq) $("#jobs-error").textContent = `Could not load jobs: ${error.message}`;
  }
}

function renderCounts(stats, p) {
  const active = p.get("status") || "";
  const link = (status, label, n) => el(
    "a",
    {
      href: listHash({ status, cursor: null }),
      class: `count ${status || "ALL"}`,
      ...(active === status ? { "aria-current": "true" } : {}),
    },
    el("span", { class: "label" }, label), " ", el("span", { class: "n" }, String(n)),
  );
  const links = [link("", "All", stats.total)];
  for (const status of STATUSES) {
    const n = stats.by_status[status] || 0;
    if (n || active === status) links.push(link(status, LABELS[status] || status, n));
  }
  $("#counts").replaceChildren(...links);
}

function renderTypes(stats, active) {
  const select = $("#type-filter");
  const types = new Set([...Object.keys(stats.by_document_type), ...(active ? [active] : [])]);
  const options = [new Option("All", "")].concat([...types].sort().map((t) => new Option(t, t)));
  select.replaceChildren(...options);
  select.value = active;
}

function jobRow(job) {
  const name = el("div", { class: "name" }, jobLink(job));
  const sub = el("div", { class: "sub" }, el("code", {}, job.id), ` · ${job.document_type}`);
  if (job.children || job.expected_children) sub.append(` · ${job.children_done}/${childCount(job)} child jobs done`);
  if (job.parent_id) sub.append(" · child of ", el("a", { href: `#/jobs/${encodeURIComponent(job.parent_id)}` }, job.parent_id));
  const status = el("td", { data: { label: "Status" } }, badge(job.status));
  const lag = straggling(job);
  if (lag) status.append(" ", lag);
  if (job.cancel_requested && !TERMINAL.has(job.status)) status.append(el("div", { class: "sub" }, "cancel requested"));
  return el(
    "tr", { data: { jobId: job.id } },
    el("td", { data: { label: "Job" } }, name, sub),
    status,
    el("td", { data: { label: "Progress" } }, bar(job)),
    el("td", { class: "message", data: { label: "Message" } }, job.status === "FAILED" && job.error ? job.error : job.summary || ""),
    el("td", { data: { label: "Created" } }, when(job.created_at)),
    el("td", { class: "num", data: { label: "Duration" } }, duration(job)),
    el("td", { class: "num", data: { label: "ETA" } }, eta(job)),
  );
}

// -- one job's page ----------------------------------------------------------------------------

async function loadJob(jobId, first) {
  try {
    const job = await api("GET", `/api/v1/jobs/${encodeURIComponent(jobId)}`);
    if (!state.route || state.route.view !== "job" || state.route.id !== jobId) return;
    const fresh = !state.job || state.job.id !== job.id;
    state.job = job;
    $("#job-alert").textContent = "";
    if (fresh) {
      $("#share-result").hidden = true; // another job's link is not this one's
      state.historyBefore = [null];
      state.chart = [];
      state.childrenCursor = null;
      const chart = await api("GET", `/api/v1/jobs/${encodeURIComponent(jobId)}/history?order=desc&limit=${CHART_POINTS}`);
      if (!state.job || state.job.id !== jobId) return; // another job's page by now
      state.chart = chart.reverse();
      loadHistory();
      loadChildren(false);
    } else if (state.historyBefore.length === 1) {
      loadHistory(); // on the newest page: show the changes that came since
    }
    renderJob();
    if (first) $("#job-view").focus();
  } catch (error) {
    state.job = null;
    $("#job-title").textContent = jobId;
    $("#job-status").replaceChildren();
    $("#facts").replaceChildren();
    $("#job-alert").textContent = `Could not load this job: ${error.message}`;
  }
}

function fact(name, value) {
  if (value === null || value === undefined || value === "") return [];
  return [el("dt", {}, name), el("dd", {}, value)];
}

function renderJob() {
  const job = state.job;
  if (!job) return;
  document.title = `${job.document_name} · morag-progress`;
  $("#back").href = listHash({});
  $("#job-title").textContent = job.document_name;
  $("#job-status").replaceChildren(badge(job.status));
  const lag = straggling(job);
  if (lag) $("#job-status").append(" ", lag);
  const asking = job.cancel_requested && !TERMINAL.has(job.status);
  $("#cancel-note").hidden = !asking;
  $("#cancel-note").textContent = asking
    ? "Cancel requested: the worker stops when it sees the request in its next report."
    : "";
  $("#job-error-text").hidden = !job.error;
  $("#job-error-text").textContent = job.error ? `Error: ${job.error}` : "";
  $("#cancel").hidden = !state.key || TERMINAL.has(job.status) || job.cancel_requested;
  $("#requeue").hidden = !state.key || !(REQUEUABLE.has(job.status) && job.claimed_by !== null);
  $("#share").hidden = !state.key;
  const parent = job.parent_id
    ? el("a", { href: `#/jobs/${encodeURIComponent(job.parent_id)}`, id: "parent-link" }, state.names.get(job.parent_id) || job.parent_id)
    : null;
  if (job.parent_id && !state.names.has(job.parent_id)) nameParent(job.parent_id);
  const counts = job.total !== null && job.total !== undefined ? `${job.current ?? 0} of ${job.total}` : null;
  $("#facts").replaceChildren(
    ...fact("Id", el("code", {}, job.id)),
    ...fact("Type", job.document_type),
    ...fact("Document", job.document_id),
    ...fact("Progress", bar(job)),
    ...fact("Items", counts),
    ...fact("Message", job.error && job.summary === job.error ? null : job.summary),  // said once
    ...fact("Stage", job.stage),
    ...fact("Attempt", String(job.attempt)),
    ...fact("Deadline", job.deadline ? deadlineFact(job) : null),
    ...fact("Checkpoint", Number.isInteger(job.checkpoint_percentage) ? `saved at ${job.checkpoint_percentage}%${["FAILED", "CANCELLED", "STALLED"].includes(job.status) ? ": a requeue resumes there" : ""}` : null),
    ...fact("Worker", job.worker_id),
    ...fact("Parent", parent),
    ...fact("Child jobs", job.children || job.expected_children ? `${job.children_done} of ${childCount(job)} done${job.children < childCount(job) ? ` (${job.children} started)` : ""}` : null),
    ...fact("Slowest", job.slowest_child ? slowestLink(job.slowest_child) : null),
    ...fact("Created", when(job.created_at)),
    ...fact("Created by", job.created_by ? actor(job.created_by, job.created_by_name) : null),
    ...fact("Trace", TRACING && job.traceparent ? el("code", { title: `traceparent ${job.traceparent}` }, job.traceparent.slice(3, 35)) : null),
    ...fact("Started", when(job.start_date)),
    ...fact("Updated", when(job.updated_at)),
    ...fact("Ended", when(job.end_date)),
    ...fact("Duration", duration(job)),
    ...fact("Rate", job.rate > 0 && job.status === "PROCESSING" ? `${job.rate.toFixed(2)} %/s` : null),
    ...fact(job.status === "PROCESSING" || job.status === "STALLED" ? "ETA" : "Start", etaFact(job)),
    ...fact("Metadata", Object.keys(job.metadata || {}).length ? el("code", { class: "metadata" }, JSON.stringify(job.metadata, null, 1)) : null),
  );
  drawChart(state.chart, job);
}

function deadlineFact(job) {
  const risky = job.at_risk === "deadline" && (job.status === "PROCESSING" || job.status === "STALLED");
  return el("span", { class: risky ? "late" : "" }, dateTime(job.deadline), " (", when(job.deadline), ")", risky ? " · at risk" : "");
}

// A read-only link to this job for people without a key (docs/dashboard.md): made on the
// server, shown once, to copy.
async function share() {
  const job = state.job;
  if (!job) return;
  try {
    const link = await api("POST", `/api/v1/jobs/${encodeURIComponent(job.id)}/share-links`);
    $("#share-url").value = location.origin + link.url;
    $("#share-badge").textContent = location.origin + link.badge_url;
    $("#share-result").hidden = false;
    $("#share-url").focus();
    $("#share-url").select();
  } catch (error) {
    $("#job-alert").textContent = `Could not make a share link: ${error.message}`;
  }
}

function slowestLink(child) {
  const link = el("a", { href: `#/jobs/${encodeURIComponent(child.id)}`, id: "slowest-link" }, child.id);
  return el("span", {}, link, ` at ${child.percentage}%`, child.straggler ? " · straggler" : "");
}

async function nameParent(parentId) {
  const parent = await api("GET", `/api/v1/jobs/${encodeURIComponent(parentId)}`).catch(() => null);
  if (!parent) return;
  state.names.set(parentId, parent.document_name);
  const link = $("#parent-link");
  if (link && state.job && state.job.parent_id === parentId) link.textContent = parent.document_name;
}

/** What kind of change a history row records (the API's `action`), as a person says it. */
const ACTIONS = {
  create: "created",
  report: "report",
  start: "started (heartbeat)",
  claim: "claimed",
  cancel: "cancel requested",
  requeue: "requeued",
  stall: "stalled",
  abandon: "given up",
  rollup: "from child jobs",
  straggler: "straggler flagged",
  at_risk: "at risk",
};

/** Who made a change: an API key (`role:key id`, shown by its name when it has one), the
 * server, or a local process. */
function actor(who, name) {
  if (!who) return el("span", { class: "hint", title: "recorded before the audit trail" }, "unknown");
  if (name) return el("span", { class: "actor-name", title: who }, name);
  return el("code", { title: who }, who);
}

async function loadHistory() {
  const job = state.job;
  if (!job) return;
  const before = state.historyBefore[state.historyBefore.length - 1];
  const seq = ++state.historySeq;
  const path = `/api/v1/jobs/${encodeURIComponent(job.id)}/history${query({ order: "desc", before, limit: HISTORY_PAGE + 1 })}`;
  const events = await api("GET", path).catch((error) => {
    $("#job-alert").textContent = `Could not load the history: ${error.message}`;
    return null;
  });
  if (!events || seq !== state.historySeq || !state.job || state.job.id !== job.id) return;
  const page = events.slice(0, HISTORY_PAGE);
  $("#history tbody").replaceChildren(...page.map((e) => el(
    "tr", {},
    el("td", { data: { label: "When" } }, timeOfDay(e.timestamp)),
    el("td", { data: { label: "Status" } }, badge(e.status)),
    el("td", { class: "num", data: { label: "Progress" } }, `${e.percentage}%`),
    el("td", { class: "num", data: { label: "Attempt" } }, String(e.attempt)),
    el("td", { data: { label: "Change" } }, ACTIONS[e.action] || e.action || ""),
    el("td", { class: "actor", data: { label: "By" } }, actor(e.actor, e.actor_name)),
    el("td", { class: "message", data: { label: "Message" } }, e.message || ""),
  )));
  $("#history-next").hidden = events.length <= HISTORY_PAGE;
  if (page.length) $("#history-next").dataset.before = page[page.length - 1].id;
  $("#history-first").hidden = state.historyBefore.length <= 1;
}

async function loadChildren(again) {
  const job = state.job;
  if (!job) return;
  $("#children-section").hidden = !job.children;
  if (!job.children) return;
  const cursor = again ? null : state.childrenCursor;
  const page = await api("GET", `/api/v1/jobs${query({ parent_id: job.id, limit: PAGE, cursor })}`).catch(() => null);
  if (!page || !state.job || state.job.id !== job.id) return;
  const rows = page.jobs.map((child) => el(
    "tr", { data: { jobId: child.id } },
    el("td", { data: { label: "Job" } }, jobLink(child), el("div", { class: "sub" }, el("code", {}, child.id))),
    el("td", { data: { label: "Status" } }, badge(child.status), straggling(child) ? " " : null, straggling(child)),
    el("td", { data: { label: "Progress" } }, bar(child)),
    el("td", { class: "message", data: { label: "Message" } }, child.summary || ""),
  ));
  if (cursor) $("#children tbody").append(...rows); else $("#children tbody").replaceChildren(...rows);
  state.childrenCursor = page.next_cursor;
  $("#more-children").hidden = !page.next_cursor;
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Percent (0-100) against time since the first change, with labelled axes. */
function drawChart(history, job) {
  const chart = $("#chart");
  const left = 62, right = 628, top = 12, bottom = 186;
  const parts = [];
  for (const pct of [0, 25, 50, 75, 100]) {
    const y = bottom - (pct / 100) * (bottom - top);
    parts.push(svg("line", { x1: left, x2: right, y1: y, y2: y, class: "grid" }));
    parts.push(svg("text", { x: left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, `${pct}%`));
  }
  parts.push(svg("line", { x1: left, x2: left, y1: top, y2: bottom, class: "axis" }));
  parts.push(svg("line", { x1: left, x2: right, y1: bottom, y2: bottom, class: "axis" }));
  if (!history.length) {
    parts.push(svg("text", { x: (left + right) / 2, y: (top + bottom) / 2, class: "tick", "text-anchor": "middle" }, "No changes yet"));
    chart.replaceChildren(...parts);
    $("#chart-caption").textContent = "Progress over time: no changes yet";
    return;
  }
  // Plotted by each change's own time (a worker's report may be stamped before the job's
  // creation was recorded), oldest first.
  history = [...history].sort((a, b) => Date.parse(a.timestamp) - Date.parse(b.timestamp) || a.id - b.id);
  const times = history.map((e) => Date.parse(e.timestamp));
  const start = times[0];
  const last = TERMINAL.has(job.status) ? times[times.length - 1] : Math.max(times[times.length - 1], Date.now());
  const span = Math.max(1, last - start);
  const x = (t) => left + ((t - start) / span) * (right - left);
  const y = (pct) => bottom - (pct / 100) * (bottom - top);
  // Round ticks (0, 2 s, 4 s...), not the span's quarters (193 ms, 386 ms...).
  const step = tickStep(span);
  for (let t = 0; t <= span; t += step) {
    const anchor = t === 0 ? "start" : x(start + t) > right - 24 ? "end" : "middle";
    parts.push(svg("text", { x: x(start + t), y: bottom + 16, class: "tick", "text-anchor": anchor }, tick(t, step)));
  }
  parts.push(svg("text", { x: (left + right) / 2, y: bottom + 32, class: "axis-title", "text-anchor": "middle" }, "time since the first change"));
  // Progress holds between changes: a step line.
  const points = [];
  history.forEach((e, i) => {
    if (i) points.push(`${x(times[i])},${y(history[i - 1].percentage)}`);
    points.push(`${x(times[i])},${y(e.percentage)}`);
  });
  points.push(`${x(last)},${y(history[history.length - 1].percentage)}`);
  parts.push(svg("polyline", { points: points.join(" "), class: `line ${job.status}` }));
  chart.replaceChildren(...parts);
  const end = history[history.length - 1];
  $("#chart-caption").textContent =
    `Progress over time: ${history.length} changes since ${dateTime(start)}, now ${end.percentage}% (${end.status})`;
}

// -- actions ------------------------------------------------------------------------------------------

function confirmAction(title, text, yes) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-yes").textContent = yes;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    $("#confirm-no").focus();
  });
}

async function act(verb) {
  const job = state.job;
  if (!job) return;
  const asks = verb === "cancel"
    ? ["Cancel this job?", `${job.document_name} (${job.id}) is ${job.status}. A job not yet running ends now; a running one stops when its worker sees the request.`, "Cancel job"]
    : ["Requeue this job?", Number.isInteger(job.checkpoint_percentage)
      ? `${job.document_name} (${job.id}) goes back to the queue at ${job.checkpoint_percentage}%, where its checkpoint was saved, and the next remote worker to claim it resumes from that checkpoint in attempt ${job.attempt + 1}.`
      : `${job.document_name} (${job.id}) goes back to the queue at 0% and the next remote worker to claim it starts attempt ${job.attempt + 1}.`, "Requeue"];
  if (!(await confirmAction(...asks))) return;
  try {
    const changed = await api("POST", `/api/v1/jobs/${encodeURIComponent(job.id)}/${verb}`);
    if (!state.job || state.job.id !== job.id) return;
    state.job = { ...job, ...changed };
    $("#job-alert").textContent = "";
    renderJob();
    loadJob(job.id, false);
  } catch (error) {
    $("#job-alert").textContent = error.message;
  }
}

// -- workers ---------------------------------------------------------------------------------------

async function loadWorkers() {
  if (!state.route || state.route.view !== "workers") return;
  const seq = ++state.workersSeq;
  try {
    const data = await api("GET", "/api/v1/workers");
    if (seq !== state.workersSeq) return; // a newer request answers
    $("#workers-error").textContent = "";
    $("#workers tbody").replaceChildren(...data.workers.map((w) => el(
      "tr", { data: { worker: w.worker_id } },
      el("td", { data: { label: "Worker" } }, el("code", {}, w.worker_id)),
      el("td", { data: { label: "State" } }, workerBadge(w.state)),
      el("td", { data: { label: "Last seen" } }, when(w.last_seen)),
      el("td", { data: { label: "Current job" } }, w.current_job
        ? el("span", {}, jobLink(w.current_job), " ", bar(w.current_job))
        : w.stalled_job
          ? el("span", {}, "silent on ", jobLink(w.stalled_job))
          : el("span", { class: "sub" }, "none")),
      el("td", { class: "num", data: { label: "Finished (1 h)" } }, String(w.finished)),
      el("td", { class: `num${w.failed ? " failed" : ""}`, data: { label: "Failed (1 h)" } }, String(w.failed)),
    )));
    $("#workers-empty").hidden = data.workers.length > 0;
  } catch (error) {
    $("#workers-error").textContent = `Could not load workers: ${error.message}`;
  }
}

// -- wiring ----------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#signin").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("#signin-error").textContent = "";
    try { await signIn($("#key").value.trim()); $("#key").value = ""; }
    catch (error) { state.key = null; $("#signin-error").textContent = `Sign-in failed: ${error.message}`; }
  });
  $("#signout").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  $("#type-filter").addEventListener("change", (e) => go(listHash({ type: e.target.value, cursor: null })));
  $("#show-children").addEventListener("change", (e) => go(listHash({ children: e.target.checked ? "1" : null, cursor: null })));
  let typing = null;
  $("#search").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => go(listHash({ q: e.target.value.trim(), cursor: null })), 300);
  });
  $("#search").addEventListener("keydown", (e) => {
    if (e.key === "Enter") { clearTimeout(typing); go(listHash({ q: e.target.value.trim(), cursor: null })); }
  });
  $("#cancel").addEventListener("click", () => act("cancel"));
  $("#requeue").addEventListener("click", () => act("requeue"));
  $("#share").addEventListener("click", share);
  $("#history-next").addEventListener("click", () => {
    const next = $("#history-next");
    if (next.disabled) return; // the page before is still coming: one step a click
    next.disabled = true;
    state.historyBefore.push(Number(next.dataset.before));
    loadHistory().finally(() => { next.disabled = false; });
  });
  $("#history-first").addEventListener("click", () => { state.historyBefore = [null]; loadHistory(); });
  $("#more-children").addEventListener("click", () => loadChildren(false));
  setInterval(refreshTimes, 15000);
  setInterval(refreshSilences, 1000);
  setInterval(() => { if (state.route && state.route.view === "workers") loadWorkers(); }, 10000);

  const link = new URLSearchParams(location.hash.replace(/^#/, "")).get("token");
  if (link) {
    history.replaceState(null, "", `${location.pathname}#/jobs`); // the token leaves the address bar
    signInWithToken(link).catch(() => {
      signOut();
      $("#signin-error").textContent = "This sign-in link has expired: sign in with a key.";
    });
  } else if (state.key) signIn(state.key).catch(signOut);
  else if (state.token) signInWithToken(state.token).catch(signOut);
  else $("#key").focus();
});
