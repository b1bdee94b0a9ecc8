import { Download, Play, Trash2, Upload } from "lucide-react";
import { useCallback, useEffect, useMemo, useState, type ReactNode } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router-dom";
import { download, runAction } from "../api/actions";
import { api, call, type Checkpoint, type Metric, type Training } from "../api/client";
import { type MetricRow, useTrainingStream } from "../api/live";
import { DensityHistogram } from "../components/DensityHistogram";
import { FeaturesTab } from "../components/features/FeaturesTab";
import { RunTabs } from "../components/features/RunTabs";
import { MetricChart } from "../components/MetricChart";
import { Button, ConfirmDialog, ErrorBanner, IconButton, Panel, ProgressBar, Stat, StatusBadge } from "../components/ui";
import { ACTION_LABEL, actionsFor, type RunAction } from "../lib/actions";
import { ACTION_ICONS } from "../components/actionIcons";
import { formatBytes, formatCount, formatDuration, formatMetric, formatPercent } from "../lib/format";



/** Rows of one kind (and SAE) → chart points keyed by metric name. */
function series(rows: MetricRow[], kind: string, sae: string | null): Record<string, number>[] {
  const byStep = new Map<number, Record<string, number>>();
  for (const r of rows) {
    if (r.kind !== kind || (sae && r.sae !== sae)) continue;
    const point = byStep.get(r.step) ?? { step: r.step };
    for (const [k, v] of Object.entries(r.metrics)) if (typeof v === "number") point[k] = v;
    byStep.set(r.step, point);
  }
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}

function flatten(obj: Record<string, unknown>, prefix = ""): [string, string][] {
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(obj)) {
    if (v && typeof v === "object" && !Array.isArray(v)) out.push(...flatten(v as Record<string, unknown>, `${prefix}${k}.`));
    else out.push([prefix + k, v === null || v === undefined ? "default" : Array.isArray(v) ? v.join(", ") : String(v)]);
  }
  return out;
}

