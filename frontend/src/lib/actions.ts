// Which buttons a run's card shows in each state: exactly the transitions the API
// allows (saestudio/store/lifecycle.py), so a click never meets a 409 in normal use.

export type RunAction = "pause" | "resume" | "stop" | "stop_and_finalize" | "retry" | "delete" | "download";

const BY_STATUS: Record<string, RunAction[]> = {
  queued: ["pause", "stop", "delete"],
  running: ["pause", "stop", "stop_and_finalize"],
  paused: ["resume", "stop", "stop_and_finalize", "delete"],
  completed: ["download", "retry", "delete"],
  failed: ["resume", "retry", "delete"],
  cancelled: ["resume", "retry", "delete"],
};

/** The actions for `status`; a request the worker has not honoured yet (`control`)
 * hides the buttons that would repeat or contradict it. */
export function actionsFor(status: string, control?: string | null): RunAction[] {
  const actions = BY_STATUS[status] ?? [];
  if (status === "running" && control) return control === "pause" ? ["resume"] : [];
  return actions;
}

export const ACTION_LABEL: Record<RunAction, string> = {
  pause: "Pause",
  resume: "Resume",
  stop: "Stop",
  stop_and_finalize: "Stop & finalize",
  retry: "Retry",
  delete: "Delete",
  download: "Download SAE",
};

export const DATASET_ACTIONS: Record<string, ("pause" | "resume" | "stop" | "delete")[]> = {
  queued: ["pause", "stop", "delete"],
  running: ["pause", "stop"],
  paused: ["resume", "stop", "delete"],
  completed: ["delete"],
  failed: ["resume", "delete"],
  cancelled: ["resume", "delete"],
};
