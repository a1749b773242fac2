// The morag-progress dashboard: no build step, no third-party code. The API key stays in this
// tab (sessionStorage) and goes only into Authorization headers; event streams open with a
// short-lived stream token, since EventSource cannot send headers.
"use strict";

const TERMINAL = new Set(["FINISHED", "FAILED", "CANCELLED"]);
const SMOOTHING = 0.3; // tqdm's default
const $ = (selector) => document.querySelector(selector);

const state = {
  key: sessionStorage.getItem("morag-progress-key"),
  // A read-only sign-in link carries a stream token in its fragment (never sent to servers).
  token: sessionStorage.getItem("morag-progress-token"),
  jobs: new Map(), // id -> job (as the API returns it, moved by progress events)
  last: new Map(), // id -> [seconds, percentage] of the previous event, for the rate
  source: null,
  lastEventId: null,
  detail: null,
};

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
  if (!response.ok) {
    const detail = data && data.detail ? data.detail : response.statusText;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return data;
}

function seconds(value) {
  if (value === null || value === undefined || !isFinite(value)) return "";
  const s = Math.max(0, Math.round(value));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(r)}` : `${m}:${pad(r)}`;
}

// -- signing in and the stream -------------------------------------------------------------------

async function signIn(key) {
  state.key = key;
  await openStream(); // throws on a wrong key: nothing is kept then
  sessionStorage.setItem("morag-progress-key", key);
  sessionStorage.removeItem("morag-progress-token");
  state.token = null;
  showJobs();
}

async function signInWithToken(token) {
  state.token = token;
  await api("GET", "/api/v1/jobs?limit=1"); // throws on an expired link
  sessionStorage.setItem("morag-progress-token", token);
  await openStream();
  showJobs();
}

function showJobs() {
  $("#signin").hidden = true;
  $("#jobs-section").hidden = false;
}

function signOut() {
  if (state.source) state.source.close();
  sessionStorage.removeItem("morag-progress-key");
  sessionStorage.removeItem("morag-progress-token");
  Object.assign(state, { key: null, token: null, source: null, lastEventId: null, detail: null });
  state.jobs.clear();
  render();
  $("#signin").hidden = false;
  $("#jobs-section").hidden = true;
  $("#detail").hidden = true;
  $("#connection").textContent = "Signed out";
  $("#key").focus();
}

async function openStream() {
  const token = state.key ? (await api("POST", "/api/v1/stream-tokens")).token : state.token;
  if (state.source) state.source.close();
  // A new stream starts with a snapshot of every job, so nothing missed meanwhile is lost;
  // within one stream the browser itself resumes with Last-Event-ID.
  const source = new EventSource(`/api/v1/events?token=${encodeURIComponent(token)}`);
  state.source = source;
  source.addEventListener("open", () => {
    $("#connection").textContent = state.key ? "Live" : "Live (read-only link: sign in with a key to cancel)";
  });
  source.addEventListener("snapshot", (event) => {
    state.lastEventId = event.lastEventId;
    for (const job of JSON.parse(event.data)) state.jobs.set(job.id, job);
    render();
  });
  source.addEventListener("progress", (event) => {
    state.lastEventId = event.lastEventId;
    applyEvent(JSON.parse(event.data));
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED && state.key && state.source === source) {
      // The token expired or the server restarted: a new token, then resume.
      $("#connection").textContent = "Reconnecting…";
      setTimeout(() => openStream().catch(() => {}), 1000);
    } else {
      $("#connection").textContent = "Reconnecting…";
    }
  });
}

async function applyEvent(event) {
  let job = state.jobs.get(event.job_id);
  if (!job) {
    try { job = await api("GET", `/api/v1/jobs/${encodeURIComponent(event.job_id)}`); }
    catch { return; }
    state.jobs.set(job.id, job);
  }
  const at = Date.parse(event.timestamp) / 1000;
  const previous = state.last.get(job.id);
  state.last.set(job.id, [at, event.percentage]);
  Object.assign(job, {
    status: event.status, percentage: event.percentage, summary: event.message,
    stage: event.stage, current: event.current, total: event.total,
  });
  if (job.status !== "PROCESSING") {
    job.eta_seconds = null;
  } else if (previous && at > previous[0] && event.percentage > previous[1]) {
    const rate = (event.percentage - previous[1]) / (at - previous[0]);
    job.rate = job.rate ? SMOOTHING * rate + (1 - SMOOTHING) * job.rate : rate;
    job.eta_seconds = (100 - event.percentage) / job.rate;
  }
  render();
  if (state.detail === job.id) showDetail(job.id, false);
}

// -- the list ----------------------------------------------------------------------------------------

function render() {
  const status = $("#status-filter").value;
  const type = $("#type-filter").value;
  const types = new Set([...state.jobs.values()].map((job) => job.document_type));
  const typeSelect = $("#type-filter");
  for (const t of [...types].sort()) {
    if (![...typeSelect.options].some((o) => o.value === t)) typeSelect.add(new Option(t, t));
  }
  const rows = [...state.jobs.values()]
    .filter((job) => (!status || job.status === status) && (!type || job.document_type === type))
    .sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  const body = $("#jobs tbody");
  body.replaceChildren(...rows.map(row));
  $("#empty").hidden = rows.length > 0;
}

function cell(content, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (content instanceof Node) td.append(content); else td.textContent = content ?? "";
  return td;
}

function row(job) {
  const tr = document.createElement("tr");
  tr.dataset.jobId = job.id;
  const open = document.createElement("button");
  open.type = "button";
  open.className = "link";
  open.textContent = job.document_name;
  open.addEventListener("click", () => showDetail(job.id, true));
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = job.percentage;
  bar.setAttribute("aria-label", `${job.document_name} progress`);
  const wrap = document.createElement("span");
  wrap.append(bar, ` ${job.percentage}%`);
  const status = cell(job.status, `status ${job.status}`);
  const rate = job.rate > 0 ? `${job.rate.toFixed(1)}%/s` : "";
  tr.append(
    cell(open), cell(job.document_type), status, cell(wrap), cell(job.summary),
    cell(rate, "num"), cell(job.status === "PROCESSING" ? seconds(job.eta_seconds) : "", "num"),
  );
  return tr;
}

// -- one job's page ------------------------------------------------------------------------------

async function showDetail(jobId, focus) {
  state.detail = jobId;
  const job = state.jobs.get(jobId);
  const section = $("#detail");
  section.hidden = false;
  $("#detail-title").textContent = job ? job.document_name : jobId;
  $("#detail-error").textContent = "";
  const facts = job ? [
    ["Id", job.id], ["Status", job.status], ["Progress", `${job.percentage}%`],
    ["Message", job.summary ?? ""], ["Stage", job.stage ?? ""], ["Attempt", job.attempt],
    ["Worker", job.worker_id ?? ""], ["Started", job.start_date ?? ""],
  ] : [];
  $("#detail-facts").replaceChildren(...facts.flatMap(([name, value]) => {
    const dt = document.createElement("dt"); dt.textContent = name;
    const dd = document.createElement("dd"); dd.textContent = value;
    return [dt, dd];
  }));
  $("#cancel").hidden = !job || TERMINAL.has(job.status) || job.cancel_requested;
  if (focus) section.focus();
  try {
    const [history, children] = await Promise.all([
      api("GET", `/api/v1/jobs/${encodeURIComponent(jobId)}/history`),
      api("GET", `/api/v1/jobs?parent_id=${encodeURIComponent(jobId)}`),
    ]);
    drawChart(history);
    $("#children").replaceChildren(...(children.jobs.length ? children.jobs.map((child) => {
      const li = document.createElement("li");
      li.textContent = `${child.document_name}: ${child.status} ${child.percentage}%`;
      return li;
    }) : [Object.assign(document.createElement("li"), { textContent: "None" })]));
  } catch (error) {
    $("#detail-error").textContent = error.message;
  }
}

function drawChart(history) {
  const svg = $("#chart");
  if (!history.length) { svg.replaceChildren(); return; }
  const times = history.map((e) => Date.parse(e.timestamp));
  const start = times[0], span = Math.max(1, times[times.length - 1] - start);
  const points = history.map((e, i) =>
    `${((times[i] - start) / span) * 400},${120 - (e.percentage / 100) * 120}`).join(" ");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points);
  svg.replaceChildren(line);
  const last = history[history.length - 1];
  $("#chart-caption").textContent =
    `Progress over time: ${history.length} changes, now ${last.percentage}% (${last.status})`;
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
  $("#status-filter").addEventListener("change", render);
  $("#type-filter").addEventListener("change", render);
  $("#close-detail").addEventListener("click", () => {
    state.detail = null;
    $("#detail").hidden = true;
  });
  $("#cancel").addEventListener("click", async () => {
    try {
      const job = await api("POST", `/api/v1/jobs/${encodeURIComponent(state.detail)}/cancel`);
      state.jobs.set(job.id, { ...state.jobs.get(job.id), ...job });
      render();
      showDetail(job.id, false);
    } catch (error) {
      $("#detail-error").textContent = error.message;
    }
  });
  const link = new URLSearchParams(location.hash.slice(1)).get("token");
  if (link) {
    history.replaceState(null, "", location.pathname); // the token leaves the address bar
    signInWithToken(link).catch(() => {
      signOut();
      $("#signin-error").textContent = "This sign-in link has expired: sign in with a key.";
    });
  } else if (state.key) signIn(state.key).catch(signOut);
  else if (state.token) signInWithToken(state.token).catch(signOut);
  else $("#key").focus();
});
