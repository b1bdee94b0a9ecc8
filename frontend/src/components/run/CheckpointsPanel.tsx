import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Download, Play, Trash2, Upload } from "lucide-react";
import { useState } from "react";
import { download, putTraining } from "../../api/actions";
import { api, call, type Checkpoint, type Training } from "../../api/client";
import { checkpointsQuery, keys } from "../../api/queries";
import { formatBytes, formatCount, formatMetric } from "../../lib/format";
import { ConfirmDialog, ErrorBanner, IconButton, Panel } from "../ui";

type CheckpointAction = "resume" | "export" | "download" | "delete";

/** A run's checkpoints with resume / export / download / delete; deleting the best one
 * asks first. */
export function CheckpointsPanel({ run }: { run: Training }) {
  const qc = useQueryClient();
  const checkpoints = useQuery(checkpointsQuery(run.id)).data ?? [];
  const [notice, setNotice] = useState<string | null>(null);
  const [askBest, setAskBest] = useState<Checkpoint | null>(null);
  const act = useMutation({
    mutationFn: async ({ c, action }: { c: Checkpoint; action: CheckpointAction }): Promise<string | null> => {
      const path = { training_id: run.id, checkpoint_id: c.id };
      if (action === "resume") {
        putTraining(qc, await call(api.POST("/api/v1/trainings/{training_id}/checkpoints/{checkpoint_id}/resume", { params: { path } })));
        void qc.invalidateQueries({ queryKey: keys.checkpoints(run.id), exact: true }); // later ones are dropped
        return `Resuming from step ${c.step}.`;
      }
      if (action === "export") {
        const out = await call(api.POST("/api/v1/trainings/{training_id}/checkpoints/{checkpoint_id}/export", { params: { path } }));
        return `Exported step ${c.step} in SAELens format to ${out.path}.`;
      }
      if (action === "download") {
        await download(`/api/v1/trainings/${run.id}/checkpoints/${c.id}/download`, `checkpoint-${c.step}.zip`);
        return null;
      }
      await call(api.DELETE("/api/v1/trainings/{training_id}/checkpoints/{checkpoint_id}", { params: { path, query: { allow_best: c.is_best } } }));
      qc.setQueryData<Checkpoint[]>(keys.checkpoints(run.id), (prev) => prev?.filter((x) => x.id !== c.id));
      return null;
    },
    onMutate: () => setNotice(null),
    onSuccess: (message) => message && setNotice(message),
  });
  const go = (c: Checkpoint, action: CheckpointAction) =>
    action === "delete" && c.is_best ? setAskBest(c) : act.mutate({ c, action });
  const busy = run.status === "running" || run.status === "queued";

  return (
    <Panel title={`Checkpoints (${checkpoints.length})`}>
      <div className="mb-2 space-y-2 empty:hidden">
        <ErrorBanner message={act.error?.message ?? null} onClose={() => act.reset()} />
        {notice && (
          <p role="status" className="break-words text-sm text-emerald-300">
            {notice}
          </p>
        )}
      </div>
      {checkpoints.length === 0 ? (
        <p className="text-sm text-slate-400">None yet: the first is written at checkpoint_every steps.</p>
      ) : (
        <div className="overflow-x-auto">
          <table className="w-full text-left text-sm">
            <thead className="text-xs uppercase text-slate-500">
              <tr>
                <th className="py-1 pr-3">Step</th>
                <th className="hidden pr-3 sm:table-cell">SAE</th>
                <th className="pr-3">Eval loss</th>
                <th className="hidden pr-3 sm:table-cell">Size</th>
                <th className="text-right">Actions</th>
              </tr>
            </thead>
            <tbody>
              {checkpoints.map((c) => (
                <tr key={c.id} className="border-t border-slate-800" data-testid="checkpoint-row">
                  <td className="py-1.5 pr-3 font-mono">
                    {formatCount(c.step)}
                    {c.is_best && <span className="ml-2 rounded bg-emerald-500/20 px-1.5 text-xs text-emerald-300">best</span>}
                  </td>
                  <td className="hidden pr-3 sm:table-cell">{c.sae}</td>
                  <td className="pr-3 font-mono">{formatMetric(c.eval_loss)}</td>
                  <td className="hidden pr-3 sm:table-cell">{formatBytes(c.size_bytes)}</td>
                  <td className="whitespace-nowrap text-right">
                    <IconButton label={`Resume from step ${c.step}`} icon={<Play className="h-4 w-4" />} onClick={() => go(c, "resume")} disabled={busy} />
                    <IconButton label={`Export step ${c.step}`} icon={<Upload className="h-4 w-4" />} onClick={() => go(c, "export")} />
                    <IconButton label={`Download step ${c.step}`} icon={<Download className="h-4 w-4" />} onClick={() => go(c, "download")} />
                    <IconButton label={`Delete step ${c.step}`} icon={<Trash2 className="h-4 w-4" />} onClick={() => go(c, "delete")} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {askBest && (
        <ConfirmDialog
          title="Delete the best checkpoint"
          body={<>Step {askBest.step} is the best checkpoint of {askBest.sae} (lowest held-out loss). Delete it anyway?</>}
          confirmLabel="Delete best"
          onConfirm={() => {
            act.mutate({ c: askBest, action: "delete" });
            setAskBest(null);
          }}
          onCancel={() => setAskBest(null)}
        />
      )}
    </Panel>
  );
}
