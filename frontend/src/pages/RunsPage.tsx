import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { GitCompare, Plus, Sparkles, Trash2 } from "lucide-react";
import { useState } from "react";
import { Link, useNavigate } from "react-router-dom";
import { putTraining, useRunAction } from "../api/actions";
import { api, call, type Training } from "../api/client";
import { datasetsQuery, keys, trainingsQuery } from "../api/queries";
import { TrainingCard } from "../components/TrainingCard";
import { Button, ConfirmDialog, ErrorBanner, Panel, ProgressBar } from "../components/ui";
import type { RunAction } from "../lib/actions";
import { formatPercent } from "../lib/format";
import { enumOf } from "../lib/validate";

const FILTERS = ["all", ...enumOf("TrainingPublic", "status")];

export function RunsPage() {
  const qc = useQueryClient();
  const runs = useQuery(trainingsQuery);
  const datasets = useQuery(datasetsQuery);
  const [filter, setFilter] = useState("all");
  const [selected, setSelected] = useState<Set<number>>(new Set());
  const [confirm, setConfirm] = useState<{ ids: number[]; names: string } | null>(null);
  const navigate = useNavigate();
  const action = useRunAction();
  const remove = useMutation({
    mutationFn: async (ids: number[]) => {
      if (ids.length === 1) await call(api.DELETE("/api/v1/trainings/{training_id}", { params: { path: { training_id: ids[0] } } }));
      else await call(api.POST("/api/v1/trainings/bulk-delete", { body: { ids } }));
    },
    onSuccess: (_, ids) => {
      qc.setQueryData<Training[]>(keys.trainings, (prev) => prev?.filter((r) => !ids.includes(r.id)));
      setSelected(new Set());
    },
    onError: () => void qc.invalidateQueries({ queryKey: keys.trainings, exact: true }),
  });
  const demo = useMutation({
    mutationFn: () => call(api.POST("/api/v1/demo")),
    onSuccess: (started) => {
      putTraining(qc, started.training);
      void qc.invalidateQueries({ queryKey: keys.datasets, exact: true });
    },
  });

  const live = runs.data ?? [];
  const shown = filter === "all" ? live : live.filter((r) => r.status === filter);
  const extracting = (datasets.data ?? []).filter((j) => j.status === "running" || j.status === "queued");
  const failure = (action.error ?? remove.error ?? demo.error ?? runs.error)?.message ?? null;

  function act(t: Training, a: RunAction) {
    if (a === "delete") setConfirm({ ids: [t.id], names: t.name });
    else action.mutate({ training: t, action: a });
  }

  const selectedIds = [...selected].filter((id) => live.some((r) => r.id === id));

  return (
    <div className="space-y-4">
      <div className="flex flex-wrap items-center justify-between gap-3">
        <h1 className="text-xl font-semibold">Training runs</h1>
        <div className="flex flex-wrap items-center gap-2">
          <label className="flex items-center gap-2 text-sm text-slate-400">
            Status
            <select aria-label="Filter by status" value={filter} onChange={(e) => setFilter(e.target.value)}>
              {FILTERS.map((f) => (
                <option key={f} value={f}>
                  {f}
                </option>
              ))}
            </select>
          </label>
          {selectedIds.length > 0 && (
            <>
              <Button icon={<GitCompare className="h-4 w-4" />} onClick={() => navigate(`/compare?ids=${selectedIds.join(",")}`)}>
                Compare selected
              </Button>
              <Button
                tone="danger"
                icon={<Trash2 className="h-4 w-4" />}
                onClick={() => setConfirm({ ids: selectedIds, names: `${selectedIds.length} runs` })}
              >
                Delete selected ({selectedIds.length})
              </Button>
            </>
          )}
          <Link to="/new" className="inline-flex items-center gap-1.5 rounded-md bg-indigo-600 px-3 py-1.5 text-sm font-medium text-white hover:bg-indigo-500">
            <Plus className="h-4 w-4" aria-hidden /> New training
          </Link>
        </div>
      </div>

      <ErrorBanner
        message={failure}
        onClose={() => {
          action.reset();
          remove.reset();
          demo.reset();
        }}
      />

      {extracting.map((j) => (
        <Panel key={j.id}>
          <div className="flex flex-wrap items-center gap-3 text-sm">
            <span className="text-slate-300">
              Extracting activations <strong>{j.name}</strong>: {formatPercent(j.progress)}
            </span>
            <div className="min-w-[8rem] flex-1">
              <ProgressBar value={j.progress} label={`Extraction ${j.name}`} />
            </div>
            <Link to="/datasets" className="text-indigo-300 hover:underline">
              Datasets
            </Link>
          </div>
        </Panel>
      ))}

      {runs.data === undefined ? (
        runs.error ? null : <p className="text-slate-400">Loading…</p>
      ) : live.length === 0 ? (
        <Panel className="py-10 text-center">
          <Sparkles className="mx-auto mb-3 h-8 w-8 text-indigo-300" aria-hidden />
          <h2 className="mb-1 text-lg font-semibold">No training runs yet</h2>
          <p className="mx-auto mb-5 max-w-lg text-sm text-slate-400">
            Try the demo: it extracts MiniLM&apos;s layer-3 residual stream over the Python docs (packaged, offline) and
            trains a TopK SAE on it. You will see it train live in about a minute.
          </p>
          <div className="flex flex-wrap justify-center gap-2">
            <Button tone="primary" icon={<Sparkles className="h-4 w-4" />} onClick={() => demo.mutate()} disabled={demo.isPending}>
              {demo.isPending ? "Starting…" : "Start the demo"}
            </Button>
            <Link to="/new" className="inline-flex items-center gap-1.5 rounded-md border border-slate-700 px-3 py-1.5 text-sm hover:bg-slate-800">
              Configure a training
            </Link>
          </div>
        </Panel>
      ) : shown.length === 0 ? (
        <p className="text-sm text-slate-400">No {filter} runs.</p>
      ) : (
        <div className="grid gap-3 sm:grid-cols-2 xl:grid-cols-3">
          {shown.map((t) => (
            <TrainingCard
              key={t.id}
              training={t}
              selected={selected.has(t.id)}
              onSelect={(on) =>
                setSelected((prev) => {
                  const next = new Set(prev);
                  if (on) next.add(t.id);
                  else next.delete(t.id);
                  return next;
                })
              }
              onAction={(a) => act(t, a)}
            />
          ))}
        </div>
      )}

      {confirm && (
        <ConfirmDialog
          title="Delete runs"
          body={<>Delete {confirm.names}? Their checkpoints, metrics and exported SAEs are removed.</>}
          confirmLabel="Delete"
          onConfirm={() => {
            setConfirm(null);
            remove.mutate(confirm.ids);
          }}
          onCancel={() => setConfirm(null)}
        />
      )}
    </div>
  );
}
