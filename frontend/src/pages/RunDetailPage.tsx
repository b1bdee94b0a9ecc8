import { useQuery } from "@tanstack/react-query";
import { useMemo, useState, type ReactNode } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router-dom";
import { useRunAction } from "../api/actions";
import type { Metric, TrainingDetail } from "../api/client";
import type { MetricRow } from "../api/cache";
import { useTrainingStream } from "../api/live";
import { trainingQuery } from "../api/queries";
import { ACTION_ICONS } from "../components/actionIcons";
import { FeaturesTab } from "../components/features/FeaturesTab";
import { CheckpointsPanel } from "../components/run/CheckpointsPanel";
import { EvaluationPanel } from "../components/run/EvaluationPanel";
import { HyperparameterTable } from "../components/run/HyperparameterTable";
import { RunCharts, series } from "../components/run/RunCharts";
import { Button, ConfirmDialog, ErrorBanner, Panel, ProgressBar, Stat, StatusBadge } from "../components/ui";
import { ACTION_LABEL, type RunAction } from "../lib/actions";
import { formatCount, formatDuration, formatMetric, formatPercent, latentsOf } from "../lib/format";

/** What one tab of the run page shows; the page lists its tabs in TABS below. */
export interface RunView {
  run: TrainingDetail;
  rows: MetricRow[];
  /** The SAE picked in a sweep (null: the only one). */
  sae: string | null;
}

/** The run page's sections, in order. A tab bar appears once there is more than one;
 * a new view (e.g. a run's features) is one more entry here. */
const TABS: { id: string; label: string; render: (v: RunView) => ReactNode }[] = [
  { id: "training", label: "Training", render: (v) => <TrainingTab {...v} /> },
  { id: "features", label: "Features", render: (v) => <FeaturesTab trainingId={v.run.id} /> },
];

function TrainingTab({ run, rows, sae }: RunView) {
  const train = useMemo(() => series(rows, "train", sae), [rows, sae]);
  const downstream = rows.filter((r) => r.kind === "downstream" && (!sae || r.sae === sae)).at(-1) as Metric | undefined;
  // the row's step comes with the job's heartbeat; logged lines can be newer
  const shownStep = Math.max(run.step, run.status === "running" ? (train.at(-1)?.step ?? 0) : 0);
  const shownProgress = run.total_steps ? Math.max(run.progress, shownStep / run.total_steps) : run.progress;
  const latest = (train.at(-1) ?? run.latest_metrics ?? {}) as Record<string, number>;
  return (
    <div className="space-y-4">
      <Panel>
        <div className="space-y-2">
          <ProgressBar value={shownProgress} label="Training progress" />
          <div className="flex flex-wrap justify-between gap-2 text-sm text-slate-400">
            <span data-testid="detail-steps">
              Step {formatCount(shownStep)} / {formatCount(run.total_steps)}
            </span>
            <span>{run.status === "running" ? `ETA ${formatDuration(run.eta_seconds)}` : ""}</span>
          </div>
          <div className="grid grid-cols-2 gap-3 pt-2 sm:grid-cols-3 lg:grid-cols-6">
            <Stat label="Loss" value={formatMetric(latest.loss)} />
            <Stat label="L0" value={formatMetric(latest.l0)} />
            <Stat label="FVU" value={formatMetric(latest.fvu)} />
            <Stat label="Dead" value={formatPercent(latest.dead_fraction)} />
            <Stat label="Tokens/s" value={formatCount(latest.tokens_per_s, true)} />
            <Stat label="CE recovered" value={formatMetric(downstream?.metrics.ce_loss_recovered as number | undefined)} />
          </div>
        </div>
      </Panel>
      <RunCharts rows={rows} sae={sae} train={train} latest={latest} />
      <EvaluationPanel rows={rows} sae={sae} />
      <CheckpointsPanel run={run} />
      <HyperparameterTable run={run} sae={sae} />
    </div>
  );
}

export function RunDetailPage() {
  const id = Number(useParams().id);
  const navigate = useNavigate();
  const valid = Number.isFinite(id) && id > 0;
  const query = useQuery({ ...trainingQuery(id), enabled: valid });
  const { rows } = useTrainingStream(valid ? id : null);
  const action = useRunAction();
  const [askDelete, setAskDelete] = useState(false);
  const [picked, setPicked] = useState<string | null>(null);
  // the tab is in the URL (?tab=features), so a link or a reload opens the same view
  const [params, setParams] = useSearchParams();
  const tab = params.get("tab") ?? TABS[0].id;
  const setTab = (t: string) => setParams(t === TABS[0].id ? {} : { tab: t }, { replace: true });
  const saes = useMemo(() => [...new Set(rows.map((r) => r.sae))], [rows]);
  const run = query.data;

  if (!run) return query.error ? <ErrorBanner message={query.error.message} /> : <p className="text-slate-400">Loading…</p>;
  const sae = picked ?? saes[0] ?? null;

  function act(a: RunAction) {
    if (!run) return;
    if (a === "delete") setAskDelete(true);
    else
      action.mutate(
        { training: run, action: a },
        { onSuccess: (updated) => a === "retry" && updated && navigate(`/runs/${updated.id}`) },
      );
  }

  return (
    <div className="space-y-4">
      <div className="flex flex-wrap items-start justify-between gap-3">
        <div className="min-w-0">
          <p className="text-xs text-slate-500">
            <Link to="/" className="hover:underline">
              Runs
            </Link>{" "}
            / #{run.id}
          </p>
          <h1 className="truncate text-xl font-semibold">{run.name}</h1>
          <p className="text-sm text-slate-400">
            {run.architecture} · {latentsOf(run)}
            {run.worker ? ` · on ${run.worker}` : ""}
          </p>
        </div>
        <div className="flex flex-wrap items-center gap-2">
          <StatusBadge status={run.status} control={run.control} />
          {run.actions.map((a) => (
            <Button key={a} icon={ACTION_ICONS[a]} tone={a === "delete" ? "danger" : "default"} onClick={() => act(a)}>
              {ACTION_LABEL[a]}
            </Button>
          ))}
        </div>
      </div>

      <ErrorBanner message={action.error?.message ?? run.error} onClose={action.error ? () => action.reset() : undefined} />

      {saes.length > 1 && (
        <label className="flex items-center gap-2 text-sm text-slate-300">
          SAE
          <select aria-label="Which SAE" value={sae ?? ""} onChange={(e) => setPicked(e.target.value)}>
            {saes.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </label>
      )}

      {TABS.length > 1 && (
        <div role="tablist" aria-label="Run views" className="flex gap-1 border-b border-slate-800">
          {TABS.map((t) => (
            <button key={t.id} type="button" role="tab" aria-selected={tab === t.id} onClick={() => setTab(t.id)} className={`px-3 py-1.5 text-sm ${tab === t.id ? "border-b-2 border-indigo-400 text-white" : "text-slate-400"}`}>
              {t.label}
            </button>
          ))}
        </div>
      )}
      {(TABS.find((t) => t.id === tab) ?? TABS[0]).render({ run, rows, sae })}

      {askDelete && (
        <ConfirmDialog
          title="Delete run"
          body={<>Delete {run.name} with its checkpoints and exports?</>}
          confirmLabel="Delete"
          onConfirm={() => {
            setAskDelete(false);
            action.mutate({ training: run, action: "delete" }, { onSuccess: () => navigate("/") });
          }}
          onCancel={() => setAskDelete(false)}
        />
      )}
    </div>
  );
}
