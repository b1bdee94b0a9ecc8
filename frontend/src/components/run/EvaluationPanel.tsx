import { useMemo } from "react";
import type { MetricRow } from "../../api/cache";
import { formatEval, latestEvaluations, shownMetrics } from "../../lib/evaluation";
import { formatCount } from "../../lib/format";
import { Panel } from "../ui";

/** The latest held-out evaluation of each SAE of the run (one column per SAE; `sae`
 * narrows a sweep to the picked one), from the run's streamed metric lines, so it
 * follows each eval step and the final evaluation live. */
export function EvaluationPanel({ rows, sae }: { rows: MetricRow[]; sae: string | null }) {
  const evals = useMemo(() => latestEvaluations(rows).filter((e) => !sae || e.sae === sae), [rows, sae]);
  const metrics = shownMetrics(evals);
  return (
    <Panel title="Evaluation (held-out rows)">
      {evals.length === 0 ? (
        <p className="text-sm text-slate-400">No evaluation yet: the first comes at the first eval step.</p>
      ) : (
        <div className="overflow-x-auto">
          <table className="w-full max-w-3xl text-left text-sm" aria-label="Held-out evaluation">
            <thead className="text-xs text-slate-500">
              <tr>
                <th className="py-1 pr-4 font-medium">Metric</th>
                {evals.map((e) => (
                  <th key={e.sae} className="py-1 pr-4 font-medium">
                    {evals.length > 1 ? `${e.sae} · ` : ""}step {formatCount(e.step)}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {metrics.map((m) => (
                <tr key={m.key} className="border-t border-slate-800" data-testid={`eval-${m.key}`}>
                  <td className="py-1 pr-4 text-slate-300" title={m.hint}>
                    {m.label}
                  </td>
                  {evals.map((e) => (
                    <td key={e.sae} className="py-1 pr-4 font-mono text-slate-200">
                      {formatEval(m, e.metrics[m.key])}
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
