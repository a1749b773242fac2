// A share link's page: one job's progress, ETA and final state, read from the link's own
// address (/share/<token>/job) every 2 s until the job ends. No key, no other job, no action.
"use strict";

const TERMINAL = new Set(["FINISHED", "FAILED", "CANCELLED"]);
const LABELS = { WAITING_FOR_REMOTE_WORKER: "WAITING" };
const $ = (selector) => document.querySelector(selector);

function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(s % 60)}` : `${m}:${two(s % 60)}`;
}

function fact(name, value) {
  if (value === null || value === undefined || value === "") return [];
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value;
  return [dt, dd];
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : null;
}

function render(job) {
  document.title = `${job.document_name} · ${job.percentage}%`;
  $("#name").textContent = job.document_name;
  const status = $("#status");
  status.className = `badge ${job.status}`;
  status.textContent = LABELS[job.status] || job.status;
  $("#type").textContent = job.document_type;
  $("#bar").value = job.percentage;
  $("#bar").className = job.status;
  $("#pct").textContent = `${job.percentage}%`;
  $("#summary").textContent = job.summary || "";
  const running = job.status === "PROCESSING" && job.eta_seconds !== null;
  const eta = running
    ? `${clock(job.eta_seconds)} left (likely ${clock(job.eta_low_seconds)}–${clock(job.eta_high_seconds)})`
    : null;
  $("#facts").replaceChildren(
    ...fact("ETA", eta),
    ...fact("Started", when(job.start_date)),
    ...fact("Ended", when(job.end_date)),
    ...fact("Updated", when(job.updated_at)),
  );
}

async function poll() {
  let wait = 2000;
  try {
    const response = await fetch(`${location.pathname.replace(/\/$/, "")}/job`, { cache: "no-store" });
    if (response.status === 404) {
      $("#name").textContent = "This link does not work";
      $("#note").textContent = "It expired or was revoked. Ask whoever shared it for a new one.";
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const job = await response.json();
    render(job);
    $("#note").textContent = TERMINAL.has(job.status) ? "This job has ended." : "Updates every few seconds.";
    if (TERMINAL.has(job.status)) return;
  } catch (error) {
    $("#note").textContent = `Could not reach the server (${error.message}); trying again.`;
    wait = 5000;
  }
  setTimeout(poll, wait);
}

poll();