export function RunDetailPage() {
  const id = Number(useParams().id);
  const navigate = useNavigate();
  const [run, setRun] = useState<Training | null>(null);
  const [checkpoints, setCheckpoints] = useState<Checkpoint[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [confirm, setConfirm] = useState<{ title: string; body: ReactNode; label: string; go: () => void } | null>(null);
  const [sae, setSae] = useState<string | null>(null);
  const stream = useTrainingStream(Number.isFinite(id) ? id : null);
  const [params, setParams] = useSearchParams();
  const tab = params.get("tab") === "features" ? "features" : "training";

  const load = useCallback(async () => {
    try {
      const [t, c] = await Promise.all([
        call(api.GET("/api/v1/trainings/{training_id}", { params: { path: { training_id: id } } })),
        call(api.GET("/api/v1/trainings/{training_id}/checkpoints", { params: { path: { training_id: id } } })),
      ]);
      setRun(t);
      setCheckpoints(c);
    } catch (e) {
      setError((e as Error).message);
    }
  }, [id]);

  useEffect(() => {
    void load();
  }, [load, stream.checkpointEvents, stream.status?.status]);

  const live: Training | null = run && stream.status ? { ...run, ...stream.status } : run;
  const saes = useMemo(() => [...new Set(stream.rows.map((r) => r.sae))], [stream.rows]);
  const current = sae ?? saes[0] ?? null;
  const train = useMemo(() => series(stream.rows, "train", current), [stream.rows, current]);
  const evals = useMemo(() => series(stream.rows, "eval", current), [stream.rows, current]);
  const merged = useMemo(() => {
    const map = new Map<number, Record<string, number>>();
    for (const p of [...train, ...evals]) map.set(p.step, { ...(map.get(p.step) ?? {}), ...p });
    return [...map.values()].sort((a, b) => a.step - b.step);
  }, [train, evals]);
  const density = useMemo(() => {
    const rows = stream.rows.filter((r) => r.kind === "density" && (!current || r.sae === current));
    return rows.length ? rows[rows.length - 1] : null;
  }, [stream.rows, current]);
  const downstream = stream.rows.filter((r) => r.kind === "downstream" && (!current || r.sae === current)).at(-1) as Metric | undefined;

  if (!live) return error ? <ErrorBanner message={error} /> : <p className="text-slate-400">Loading…</p>;
  // the row's step comes with the job's heartbeat; logged lines can be newer
  const shownStep = Math.max(live.step, live.status === "running" ? (train.at(-1)?.step ?? 0) : 0);
  const shownProgress = live.total_steps ? Math.max(live.progress, shownStep / live.total_steps) : live.progress;
  const latest = (train.at(-1) ?? live.latest_metrics ?? {}) as Record<string, number>;
  // the loss and its terms; L1 / L0 penalties only where λ weighs them in
  const penalised = (latest.sparsity_coefficient ?? 0) > 0;
  const lossTerms = Object.keys(latest).filter(
    (k) => ["loss", "mse", "auxk"].includes(k) || (penalised && ["l1", "l0_penalty", "sparsity"].includes(k)),
  );

  async function act(action: RunAction) {
    if (!live) return;
    if (action === "delete") {
      setConfirm({
        title: "Delete run",
        body: <>Delete {live.name} with its checkpoints and exports?</>,
        label: "Delete",
        go: async () => {
          await runAction(live, "delete");
          navigate("/");
        },
      });
      return;
    }
    setError(null);
    try {
      const updated = await runAction(live, action);
      if (action === "retry" && updated) navigate(`/runs/${updated.id}`);
      else if (updated) setRun(updated);
    } catch (e) {
      setError((e as Error).message);
    }
  }

  async function checkpointAction(c: Checkpoint, action: "resume" | "export" | "download" | "delete") {
    setError(null);
    setNotice(null);
    const path = { training_id: id, checkpoint_id: c.id };
    try {
      if (action === "resume") {
        setRun(await call(api.POST("/api/v1/trainings/{training_id}/checkpoints/{checkpoint_id}/resume", { params: { path } })));
        setNotice(`Resuming from step ${c.step}.`);
      } else if (action === "export") {
        const out = await call(api.POST("/api/v1/trainings/{training_id}/checkpoints/{checkpoint_id}/export", { params: { path } }));
        setNotice(`Exported step ${c.step} in SAELens format to ${out.path}.`);
      } else if (action === "download") {
        await download(`/api/v1/trainings/${id}/checkpoints/${c.id}/download`, `checkpoint-${c.step}.zip`);
      } else {
        const go = async () => {
          setConfirm(null);
          try {
            await call(api.DELETE("/api/v1/trainings/{training_id}/checkpoints/{checkpoint_id}", { params: { path, query: { allow_best: c.is_best } } }));
            setCheckpoints((prev) => prev.filter((x) => x.id !== c.id));
          } catch (e) {
            setError((e as Error).message);
          }
        };
        if (c.is_best) {
          setConfirm({ title: "Delete the best checkpoint", body: <>Step {c.step} is the best checkpoint of {c.sae} (lowest held-out loss). Delete it anyway?</>, label: "Delete best", go });
        } else await go();
      }
    } catch (e) {
      setError((e as Error).message);
    }
  }

  return (
    <div className="space-y-4">
      <div className="flex flex-wrap items-start justify-between gap-3">
        <div className="min-w-0">
          <p className="text-xs text-slate-500">
            <Link to="/" className="hover:underline">
              Runs
            </Link>{" "}
            / #{live.id}
          </p>
          <h1 className="truncate text-xl font-semibold">{live.name}</h1>
          <p className="text-sm text-slate-400">
            {live.architecture} · {live.d_sae ? `${formatCount(live.d_sae)} latents` : `${(live.config.sae as { expansion_factor?: number } | undefined)?.expansion_factor ?? 8}× d_in latents`}
            {live.worker ? ` · on ${live.worker}` : ""}
          </p>
        </div>
        <div className="flex flex-wrap items-center gap-2">
          <StatusBadge status={live.status} control={live.control} />
          {actionsFor(live.status, live.control).map((a) => (
            <Button key={a} icon={ACTION_ICONS[a]} tone={a === "delete" ? "danger" : "default"} onClick={() => act(a)}>
              {ACTION_LABEL[a]}
            </Button>
          ))}
        </div>
      </div>

      <ErrorBanner message={error ?? live.error} onClose={error ? () => setError(null) : undefined} />
      {notice && (
        <p role="status" className="break-words text-sm text-emerald-300">
          {notice}
        </p>
      )}

      <RunTabs tab={tab} onChange={(t) => setParams(t === "features" ? { tab: t } : {}, { replace: true })} />
      {tab === "features" ? (
        <FeaturesTab trainingId={id} />
      ) : (
      <>
      <Panel>
        <div className="space-y-2">
          <ProgressBar value={shownProgress} label="Training progress" />
          <div className="flex flex-wrap justify-between gap-2 text-sm text-slate-400">
            <span data-testid="detail-steps">
              Step {formatCount(shownStep)} / {formatCount(live.total_steps)}
            </span>
            <span>{live.status === "running" ? `ETA ${formatDuration(live.eta_seconds)}` : ""}</span>
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

      {saes.length > 1 && (
        <label className="flex items-center gap-2 text-sm text-slate-300">
          SAE
          <select aria-label="Which SAE" value={current ?? ""} onChange={(e) => setSae(e.target.value)}>
            {saes.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </label>
      )}

      <div className="grid gap-3 md:grid-cols-2">
        <MetricChart title="Loss" data={merged} series={lossTerms.map((k) => ({ key: k, label: k })).concat(evals.length ? [{ key: "eval_loss", label: "eval loss" }] : [])} defaultLog />
        <MetricChart title="FVU" data={merged} series={[{ key: "fvu", label: "train" }, { key: "eval_fvu", label: "held-out" }]} defaultLog />
        <MetricChart title="L0" data={merged} series={[{ key: "l0", label: "train" }, { key: "eval_l0", label: "held-out" }]} />
        <MetricChart title="Dead fraction" data={merged} series={[{ key: "dead_fraction", label: "dead" }]} />
        <MetricChart title="Learning rate" data={merged} series={[{ key: "lr", label: "lr" }]} />
        {density ? (
          <DensityHistogram edges={density.metrics.feature_density.edges} counts={density.metrics.feature_density.counts} step={density.step} />
        ) : penalised ? (
          <MetricChart title="Sparsity coefficient" data={merged} series={[{ key: "sparsity_coefficient", label: "λ" }]} />
        ) : (
          <MetricChart title="Gradient norm" data={merged} series={[{ key: "grad_norm", label: "‖g‖" }]} />
        )}
      </div>

      <Panel title={`Checkpoints (${checkpoints.length})`}>
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
                      <IconButton label={`Resume from step ${c.step}`} icon={<Play className="h-4 w-4" />} onClick={() => checkpointAction(c, "resume")} disabled={live.status === "running" || live.status === "queued"} />
                      <IconButton label={`Export step ${c.step}`} icon={<Upload className="h-4 w-4" />} onClick={() => checkpointAction(c, "export")} />
                      <IconButton label={`Download step ${c.step}`} icon={<Download className="h-4 w-4" />} onClick={() => checkpointAction(c, "download")} />
                      <IconButton label={`Delete step ${c.step}`} icon={<Trash2 className="h-4 w-4" />} onClick={() => checkpointAction(c, "delete")} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Panel>

      <Panel title="Hyperparameters">
        <dl className="grid gap-x-6 gap-y-1 text-sm sm:grid-cols-2 lg:grid-cols-3">
          {flatten(live.config as Record<string, unknown>).map(([k, v]) => (
            <div key={k} className="flex min-w-0 justify-between gap-3 border-b border-slate-800/60 py-1">
              <dt className="shrink-0 text-slate-400">{k}</dt>
              <dd className="min-w-0 truncate text-right font-mono text-slate-200" title={v}>
                {v}
              </dd>
            </div>
          ))}
        </dl>
      </Panel>

      </>
      )}

      {confirm && (
        <ConfirmDialog
          title={confirm.title}
          body={confirm.body}
          confirmLabel={confirm.label}
          onConfirm={() => {
            const go = confirm.go;
            setConfirm(null);
            go();
          }}
          onCancel={() => setConfirm(null)}
        />
      )}
    </div>
  );
}
