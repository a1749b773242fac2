// A real `morag-progress serve` for the tests: its own SQLite file, a user key made with the
// CLI, a port that survives a restart (to take the server down and bring it back).

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const PYTHON = process.env.PYTHON ?? "../../.venv/bin/python";

export class Server {
  readonly url: string;
  readonly key: string;
  #process: ChildProcess | null = null;
  readonly #env: NodeJS.ProcessEnv;
  readonly #dir: string;
  readonly #port: number;

  private constructor(port: number, dir: string, env: NodeJS.ProcessEnv, key: string) {
    this.#port = port;
    this.#dir = dir;
    this.#env = env;
    this.key = key;
    this.url = `http://127.0.0.1:${port}`;
  }

  static async start(): Promise<Server> {
    const dir = mkdtempSync(join(tmpdir(), "morag-ts-"));
    const env = {
      ...process.env,
      MORAG_PROGRESS_DATABASE_URL: `sqlite:///${join(dir, "server.db")}`,
      MORAG_PROGRESS_RATE_LIMIT_PER_SECOND: "0",
      MORAG_PROGRESS_FEED_POLL_SECONDS: "0.05",
    };
    const made = execFileSync(PYTHON, ["-m", "morag_progress.cli", "keys", "create", "--user", "alice"], {
      env,
      encoding: "utf8",
    });
    const key = made.trim().split(/\s+/)[0] ?? "";
    const server = new Server(await freePort(), dir, env, key);
    await server.up();
    return server;
  }

  async up(): Promise<void> {
    this.#process = spawn(PYTHON, ["-m", "morag_progress.cli", "serve", "--port", String(this.#port)], {
      env: this.#env,
      stdio: "ignore",
    });
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      try {
        if ((await fetch(`${this.url}/readyz`)).ok) return;
      } catch {
        // not yet
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error("the server did not start");
  }

  async down(): Promise<void> {
    const child = this.#process;
    this.#process = null;
    if (child === null || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
  }

  async stop(): Promise<void> {
    await this.down();
    rmSync(this.#dir, { recursive: true, force: true });
  }

  /** A call to the API with the test's key. */
  async api(method: string, path: string, body?: unknown): Promise<any> {
    const response = await fetch(this.url + path, {
      method,
      headers: { authorization: `Bearer ${this.key}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`${method} ${path}: HTTP ${response.status} ${await response.text()}`);
    return response.json();
  }

  async newJob(name = "clip.mp4"): Promise<string> {
    const job = await this.api("POST", "/api/v1/jobs", { document_name: name, document_type: "video" });
    return job.id as string;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
