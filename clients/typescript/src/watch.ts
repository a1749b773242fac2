// Following a job over the server's event stream (`GET /api/v1/jobs/{id}/events`): a
// `snapshot` of the job first, then one `progress` event per change, until the job ends.
// A dropped stream is resumed from the last event it gave (`Last-Event-ID`), with backoff.

import type { components } from "./api.js";

export type JobSnapshot = components["schemas"]["JobOut"];
export type ProgressEvent = components["schemas"]["FeedEventOut"];

export type WatchEvent =
  | { type: "snapshot"; job: JobSnapshot }
  | { type: "progress"; event: ProgressEvent }
  | { type: "gap"; data: unknown };

export interface WatchOptions {
  apiUrl?: string;
  apiKey?: string;
  /** Stop following (the iterator ends). */
  signal?: AbortSignal;
  /** How many times in a row a lost stream is opened again (default 5). */
  retries?: number;
  fetch?: typeof fetch;
}

const TERMINAL = new Set(["FINISHED", "FAILED", "CANCELLED"]);

/** The job's snapshot and its changes as they happen, until it ends (or `signal` aborts).
 * Throws only when the server refuses the stream (a wrong key, an unknown job) or stays
 * unreachable past `retries`. */
export async function* watch(jobId: string, options: WatchOptions = {}): AsyncGenerator<WatchEvent> {
  const base = (options.apiUrl ?? process.env.MORAG_PROGRESS_API_URL ?? "http://localhost:8000").replace(/\/+$/, "");
  const key = options.apiKey ?? process.env.MORAG_PROGRESS_API_KEY;
  const doFetch = options.fetch ?? fetch;
  const url = `${base}/api/v1/jobs/${encodeURIComponent(jobId)}/events`;
  let lastId: string | null = null;
  let failures = 0;
  while (!options.signal?.aborted) {
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (key) headers.authorization = `Bearer ${key}`;
    if (lastId !== null) headers["last-event-id"] = lastId;
    let response: Response;
    try {
      response = await doFetch(url, { headers, signal: options.signal });
    } catch (error) {
      if (options.signal?.aborted) return;
      failures += 1;
      if (failures > (options.retries ?? 5)) throw error;
      await sleep(Math.min(30_000, 250 * 2 ** failures));
      continue;
    }
    if (!response.ok || response.body === null) {
      const text = await response.text().catch(() => "");
      throw new Error(`the server refused the stream (HTTP ${response.status}): ${text.slice(0, 300)}`);
    }
    failures = 0;
    let ended = false;
    try {
      for await (const message of messages(response.body)) {
        if (message.id !== null) lastId = message.id;
        const data: unknown = JSON.parse(message.data);
        if (message.event === "snapshot") {
          const job = data as JobSnapshot;
          yield { type: "snapshot", job };
          ended = TERMINAL.has(job.status);
        } else if (message.event === "progress") {
          const event = data as ProgressEvent;
          yield { type: "progress", event };
          ended = TERMINAL.has(event.status);
        } else if (message.event === "gap") {
          yield { type: "gap", data };
        }
        if (ended) return;
      }
    } catch (error) {
      if (options.signal?.aborted) return;
      failures += 1;
      if (failures > (options.retries ?? 5)) throw error;
    }
    if (ended) return;
    await sleep(Math.min(30_000, 250 * 2 ** failures)); // lost: resume from the last id
  }
}

interface Message {
  event: string;
  data: string;
  id: string | null;
}

/** The server-sent events of a response body (the text/event-stream format). */
async function* messages(body: ReadableStream<Uint8Array>): AsyncGenerator<Message> {
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "message";
  let data: string[] = [];
  let id: string | null = null;
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (data.length) yield { event, data: data.join("\n"), id };
        event = "message";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue; // a keep-alive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
