// The reporter's cost in a hot loop, and a 10 s outage, against a real server.
//
//   npm run build && npm run bench
//
// 1. `update` in a loop against the same loop without it: a plain for loop that updates a
//    counter and a string (what a worker's loop does anyway). Target: the call costs at most
//    2x one plain iteration. Rounds alternate; medians.
// 2. A worker reporting 1,000 times a second while the server is down for 10 s: no exception
//    reaches it, and its final status arrives once the server is back.

import { performance } from "node:perf_hooks";

import { ProgressReporter } from "../src/index.js";
import { Server, sleep } from "../test/server.js";

const N = 5_000_000;

// The string: built each iteration (`step 41`), or one of two constants (which V8 all but
// removes from the plain loop: the floor of what an iteration can cost).
let built = true;

function plain(): number {
  let count = 0;
  let text = "";
  const start = performance.now();
  for (let i = 0; i < N; i++) {
    count = i;
    text = built ? `step ${i}` : i & 1 ? "odd step" : "even step";
  }
  const elapsed = performance.now() - start;
  if (count < 0 || text === "") throw new Error("unreachable");
  return (elapsed * 1e6) / N; // ns an iteration
}

function reported(reporter: ProgressReporter): number {
  let count = 0;
  let text = "";
  const start = performance.now();
  for (let i = 0; i < N; i++) {
    count = i;
    text = built ? `step ${i}` : i & 1 ? "odd step" : "even step";
    reporter.update((i * 100) / N, text);
  }
  const elapsed = performance.now() - start;
  if (count < 0 || text === "") throw new Error("unreachable");
  return (elapsed * 1e6) / N;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

const server = await Server.start();
try {
  const jobId = await server.newJob("hot-loop");
  const reporter = new ProgressReporter(jobId, { apiUrl: server.url, apiKey: server.key });
  console.log(`node ${process.version}, ${N.toLocaleString()} iterations a round, median of 7 rounds`);
  for (const kind of [true, false]) {
    built = kind;
    const base: number[] = [];
    const ours: number[] = [];
    for (let round = 0; round < 7; round++) {
      base.push(plain());
      ours.push(reported(reporter));
    }
    const b = median(base);
    const o = median(ours);
    const call = o - b;
    const what = kind ? "a counter and a built string (`step ${i}`)" : "a counter and a constant string";
    console.log(
      `plain iteration, ${what}: ${b.toFixed(2)} ns; with update(): ${o.toFixed(2)} ns; ` +
        `the call ${call.toFixed(2)} ns = ${(call / b).toFixed(2)}x a plain iteration ` +
        `(target <= 2x: ${call / b <= 2 ? "met" : "MISSED"})`,
    );
  }
  reporter.complete();
  await reporter.close(5000);

  const outageJob = await server.newJob("outage");
  let thrown = 0;
  const worker = new ProgressReporter(outageJob, { apiUrl: server.url, apiKey: server.key, maxBackoff: 2000 });
  const started = performance.now();
  let i = 0;
  let downAt = 0;
  let upAt = 0;
  while (performance.now() - started < 12_000) {
    const t = performance.now() - started;
    if (downAt === 0 && t > 1000) {
      downAt = performance.now();
      await server.down();
    }
    if (upAt === 0 && t > 11_000) {
      upAt = performance.now();
      await server.up();
    }
    try {
      worker.update(Math.min(99, t / 120), `step ${i++}`);
    } catch {
      thrown += 1;
    }
    await sleep(1);
  }
  worker.complete(true, "done after the outage");
  const delivered = await worker.close(30_000);
  const after = (performance.now() - upAt) / 1000;
  const job = await server.api("GET", `/api/v1/jobs/${outageJob}`);
  console.log(
    `outage of ${((upAt - downAt) / 1000).toFixed(1)} s: ${i.toLocaleString()} updates, ${thrown} exceptions reached the worker; ` +
      `final status ${delivered ? "delivered" : "NOT delivered"} ${after.toFixed(1)} s after the server was back (job ${job.status}: ${job.summary})`,
  );
} finally {
  await server.stop();
}
