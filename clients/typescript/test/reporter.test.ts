// The TypeScript reporter against a real `morag-progress serve`: delivery and the final status,
// throttling, a cancel request surfaced, a server that goes down and comes back, refusals,
// the event stream, and a process the reporter never keeps alive.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, it } from "node:test";

import { ProgressReporter, retryAfterMs, watch, type WatchEvent } from "../src/index.js";
import { Server, sleep } from "./server.js";

let server: Server;

before(async () => {
  server = await Server.start();
});

after(async () => {
  await server.stop();
});

function reporter(jobId: string, options: Record<string, unknown> = {}): ProgressReporter {
  return new ProgressReporter(jobId, { apiUrl: server.url, apiKey: server.key, minInterval: 50, ...options });
}

describe("ProgressReporter", () => {
  it("delivers the latest state and the final status", async () => {
    const jobId = await server.newJob();
    const r = reporter(jobId);
    for (let i = 1; i <= 100; i++) r.update(i * 0.9, `item ${i}`);
    await sleep(300);
    let job = await server.api("GET", `/api/v1/jobs/${jobId}`);
    assert.equal(job.percentage, 90);
    assert.equal(job.summary, "item 100");
    r.complete(true, "all done");
    assert.equal(await r.close(5000), true);
    job = await server.api("GET", `/api/v1/jobs/${jobId}`);
    assert.equal(job.status, "FINISHED");
    assert.equal(job.summary, "all done");
    assert.equal(r.job?.status, "FINISHED");
  });

  it("sends at most one report every minInterval, a stage change at once", async () => {
    const jobId = await server.newJob();
    const r = reporter(jobId, { minInterval: 400 });
    const until = Date.now() + 1000;
    let i = 0;
    while (Date.now() < until) {
      r.update((i++ % 50) + 1, "busy");
      await sleep(1);
    }
    r.stage("upload", 60);
    await sleep(150);
    const history = await server.api("GET", `/api/v1/jobs/${jobId}/history`);
    const reports = history.filter((e: { action: string }) => e.action === "report");
    assert.ok(reports.length >= 2 && reports.length <= 5, `reports: ${reports.length}`);
    assert.equal(reports.at(-1).stage, "upload"); // not held back by the throttle
    r.complete();
    assert.equal(await r.close(5000), true);
  });

  it("surfaces a cancel request", async () => {
    const jobId = await server.newJob();
    const r = reporter(jobId);
    r.update(10, "working");
    await sleep(200);
    await server.api("POST", `/api/v1/jobs/${jobId}/cancel`);
    r.update(20, "working");
    await sleep(200);
    assert.equal(r.cancelRequested, true);
    r.complete(false, "stopped", true);
    assert.equal(await r.close(5000), true);
    assert.equal((await server.api("GET", `/api/v1/jobs/${jobId}`)).status, "CANCELLED");
  });

  it("goes on through an outage and delivers the final status once the server is back", async () => {
    const jobId = await server.newJob();
    const problems: string[] = [];
    const r = reporter(jobId, { maxBackoff: 500, onProblem: (p: string) => problems.push(p) });
    r.update(5, "start");
    await sleep(200);
    await server.down();
    for (let i = 6; i <= 80; i++) {
      r.update(i, `step ${i}`); // never throws, never waits
      await sleep(20);
    }
    r.complete(true, "done after the outage");
    const closing = r.close(15_000); // waits, retrying, until the server is back
    await sleep(1000);
    await server.up();
    assert.equal(await closing, true);
    const job = await server.api("GET", `/api/v1/jobs/${jobId}`);
    assert.equal(job.status, "FINISHED");
    assert.equal(job.summary, "done after the outage");
    assert.ok(problems.some((p) => p.includes("retrying")), problems.join("; "));
  });

  it("stops, saying why, when the server refuses the job for good", async () => {
    const problems: string[] = [];
    const r = reporter("no-such-job", { onProblem: (p: string) => problems.push(p) });
    r.update(10);
    await sleep(300);
    assert.equal(r.refusal?.status, 404);
    r.update(20); // dropped quietly: nothing more is sent
    assert.equal(await r.close(100), true);
    const wrong = new ProgressReporter(await server.newJob(), { apiUrl: server.url, apiKey: "mpk_wrong" });
    wrong.update(10);
    await sleep(300);
    assert.equal(wrong.refusal?.status, 401);
    assert.equal(problems.length, 1);
  });

  it("drops a bad value instead of throwing", async () => {
    const problems: string[] = [];
    const r = reporter(await server.newJob(), { onProblem: (p: string) => problems.push(p) });
    r.update(Number.NaN);
    r.update(101);
    r.update("50" as unknown as number);
    assert.equal(problems.length, 1);
    r.complete();
    assert.equal(await r.close(5000), true);
  });

  it("never keeps the process alive, whether the server is up or down", async () => {
    const script = `
      import { ProgressReporter } from "./dist/src/index.js";
      const r = new ProgressReporter(process.argv[1], { apiUrl: process.argv[2], apiKey: process.argv[3] });
      r.update(50, "half");
      r.complete(true, "done");
      await r.close(1000);
    `;
    for (const url of [server.url, "http://127.0.0.1:9"]) {
      const started = Date.now();
      const child = spawn(process.execPath, ["--input-type=module", "-e", script, await server.newJob(), url, server.key]);
      const code = await new Promise((resolve) => child.once("exit", resolve));
      assert.equal(code, 0);
      assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
    }
  });

  it("reads Retry-After as seconds or a date", () => {
    assert.equal(retryAfterMs("3"), 3000);
    assert.equal(retryAfterMs(null), null);
    assert.equal(retryAfterMs("soon"), null);
    const date = retryAfterMs(new Date(Date.now() + 5000).toUTCString());
    assert.ok(date !== null && date > 3000 && date <= 5000);
  });
});

describe("watch", () => {
  it("gives the snapshot, then each change, and ends with the job", async () => {
    const jobId = await server.newJob();
    const seen: WatchEvent[] = [];
    const following = (async () => {
      for await (const event of watch(jobId, { apiUrl: server.url, apiKey: server.key })) seen.push(event);
    })();
    await sleep(300);
    const r = reporter(jobId);
    r.update(40, "half way");
    await sleep(300);
    r.complete(true, "done");
    assert.equal(await r.close(5000), true);
    await following;
    assert.equal(seen[0]?.type, "snapshot");
    const progress = seen.flatMap((e) => (e.type === "progress" ? [e.event] : []));
    assert.deepEqual(
      progress.map((e) => [e.status, e.percentage]),
      [["PROCESSING", 40], ["FINISHED", 100]],
    );
  });

  it("refuses a wrong key", async () => {
    const jobId = await server.newJob();
    await assert.rejects(async () => {
      for await (const _ of watch(jobId, { apiUrl: server.url, apiKey: "mpk_wrong" })) break;
    }, /HTTP 401/);
  });
});
