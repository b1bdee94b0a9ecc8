// A latent's activation histogram (log10 bins), as plain bars: no chart library needed.

export function ActivationHistogram({ edges, counts }: { edges: number[]; counts: number[] }) {
  if (!counts.length) return <p className="text-sm text-slate-400">Never fired on the inspected rows.</p>;
  const top = Math.max(...counts, 1);
  const lo = edges[0];
  const hi = edges[edges.length - 1];
  return (
    <figure aria-label="Activation histogram">
      <div className="flex h-20 items-end gap-px">
        {counts.map((c, i) => (
          <div
            key={i}
            className="flex-1 rounded-t-sm bg-indigo-400/80"
            style={{ height: `${Math.max(2, (c / top) * 100)}%` }}
            title={`10^${edges[i].toFixed(1)}–10^${edges[i + 1].toFixed(1)}: ${c} rows`}
          />
        ))}
      </div>
      <figcaption className="mt-1 flex justify-between font-mono text-[11px] text-slate-500">
        <span>{(10 ** lo).toPrecision(2)}</span>
        <span>activation (log scale)</span>
        <span>{(10 ** hi).toPrecision(2)}</span>
      </figcaption>
    </figure>
  );
}
