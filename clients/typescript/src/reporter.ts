// The reporter: one job's progress sent to a morag-progress server, with the Python
// reporter's promises. Every call returns at once and never throws: `update` stores the
// latest state, and a timer sends it at most every `minInterval` ms (the first report, a
// stage change and the final status at once), retrying with backoff while the server cannot
// be reached or asks to wait (`Retry-After`). Its timers never keep the process alive, and
// `close` waits for the final status at most `closeTimeout` ms.

import type { components, operations } from "./api.js";

export type Job = components["schemas"]["JobOut"];
type ProgressIn =
  operations["report_progress_api_v1_remote_jobs__job_id__progress_put"]["requestBody"]["content"]["application/json"];
type ProgressOut = components["schemas"]["ProgressOut"];
type ResultIn = components["schemas"]["ResultIn"];

export interface ReporterOptions {
  /** The server, e.g. `http://localhost:8000` (default: `MORAG_PROGRESS_API_URL`). */
  apiUrl?: string;
  /** A bearer API key (default: `MORAG_PROGRESS_API_KEY`). */
  apiKey?: string;
  /** The least time between two progress reports, in ms (default 500). */
  minInterval?: number;
  /** The most one request may take, in ms (default 10,000). */
  timeout?: number;
  /** The longest wait between retries, in ms (default 30,000). */
  maxBackoff?: number;
  /** How long `close` waits for undelivered reports, in ms (default 2,000). */
  closeTimeout?: number;
  /** Named in the server's Workers view (default: none). */
  workerId?: string;
  /** Told of what went wrong (default: nothing is said); never called twice for one cause. */
  onProblem?: (problem: string) => void;
  /** The fetch to use (default: Node's). */
  fetch?: typeof fetch;
}

/** Why the server refused this job's reports for good (404, 401, 409...). */
export interface Refusal {
  status: number;
  detail: string;
}

const TERMINAL = new Set(["FINISHED", "FAILED", "CANCELLED"]);
const RETRY_STATUSES = new Set([408, 425, 429, 500, 502, 503, 504]);

export class ProgressReporter {
  readonly jobId: string;
  /** The job as the server last answered; null until it has. */
  job: Job | null = null;
  /** True once the server said the job should stop (someone asked to cancel it). */
  cancelRequested = false;
  /** Why the server refused for good; null while it has not. */
  refusal: Refusal | null = null;

  readonly #base: string;
  readonly #headers: Record<string, string>;
  readonly #minInterval: number;
  readonly #timeout: number;
  readonly #maxBackoff: number;
  readonly #closeTimeout: number;
  readonly #workerId: string | undefined;
  readonly #onProblem: ((problem: string) => void) | undefined;
  readonly #fetch: typeof fetch;

  // The latest state, kept in fields (no object a call): `update` is made for hot loops.
  #percentage = 0;
  #message: string | undefined = undefined;
  #stage: string | undefined = undefined;
  #version = 0; // how many states were noted
  #sentVersion = 0; // the last one the server took (or refused for good)
  #sentStage: string | undefined = undefined;
  #lastSentAt = -Infinity;
  #final: ResultIn | null = null;
  #finalDone = false;
  #over = false;
  #failures = 0;
  #notBefore = 0;
  #seq = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #sending = false;
  #said = new Set<string>();
  #settled: Array<() => void> = [];
  #closing = false; // a close is waiting: its retries keep the process up until its limit

  constructor(jobId: string, options: ReporterOptions = {}) {
    this.jobId = jobId;
    const url = options.apiUrl ?? process.env.MORAG_PROGRESS_API_URL ?? "http://localhost:8000";
    this.#base = url.replace(/\/+$/, "");
    const key = options.apiKey ?? process.env.MORAG_PROGRESS_API_KEY;
    this.#headers = { "content-type": "application/json" };
    if (key) this.#headers.authorization = `Bearer ${key}`;
    this.#minInterval = options.minInterval ?? 500;
    this.#timeout = options.timeout ?? 10_000;
    this.#maxBackoff = options.maxBackoff ?? 30_000;
    this.#closeTimeout = options.closeTimeout ?? 2_000;
    this.#workerId = options.workerId;
    this.#onProblem = options.onProblem;
    this.#fetch = options.fetch ?? fetch;
  }

