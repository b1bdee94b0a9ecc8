// What a WebSocket message does to the query cache. The sockets carry progress (status,
// step, metrics); fields they do not carry (the run's allowed actions, its latent count
// once the worker has read the data, a finished extraction's manifest) come from a
// refetch of the affected entries, triggered here when the message says they changed.
import type { QueryClient } from "@tanstack/react-query";
import type { Dataset, Training } from "./client";
import { keys } from "./queries";

export interface TrainingSnapshot {
  type: "training";
  id: number;
  name: string;
  status: Training["status"];
  control: Training["control"];
  progress: number;
  error: string | null;
  step?: number;
  total_steps?: number | null;
  eta_seconds?: number | null;
  latest_metrics?: Record<string, number> | null;
}

export interface DatasetSnapshot {
  type: "activation_dataset";
  id: number;
  name: string;
  status: Dataset["status"];
  control: Dataset["control"];
  progress: number;
  error: string | null;
  contexts?: number;
  target_contexts?: number | null;
  rows?: number;
}

export interface Deleted {
  type: "deleted";
  kind: "training" | "activation_dataset";
  id: number;
}

/** A message on /ws/events. */
export type JobEvent = TrainingSnapshot | DatasetSnapshot | Deleted;

/** A `status` message on /ws/trainings/{id}. */
export interface StatusMessage {
  status: Training["status"];
  control: Training["control"];
  step: number;
  total_steps: number | null;
  progress: number;
  eta_seconds: number | null;
  error: string | null;
}

export interface MetricRow {
  step: number;
  sae: string;
  kind: string;
  metrics: Record<string, any>;
}

type Live = Pick<Training, "status" | "control" | "progress" | "error"> &
  Partial<Pick<Training, "step" | "total_steps" | "eta_seconds" | "latest_metrics">>;

function mergeTraining(t: Training, s: Live): Training {
  return {
    ...t,
    status: s.status,
    control: s.control,
    progress: s.progress,
    error: s.error,
    step: s.step ?? t.step,
    total_steps: s.total_steps ?? t.total_steps,
    eta_seconds: s.eta_seconds ?? null,
    latest_metrics: s.latest_metrics ?? t.latest_metrics,
  };
}

/** Whether the server knows more about `t` than a snapshot can say: its actions follow
 * status and control, and its width (d_sae) is known once the worker runs it. */
function staleAfter(t: Training, s: Live): boolean {
  if (t.status !== s.status || t.control !== s.control) return true;
  return t.d_sae === null && s.status === "running" && (s.step ?? 0) > t.step;
}

const refetch = (qc: QueryClient, queryKey: readonly unknown[]) =>
  // one refetch at a time per entry: a burst of events does not queue a burst of GETs
  void qc.invalidateQueries({ queryKey, exact: true }, { cancelRefetch: false });

/** Whether a page shows this entry now. An entry nobody watches is only marked stale
 * (a later setQueryData would mark it fresh again and hide the change): the page that
 * mounts it next reads it anew. */
const watched = (qc: QueryClient, queryKey: readonly unknown[]) =>
  (qc.getQueryCache().find({ queryKey, exact: true })?.getObserversCount() ?? 0) > 0;

/** Apply `change` to a watched entry (and refetch it when `stale` says the change
 * implies more than it carries); an unwatched one is just invalidated. Live events,
 * and API answers written into entries another page may hold, go through here. */
export function update<T>(qc: QueryClient, queryKey: readonly unknown[], change: (prev: T) => T, stale: (prev: T) => boolean = () => false): void {
  const prev = qc.getQueryData<T>(queryKey);
  if (prev === undefined) return;
  if (!watched(qc, queryKey)) return void qc.invalidateQueries({ queryKey, exact: true, refetchType: "none" });
  const again = stale(prev);
  qc.setQueryData<T>(queryKey, change(prev));
  if (again) refetch(qc, queryKey);
}

/** Fold a run's live fields into its list entry and its detail entry. */
export function applyTrainingLive(qc: QueryClient, id: number, s: Live): void {
  update<Training[]>(
    qc,
    keys.trainings,
    (list) => list.map((t) => (t.id === id ? mergeTraining(t, s) : t)),
    (list) => {
      const listed = list.find((t) => t.id === id);
      return !listed || staleAfter(listed, s); // not listed: created elsewhere
    },
  );
  update<Training>(qc, keys.training(id), (t) => mergeTraining(t, s), (t) => staleAfter(t, s));
}

/** One /ws/events message into the cache. */
export function applyJobEvent(qc: QueryClient, msg: JobEvent): void {
  if (msg.type === "deleted") {
    if (msg.kind === "training") {
      update<Training[]>(qc, keys.trainings, (list) => list.filter((t) => t.id !== msg.id));
      qc.removeQueries({ queryKey: keys.training(msg.id) });
    } else {
      update<Dataset[]>(qc, keys.datasets, (list) => list.filter((d) => d.id !== msg.id));
    }
  } else if (msg.type === "training") {
    applyTrainingLive(qc, msg.id, msg);
  } else {
    update<Dataset[]>(
      qc,
      keys.datasets,
      (list) =>
        list.map((d) =>
          d.id === msg.id
            ? { ...d, status: msg.status, control: msg.control, progress: msg.progress, error: msg.error, contexts: msg.contexts ?? d.contexts, rows: msg.rows ?? d.rows }
            : d,
        ),
      // new, or its status changed (actions; a finished one's manifest holds the stats)
      (list) => {
        const known = list.find((d) => d.id === msg.id);
        return !known || known.status !== msg.status || known.control !== msg.control;
      },
    );
  }
}

/** Metric lines of a run's stream, de-duplicated by (SAE, kind, step): a reconnect
 * re-sends the last step. */
export function addRows(prev: MetricRow[] | undefined, rows: MetricRow[]): MetricRow[] {
  const have = prev ?? [];
  const seen = new Set(have.map((r) => `${r.sae}|${r.kind}|${r.step}`));
  const fresh = rows.filter((r) => !seen.has(`${r.sae}|${r.kind}|${r.step}`));
  return fresh.length ? [...have, ...fresh] : have;
}

/** A checkpoint event: the list and the detail (its `resolved` table) are re-read. */
export function applyCheckpoint(qc: QueryClient, id: number): void {
  refetch(qc, keys.checkpoints(id));
  refetch(qc, keys.training(id));
}
