import { useQueries, useQuery } from "@tanstack/react-query";
import { useMemo, useState } from "react";
import { useSearchParams } from "react-router-dom";
import { CartesianGrid, Legend, ResponsiveContainer, Scatter, ScatterChart, Tooltip, XAxis, YAxis, ZAxis } from "recharts";
import type { Metric, Training } from "../api/client";
import { metricsQuery, trainingsQuery } from "../api/queries";
import { EvaluationCompareTable } from "../components/EvaluationCompareTable";
import { MetricChart } from "../components/MetricChart";
import { ErrorBanner, Panel, StatusBadge } from "../components/ui";
import { formatMetric, niceCeil } from "../lib/format";

const METRICS = [
  { key: "loss", label: "Loss", log: true },
  { key: "fvu", label: "FVU", log: true },
  { key: "l0", label: "L0", log: false },
  { key: "dead_fraction", label: "Dead fraction", log: false },
  { key: "lr", label: "Learning rate", log: false },
];

interface Point {
  id: number;
  name: string;
  l0: number;
  fvu: number;
  architecture: string;
}

/** A finished SAE's last held-out L0 and FVU (or its last training ones). */
function frontierPoint(r: Training, evalRows: Metric[] | undefined): Point | null {
  const last = evalRows?.at(-1)?.metrics as Record<string, number> | undefined;
  const m = (last ? { l0: last.eval_l0, fvu: last.eval_fvu } : r.latest_metrics) as { l0?: number; fvu?: number } | null;
  return m && m.l0 !== undefined && m.fvu !== undefined ? { id: r.id, name: r.name, l0: m.l0, fvu: m.fvu, architecture: r.architecture } : null;
}

