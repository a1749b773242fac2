export { ProgressReporter, retryAfterMs } from "./reporter.js";
export type { Job, Refusal, ReporterOptions } from "./reporter.js";
export { watch } from "./watch.js";
export type { JobSnapshot, ProgressEvent, WatchEvent, WatchOptions } from "./watch.js";
export type { components, paths } from "./api.js";
