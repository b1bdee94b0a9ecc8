import { useQueries } from "@tanstack/react-query";
import type { Training } from "../api/client";
import { metricsQuery } from "../api/queries";
import { formatEval, latestEvaluations, shownMetrics, type Evaluation } from "../lib/evaluation";
import { formatCount } from "../lib/format";
import { Panel } from "./ui";

interface Column extends Evaluation {
  run: Training | undefined;
  id: number;
}

/** Compare's side-by-side table: the latest held-out evaluation of each selected run
 * (one column per run, or per SAE of a sweep), every metric a row. */
export function EvaluationCompareTable({ ids, runs }: { ids: number[]; runs: Training[] }) {
  const evals = useQueries({ queries: ids.map((id) => metricsQuery(id, "eval")) });
  const downs = useQueries({ queries: ids.map((id) => metricsQuery(id, "downstream")) });
  const columns: Column[] = ids.flatMap((id, i) =>
    latestEvaluations([...(evals[i]?.data ?? []), ...(downs[i]?.data ?? [])]).map((e) => ({ ...e, id, run: runs.find((r) => r.id === id) })),
  );
  const metrics = shownMetrics(columns);
  const loading = evals.some((q) => q.isPending);
  return (
    <Panel title="Held-out evaluation, side by side">
      {columns.length === 0 ? (
        <p className="text-sm text-slate-400">{ids.length === 0 ? "Pick runs to compare their evaluations." : loading ? "Loading…" : "The selected runs have no evaluation yet."}</p>
      ) : (
        <div className="overflow-x-auto">
          <table className="w-full text-left text-sm" aria-label="Evaluation of the selected runs">
            <thead className="text-xs text-slate-500">
              <tr>
                <th className="py-1 pr-4 font-medium">Metric</th>
                {columns.map((c) => (
                  <th key={`${c.id}|${c.sae}`} className="max-w-[14rem] py-1 pr-4 align-bottom font-medium" data-testid="eval-compare-run">
                    <div className="truncate text-slate-200">
                      {c.run?.name ?? `#${c.id}`}
                      {c.sae !== "sae" ? ` · ${c.sae}` : ""}
                    </div>
                    <div className="font-normal">
                      {c.run?.architecture ?? ""} · step {formatCount(c.step)}
                    </div>
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {metrics.map((m) => (
                <tr key={m.key} className="border-t border-slate-800">
                  <td className="py-1 pr-4 text-slate-300" title={m.hint}>
                    {m.label}
                  </td>
                  {columns.map((c) => (
                    <td key={`${c.id}|${c.sae}`} className="py-1 pr-4 font-mono text-slate-200">
                      {formatEval(m, c.metrics[m.key])}
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Panel>
  );
}
