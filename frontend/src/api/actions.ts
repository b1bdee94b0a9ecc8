// API calls behind the run buttons (cards and the detail page share them).
import { type QueryClient, useMutation, useQueryClient } from "@tanstack/react-query";
import type { RunAction } from "../lib/actions";
import { ApiError, api, call, describeError, TOKEN_KEY, type Training } from "./client";
import { update } from "./cache";
import { keys } from "./queries";

/** Save a file the API serves (with the token header, which a plain link cannot send). */
export async function download(url: string, fallbackName: string): Promise<void> {
  const token = localStorage.getItem(TOKEN_KEY);
  const res = await fetch(url, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  if (!res.ok) {
    let body: unknown;
    try {
      body = await res.json();
    } catch {
      body = undefined;
    }
    throw describeError(res.status, body);
  }
  const blob = await res.blob();
  const match = /filename="?([^";]+)"?/.exec(res.headers.get("content-disposition") ?? "");
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = match?.[1] ?? fallbackName;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

/** Run `action` on `t`; returns the updated (or, for retry, the new) run, or null when
 * it was deleted or downloaded. */
export async function runAction(t: Training, action: RunAction): Promise<Training | null> {
  const id = t.id;
  switch (action) {
    case "pause":
    case "resume":
    case "stop":
    case "stop_and_finalize":
      return call(api.POST("/api/v1/trainings/{training_id}/control", { params: { path: { training_id: id } }, body: { action } }));
    case "retry":
      return call(api.POST("/api/v1/trainings/{training_id}/retry", { params: { path: { training_id: id } } }));
    case "delete":
      await call(api.DELETE("/api/v1/trainings/{training_id}", { params: { path: { training_id: id } } }));
      return null;
    case "download":
      await download(`/api/v1/trainings/${id}/sae/download`, `${t.name}-sae.zip`);
      return null;
  }
  throw new ApiError(`unknown action ${action}`, 0);
}

/** Run an action from a card or the run page and fold the answer into the cache (the
 * run's list entry and detail; a retry's new run is listed first; a delete unlists). */
export function useRunAction() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: ({ training, action }: { training: Training; action: RunAction }) => runAction(training, action),
    onSuccess: (updated, { training, action }) => {
      if (action === "delete") {
        update<Training[]>(qc, keys.trainings, (list) => list.filter((t) => t.id !== training.id));
        qc.removeQueries({ queryKey: keys.training(training.id) });
      } else if (updated) {
        putTraining(qc, updated);
      }
    },
  });
}

/** A run the API just returned: replace its entries, or list it first if new. */
export function putTraining(qc: QueryClient, t: Training): void {
  update<Training[]>(qc, keys.trainings, (list) => (list.some((r) => r.id === t.id) ? list.map((r) => (r.id === t.id ? t : r)) : [t, ...list]));
  // the detail adds `resolved`: keep it, the row's fields are newer
  update<Training>(qc, keys.training(t.id), (prev) => ({ ...prev, ...t }));
}
