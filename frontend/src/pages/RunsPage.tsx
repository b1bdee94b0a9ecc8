import { GitCompare, Plus, Sparkles, Trash2 } from "lucide-react";
import { useCallback, useEffect, useMemo, useState } from "react";
import { Link, useNavigate } from "react-router-dom";
import { runAction } from "../api/actions";
import { api, call, type Training } from "../api/client";
import { useJobEvents, type JobSnapshot } from "../api/live";
import { TrainingCard } from "../components/TrainingCard";
import { Button, ConfirmDialog, ErrorBanner, Panel, ProgressBar } from "../components/ui";
import type { RunAction } from "../lib/actions";
import { formatPercent } from "../lib/format";

const FILTERS = ["all", "running", "queued", "paused", "completed", "failed", "cancelled"];

/** A run with the live fields of its latest /ws/events snapshot. */
function merge(t: Training, snap: JobSnapshot | undefined): Training {
  if (!snap) return t;
  return {
    ...t,
    status: snap.status,
    control: snap.control,
    progress: snap.progress,
    error: snap.error,
    step: snap.step ?? t.step,
    total_steps: snap.total_steps ?? t.total_steps,
    eta_seconds: snap.eta_seconds ?? null,
    latest_metrics: snap.latest_metrics ?? t.latest_metrics,
  };
}

/** `t` added first, or replacing the row with its id (a live event may have listed it). */
function upsert(list: Training[] | null, t: Training): Training[] {
  return [t, ...(list ?? []).filter((r) => r.id !== t.id)];
}

export function RunsPage() {
  const [runs, setRuns] = useState<Training[] | null>(null);
  const [filter, setFilter] = useState("all");
  const [selected, setSelected] = useState<Set<number>>(new Set());
  const [error, setError] = useState<string | null>(null);
  const [confirm, setConfirm] = useState<{ ids: number[]; names: string } | null>(null);
  const [starting, setStarting] = useState(false);
  const navigate = useNavigate();

  const load = useCallback(async () => {
    try {
      const page = await call(api.GET("/api/v1/trainings", { params: { query: { limit: 500 } } }));
      setRuns(page.items);
    } catch (e) {
      setError((e as Error).message);
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);

  const { jobs } = useJobEvents((msg) => {
    // a run this page has not listed (created elsewhere): reload the list
    if (msg.type === "training" && runs && !runs.some((r) => r.id === msg.id)) void load();
    if (msg.type === "deleted" && msg.kind === "training") setRuns((prev) => prev?.filter((r) => r.id !== msg.id) ?? prev);
  });

  const live = useMemo(() => (runs ?? []).map((r) => merge(r, jobs[`training:${r.id}`])), [runs, jobs]);
  const shown = filter === "all" ? live : live.filter((r) => r.status === filter);
  const extracting = Object.values(jobs).filter(
    (j) => j.type === "activation_dataset" && (j.status === "running" || j.status === "queued"),
  );

  async function act(t: Training, action: RunAction) {
    if (action === "delete") {
      setConfirm({ ids: [t.id], names: t.name });
      return;
    }
    setError(null);
    try {
      const updated = await runAction(t, action);
      if (action === "retry" && updated) setRuns((prev) => upsert(prev, updated));
      else if (updated) setRuns((prev) => prev?.map((r) => (r.id === updated.id ? updated : r)) ?? prev);
    } catch (e) {
      setError((e as Error).message);
    }
  }

  async function remove(ids: number[]) {
    setConfirm(null);
    setError(null);
    try {
      if (ids.length === 1) {
        await call(api.DELETE("/api/v1/trainings/{training_id}", { params: { path: { training_id: ids[0] } } }));
      } else {
        await call(api.POST("/api/v1/trainings/bulk-delete", { body: { ids } }));
      }
      setRuns((prev) => prev?.filter((r) => !ids.includes(r.id)) ?? prev);
      setSelected(new Set());
    } catch (e) {
      setError((e as Error).message);
      void load();
    }
  }

  async function startDemo() {
    setStarting(true);
    setError(null);
    try {
      const started = await call(api.POST("/api/v1/demo"));
      setRuns((prev) => upsert(prev, started.training));
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setStarting(false);
    }
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

      <ErrorBanner message={error} onClose={() => setError(null)} />

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

      {runs === null ? (
        error ? null : <p className="text-slate-400">Loading…</p>
      ) : runs.length === 0 ? (
        <Panel className="py-10 text-center">
          <Sparkles className="mx-auto mb-3 h-8 w-8 text-indigo-300" aria-hidden />
          <h2 className="mb-1 text-lg font-semibold">No training runs yet</h2>
          <p className="mx-auto mb-5 max-w-lg text-sm text-slate-400">
            Try the demo: it extracts MiniLM&apos;s layer-3 residual stream over the Python docs (packaged, offline) and
            trains a TopK SAE on it. You will see it train live in about a minute.
          </p>
          <div className="flex flex-wrap justify-center gap-2">
            <Button tone="primary" icon={<Sparkles className="h-4 w-4" />} onClick={startDemo} disabled={starting}>
              {starting ? "Starting…" : "Start the demo"}
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
          onConfirm={() => remove(confirm.ids)}
          onCancel={() => setConfirm(null)}
        />
      )}
    </div>
  );
}
