import { Bar, BarChart, CartesianGrid, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";

/** Feature density: how many latents fire at each log10 frequency (the dead ones sit at
 * the left edge). `edges` has one more entry than `counts`. */
export function DensityHistogram({ edges, counts, step }: { edges: number[]; counts: number[]; step: number }) {
  const data = counts.map((c, i) => ({ bin: `${edges[i].toFixed(2)}`, mid: (edges[i] + edges[i + 1]) / 2, count: c }));
  return (
    <figure aria-label="Feature density histogram" className="rounded-lg border border-slate-800 bg-slate-900/60 p-3">
      <figcaption className="mb-2 text-sm font-semibold text-slate-200">
        Feature density <span className="font-normal text-slate-400">(log10 firing frequency, step {step})</span>
      </figcaption>
      <div style={{ height: 220 }}>
        <ResponsiveContainer width="100%" height="100%">
          <BarChart data={data} margin={{ top: 4, right: 8, bottom: 0, left: 0 }}>
            <CartesianGrid stroke="#1e293b" />
            <XAxis dataKey="mid" type="number" domain={[edges[0], edges[edges.length - 1]]} stroke="#64748b" fontSize={11} tickFormatter={(v) => Number(v).toFixed(0)} />
            <YAxis stroke="#64748b" fontSize={11} width={40} allowDecimals={false} />
            <Tooltip contentStyle={{ background: "#0f172a", border: "1px solid #334155", fontSize: 12 }} labelFormatter={(v) => `log10 freq ≈ ${Number(v).toFixed(2)}`} />
            <Bar dataKey="count" name="latents" fill="#818cf8" isAnimationActive={false} />
          </BarChart>
        </ResponsiveContainer>
      </div>
    </figure>
  );
}
