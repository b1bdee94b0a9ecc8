import { useState } from "react";
import { CartesianGrid, Legend, Line, LineChart, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { formatCount, formatMetric, niceCeil } from "../lib/format";

const COLORS = ["#818cf8", "#34d399", "#f472b6", "#fbbf24", "#38bdf8", "#f87171", "#a78bfa", "#4ade80"];

export interface Series {
  key: string;
  label: string;
}

/** Lines over steps; `data` rows hold `step` and one value per series key. Log scale
 * drops non-positive points (a log axis cannot show them). */
export function MetricChart({
  title,
  data,
  series,
  defaultLog = false,
  height = 220,
}: {
  title: string;
  data: Record<string, number | undefined>[];
  series: Series[];
  defaultLog?: boolean;
  height?: number;
}) {
  const [log, setLog] = useState(defaultLog);
  const shown = log
    ? data.map((row) => {
        const out: Record<string, number | undefined> = { step: row.step };
        for (const s of series) {
          const v = row[s.key];
          out[s.key] = v !== undefined && v > 0 ? v : undefined;
        }
        return out;
      })
    : data;
  const hasData = data.some((row) => series.some((s) => row[s.key] !== undefined));
  // the log axis gets explicit bounds: Recharts' own data bounds clip some series
  const positive = shown.flatMap((row) => series.map((s) => row[s.key])).filter((v): v is number => v !== undefined && v > 0);
  // a loop, not Math.min(...values): long runs have more points than a call takes arguments
  let lo = Infinity;
  let hi = 0;
  for (const v of positive) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const logDomain: [number, number] = positive.length ? [lo * 0.95, hi * 1.05] : [1e-3, 1];
  // a series with one or two points draws no visible line: mark its points instead
  const points = (key: string) => shown.reduce((n, row) => n + (row[key] !== undefined ? 1 : 0), 0);
  // one step only: widen the x-axis so the point sits inside the plot, not on its edge
  let first = Infinity;
  let last = -Infinity;
  for (const row of data) {
    if (row.step === undefined) continue;
    first = Math.min(first, row.step);
    last = Math.max(last, row.step);
  }
  const xDomain: [number, number] = first === last ? [first - 1, last + 1] : [first, last];
  return (
    <figure aria-label={`${title} chart`} className="rounded-lg border border-slate-800 bg-slate-900/60 p-3">
      <figcaption className="mb-2 flex items-center justify-between gap-2">
        <span className="text-sm font-semibold text-slate-200">{title}</span>
        <label className="flex items-center gap-1 text-xs text-slate-400">
          <input type="checkbox" className="accent-indigo-500" checked={log} onChange={(e) => setLog(e.target.checked)} aria-label={`Log scale for ${title}`} />
          log
        </label>
      </figcaption>
      {hasData ? (
        <div style={{ height }}>
          <ResponsiveContainer width="100%" height="100%">
            <LineChart data={shown} margin={{ top: 4, right: 8, bottom: 0, left: 0 }}>
              <CartesianGrid stroke="#1e293b" />
              <XAxis dataKey="step" type="number" domain={xDomain} allowDecimals={false} stroke="#64748b" fontSize={11} tickFormatter={(v) => formatCount(v, true)} />
              <YAxis
                stroke="#64748b"
                fontSize={11}
                width={52}
                scale={log ? "log" : "auto"}
                domain={log ? logDomain : [0, (max: number) => niceCeil(max)]}
                allowDataOverflow
                tickFormatter={(v) => formatMetric(v)}
              />
              <Tooltip
                contentStyle={{ background: "#0f172a", border: "1px solid #334155", fontSize: 12 }}
                labelFormatter={(v) => `step ${v}`}
                formatter={(v: number) => formatMetric(v)}
              />
              {series.length > 1 && <Legend wrapperStyle={{ fontSize: 11 }} />}
              {series.map((s, i) => (
                <Line key={s.key} type="monotone" dataKey={s.key} name={s.label} stroke={COLORS[i % COLORS.length]} dot={points(s.key) <= 2 ? { r: 3 } : false} isAnimationActive={false} connectNulls strokeWidth={1.6} />
              ))}
            </LineChart>
          </ResponsiveContainer>
        </div>
      ) : (
        <div className="flex items-center justify-center text-xs text-slate-500" style={{ height }}>
          waiting for the first lines…
        </div>
      )}
    </figure>
  );
}