export function ComparePage() {
  const [params, setParams] = useSearchParams();
  const [metric, setMetric] = useState("fvu");
  const ids = useMemo(() => (params.get("ids") ?? "").split(",").map(Number).filter((n) => n > 0), [params]);
  const list = useQuery(trainingsQuery);
  const runs = list.data ?? [];
  // the frontier: each finished SAE (the newest 100)
  const done = runs.filter((r) => r.status === "completed").slice(0, 100);
  const evals = useQueries({ queries: done.map((r) => metricsQuery(r.id, "eval")) });
  const trains = useQueries({ queries: ids.map((id) => metricsQuery(id, "train")) });
  const points = done
    .map((r, i) => (evals[i]?.isSuccess ? frontierPoint(r, evals[i].data) : null))
    .filter((p): p is Point => p !== null);
  const curves: Record<number, Metric[]> = Object.fromEntries(ids.map((id, i) => [id, trains[i]?.data ?? []]));
  const error = (list.error ?? evals.find((q) => q.error)?.error ?? trains.find((q) => q.error)?.error)?.message ?? null;

  const data = useMemo(() => {
    const byStep = new Map<number, Record<string, number>>();
    for (const id of ids) {
      for (const row of curves[id] ?? []) {
        const v = (row.metrics as Record<string, number>)[metric];
        if (typeof v !== "number") continue;
        const p = byStep.get(row.step) ?? { step: row.step };
        p[`r${id}`] = v;
        byStep.set(row.step, p);
      }
    }
    return [...byStep.values()].sort((a, b) => a.step - b.step);
  }, [ids, curves, metric]);

  function toggle(id: number, on: boolean) {
    const next = on ? [...ids, id] : ids.filter((x) => x !== id);
    setParams(next.length ? { ids: next.join(",") } : {});
  }

  const m = METRICS.find((x) => x.key === metric)!;
  const archs = [...new Set(points.map((p) => p.architecture))];
  const COLORS = ["#818cf8", "#34d399", "#f472b6", "#fbbf24", "#38bdf8", "#f87171", "#a78bfa"];

  return (
    <div className="space-y-4">
      <h1 className="text-xl font-semibold">Compare runs</h1>
      <ErrorBanner message={error} />
      <div className="grid gap-4 lg:grid-cols-[18rem_1fr]">
        <Panel title="Runs">
          {runs.length === 0 ? (
            <p className="text-sm text-slate-400">No runs yet.</p>
          ) : (
            <ul className="max-h-[28rem] space-y-1 overflow-y-auto pr-1">
              {runs.map((r) => (
                <li key={r.id}>
                  <label className="flex items-center gap-2 rounded px-1 py-1 text-sm hover:bg-slate-800/60">
                    <input type="checkbox" className="accent-indigo-500" checked={ids.includes(r.id)} onChange={(e) => toggle(r.id, e.target.checked)} aria-label={`Compare ${r.name} (#${r.id})`} />
                    <span className="min-w-0 flex-1 truncate">{r.name}</span>
                    <StatusBadge status={r.status} />
                  </label>
                </li>
              ))}
            </ul>
          )}
        </Panel>
        <div className="min-w-0 space-y-4">
          <div className="flex items-center gap-2">
            <label htmlFor="cmp-metric" className="text-sm text-slate-300">
              Metric
            </label>
            <select id="cmp-metric" value={metric} onChange={(e) => setMetric(e.target.value)}>
              {METRICS.map((x) => (
                <option key={x.key} value={x.key}>
                  {x.label}
                </option>
              ))}
            </select>
          </div>
          {ids.length ? (
            <MetricChart
              key={metric}
              title={`${m.label} over steps`}
              data={data}
              series={ids.map((id) => ({ key: `r${id}`, label: runs.find((r) => r.id === id)?.name ?? `#${id}` }))}
              defaultLog={m.log}
              height={300}
            />
          ) : (
            <Panel>
              <p className="text-sm text-slate-400">Pick runs to overlay their curves.</p>
            </Panel>
          )}
          <EvaluationCompareTable ids={ids} runs={runs} />
          <figure aria-label="L0 versus FVU of finished SAEs" className="rounded-lg border border-slate-800 bg-slate-900/60 p-3">
            <figcaption className="mb-2 text-sm font-semibold text-slate-200">
              Sparsity vs fidelity <span className="font-normal text-slate-400">(held-out L0 and FVU of finished SAEs; lower-left is better)</span>
            </figcaption>
            {points.length ? (
              <>
                <div style={{ height: 300 }}>
                  <ResponsiveContainer width="100%" height="100%">
                    <ScatterChart margin={{ top: 8, right: 12, bottom: 8, left: 0 }}>
                      <CartesianGrid stroke="#1e293b" />
                      <XAxis type="number" dataKey="l0" name="L0" domain={[0, (max: number) => niceCeil(max * 1.05)]} stroke="#64748b" fontSize={11} label={{ value: "L0", position: "insideBottomRight", offset: -4, fill: "#94a3b8", fontSize: 11 }} />
                      <YAxis type="number" dataKey="fvu" name="FVU" domain={[0, (max: number) => niceCeil(max * 1.05)]} stroke="#64748b" fontSize={11} width={52} tickFormatter={(v) => formatMetric(v)} />
                      <ZAxis range={[70, 70]} />
                      <Tooltip
                        contentStyle={{ background: "#0f172a", border: "1px solid #334155", fontSize: 12 }}
                        formatter={(v: number) => formatMetric(v)}
                        labelFormatter={() => ""}
                      />
                      <Legend wrapperStyle={{ fontSize: 11 }} />
                      {archs.map((a, i) => (
                        <Scatter key={a} name={a} data={points.filter((p) => p.architecture === a)} fill={COLORS[i % COLORS.length]} isAnimationActive={false} />
                      ))}
                    </ScatterChart>
                  </ResponsiveContainer>
                </div>
                <table className="mt-2 w-full text-left text-xs text-slate-300" aria-label="Finished SAEs">
                  <thead className="text-slate-500">
                    <tr>
                      <th className="py-1">Run</th>
                      <th>L0</th>
                      <th>FVU</th>
                    </tr>
                  </thead>
                  <tbody>
                    {points.map((p) => (
                      <tr key={p.id} className="border-t border-slate-800" data-testid="frontier-point">
                        <td className="max-w-[12rem] truncate py-1">{p.name}</td>
                        <td className="font-mono">{formatMetric(p.l0)}</td>
                        <td className="font-mono">{formatMetric(p.fvu)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </>
            ) : (
              <p className="py-6 text-center text-sm text-slate-400">No finished SAEs yet.</p>
            )}
          </figure>
        </div>
      </div>
    </div>
  );
}
