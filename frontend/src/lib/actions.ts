// Names of the run and extraction buttons. Which buttons a job shows is the API's
// answer (each row's `actions`, from saestudio/store/states.py), never decided here.
import type { Dataset, Training } from "../api/client";

export type RunAction = Training["actions"][number];
export type DatasetAction = Dataset["actions"][number];

export const ACTION_LABEL: Record<RunAction, string> = {
  pause: "Pause",
  resume: "Resume",
  stop: "Stop",
  stop_and_finalize: "Stop & finalize",
  retry: "Retry",
  delete: "Delete",
  download: "Download SAE",
};