  /** Report `percentage` (0..100) and a message. Returns at once; a bad value is dropped. */
  update(percentage: number, message?: string): void {
    if (!(percentage >= 0 && percentage <= 100)) {  // also NaN, and anything not a number
      this.#say("bad-percentage", `percentage must be a number from 0 to 100, not ${String(percentage)}`);
      return;
    }
    this.#percentage = percentage;
    this.#message = message;
    this.#version += 1;
    if (this.#timer === null && !this.#sending) this.#wake();
  }

  /** Start a stage: reported at once with the next (or the latest) percentage. */
  stage(name: string, percentage?: number): void {
    this.#stage = name;
    this.update(percentage ?? this.#percentage, this.#message);
    this.#wake(true);
  }

  /** End the job: FINISHED (success) or FAILED; `cancelled` with success false: CANCELLED. The
   * first call wins; `close` waits for it. */
  complete(success = true, message?: string, cancelled = false): void {
    if (this.#final !== null) return;
    const final: ResultIn = { success, message: message ?? null };
    if (cancelled && !success) final.cancelled = true;
    if (this.#workerId !== undefined) final.worker_id = this.#workerId;
    this.#final = final;
    this.#wake(true);
  }

  /** Wait (at most `timeout` ms, default the reporter's `closeTimeout`) until nothing is left
   * to send: true when all was delivered (or refused for good), false when time ran out. */
  close(timeout?: number): Promise<boolean> {
    const limit = timeout ?? this.#closeTimeout;
    if (this.#idle()) return Promise.resolve(true);
    this.#closing = true;
    return new Promise((resolve) => {
      // Ref'd, as the retries are while it waits: the worker asked to wait this long.
      const giveUp = setTimeout(() => {
        this.#over = true; // nothing more is sent: the worker has moved on
        this.#closing = false;
        if (this.#timer !== null) clearTimeout(this.#timer);
        this.#timer = null;
        resolve(false);
      }, limit);
      this.#settled.push(() => {
        clearTimeout(giveUp);
        this.#closing = false;
        resolve(true);
      });
      this.#wake(true);
    });
  }

  #idle(): boolean {
    if (this.#over) return true;
    const progressOwed = this.#version !== this.#sentVersion;
    return !this.#sending && !progressOwed && (this.#final === null || this.#finalDone);
  }

  #say(cause: string, problem: string): void {
    if (this.#said.has(cause)) return;
    this.#said.add(cause);
    try {
      this.#onProblem?.(problem);
    } catch {
      // a worker's handler must not break its reporter
    }
  }

  /** Send what is due now, or set the timer for when it is. */
  #wake(urgent = false): void {
    if (this.#sending) return;
    if (this.#timer !== null) {
      if (!urgent) return;
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    const wait = this.#delay();
    if (wait === null) {
      this.#notifyIfIdle();
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.#send();
    }, wait);
    // A reporter never keeps its process alive, except while `close` waits (its limit).
    if (!this.#closing) this.#timer.unref();
  }

  #delay(): number | null {
    if (this.#over) return null;
    const now = Date.now();
    const backoff = Math.max(0, this.#notBefore - now);
    if (this.#version !== this.#sentVersion) {
      const stageChanged = this.#stage !== this.#sentStage;
      const throttle = stageChanged ? 0 : Math.max(0, this.#lastSentAt + this.#minInterval - now);
      return Math.max(backoff, throttle);
    }
    if (this.#final !== null && !this.#finalDone) return backoff;
    return null;
  }

  #notifyIfIdle(): void {
    if (!this.#idle()) return;
    const waiting = this.#settled;
    this.#settled = [];
    for (const resolve of waiting) resolve();
  }

  async #send(): Promise<void> {
    if (this.#sending || this.#over) return;
    this.#sending = true;
    try {
      if (this.#version !== this.#sentVersion) {
        await this.#sendProgress();
      } else if (this.#final !== null && !this.#finalDone) {
        await this.#sendResult(this.#final);
      }
    } catch (error) {
      // Nothing reaches the worker: a bug here is said, and reporting goes on.
      this.#say("internal", `reporter error: ${String(error)}`);
    } finally {
      this.#sending = false;
    }
    this.#wake();
  }

  async #sendProgress(): Promise<void> {
    // The state as it is now; a newer one noted while this is in flight goes next.
    const version = this.#version;
    const stage = this.#stage;
    const message = this.#message;
    this.#seq += 1;
    // Ordered by seq (one request at a time), stamped by the server when it arrives.
    const body: ProgressIn = { percentage: Math.floor(this.#percentage), seq: this.#seq };
    if (message !== undefined) body.message = message.slice(0, 2000);
    if (stage !== undefined) body.stage = stage;
    if (this.#workerId !== undefined) body.worker_id = this.#workerId;
    const path = `/api/v1/remote-jobs/${encodeURIComponent(this.jobId)}/progress`;
    const answer = await this.#request(path, body);
    if (answer === null) return; // retried after a backoff
    this.#lastSentAt = Date.now();
    if (answer.ok) {
      this.#sentVersion = version;
      this.#sentStage = stage;
      this.#accept(answer.body as ProgressOut | null);
      return;
    }
    if (answer.status === 422) {
      this.#sentVersion = version; // this report, never; the next one may do
      this.#say("refused-report", `the server refused a report: ${answer.detail}`);
      return;
    }
    this.#refuse(answer.status, answer.detail);
  }

  async #sendResult(final: ResultIn): Promise<void> {
    const path = `/api/v1/remote-jobs/${encodeURIComponent(this.jobId)}/result`;
    const answer = await this.#request(path, final);
    if (answer === null) return;
    if (answer.ok) {
      this.#finalDone = true;
      this.#over = true;
      this.#accept(answer.body as ProgressOut | null);
      return;
    }
    this.#refuse(answer.status, answer.detail);
  }

  #accept(reply: ProgressOut | null): void {
    if (reply === null || typeof reply !== "object") return;
    if (typeof reply.cancel_requested === "boolean") this.cancelRequested = reply.cancel_requested;
    if (reply.job && typeof reply.job === "object") {
      this.job = reply.job;
      if (TERMINAL.has(reply.job.status) && this.#final === null) this.#over = true;
    }
  }

  #refuse(status: number, detail: string): void {
    this.refusal = { status, detail };
    this.#over = true;
    this.#say("refused", `the server refused the job's reports (HTTP ${status}): ${detail}; reporting stops`);
  }

  /** One request: its answer, or null when it is to be tried again (network error, 429, 5xx). */
  async #request(
    path: string,
    body: unknown,
  ): Promise<{ ok: boolean; status: number; body: unknown; detail: string } | null> {
    let response: Response;
    try {
      response = await this.#fetch(this.#base + path, {
        method: "PUT",
        headers: this.#headers,
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeout),
      });
    } catch (error) {
      this.#retry(null, `cannot reach ${this.#base}: ${String(error)}`);
      return null;
    }
    let parsed: unknown = null;
    try {
      parsed = await response.json();
    } catch {
      parsed = null;
    }
    if (RETRY_STATUSES.has(response.status)) {
      this.#retry(response.headers.get("retry-after"), `HTTP ${response.status}`);
      return null;
    }
    this.#failures = 0;
    this.#notBefore = 0;
    const detail = describe(parsed) ?? response.statusText;
    return { ok: response.ok, status: response.status, body: parsed, detail };
  }

  #retry(retryAfter: string | null, why: string): void {
    this.#failures += 1;
    const ceiling = Math.min(this.#maxBackoff, 100 * 2 ** Math.min(this.#failures - 1, 16));
    let wait = ceiling / 2 + Math.random() * (ceiling / 2); // jitter: workers do not stampede
    const asked = retryAfterMs(retryAfter);
    if (asked !== null) wait = Math.max(wait, Math.min(asked, 300_000));
    this.#notBefore = Date.now() + wait;
    this.#say("retrying", `${why}; retrying with backoff`);
  }
}

function describe(body: unknown): string | null {
  if (body && typeof body === "object") {
    const record = body as Record<string, unknown>;
    for (const name of ["message", "detail"]) {
      const value = record[name];
      if (typeof value === "string") return value;
      if (value !== undefined) return JSON.stringify(value);
    }
  }
  return null;
}

/** `Retry-After` in ms: seconds, or an HTTP date; null when absent or unreadable. */
export function retryAfterMs(value: string | null): number | null {
  if (value === null || value.trim() === "") return null;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
}
