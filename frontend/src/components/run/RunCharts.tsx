import { useMemo } from "react";
import type { MetricRow } from "../../api/cache";
import { DensityHistogram } from "../DensityHistogram";
import { MetricChart } from "../MetricChart";

/** Rows of one kind (and SAE) → chart points keyed by metric name. */
export function series(rows: MetricRow[], kind: string, sae: string | null): Record<string, number>[] {
  const byStep = new Map<number, Record<string, number>>();
  for (const r of rows) {
    if (r.kind !== kind || (sae && r.sae !== sae)) continue;
    const point: Record<string, number> = byStep.get(r.step) ?? { step: r.step };
    for (const [k, v] of Object.entries(r.metrics)) if (typeof v === "number") point[k] = v;
    byStep.set(r.step, point);
  }
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}

/** The run's training and held-out curves for one SAE, and its latest density histogram. */
export function RunCharts({ rows, sae, train, latest }: { rows: MetricRow[]; sae: string | null; train: Record<string, number>[]; latest: Record<string, number> }) {
  const evals = useMemo(() => series(rows, "eval", sae), [rows, sae]);
  const merged = useMemo(() => {
    const map = new Map<number, Record<string, number>>();
    for (const p of [...train, ...evals]) map.set(p.step, { ...(map.get(p.step) ?? {}), ...p });
    return [...map.values()].sort((a, b) => a.step - b.step);
  }, [train, evals]);
  const density = useMemo(() => rows.filter((r) => r.kind === "density" && (!sae || r.sae === sae)).at(-1) ?? null, [rows, sae]);
  // the loss and its terms; L1 / L0 penalties only where λ weighs them in
  const penalised = (latest.sparsity_coefficient ?? 0) > 0;
  const lossTerms = Object.keys(latest).filter(
    (k) => ["loss", "mse", "auxk"].includes(k) || (penalised && ["l1", "l0_penalty", "sparsity"].includes(k)),
  );
  return (
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
  );
}
