// One latent: statistics, histogram, top and quantile examples in context (each token
// tinted by the latent's activation), logit-lens tokens where the model has them, label.
import { Panel, Stat } from "../ui";
import { formatMetric } from "../../lib/format";
import { formatDensity, useLatent, type Example } from "../../hooks/useFeatures";
import { ActivationHistogram } from "./ActivationHistogram";
import { LabelEditor } from "./LabelEditor";
import { TokenText } from "./TokenText";

function ExampleRow({ ex, max }: { ex: Example; max: number }) {
  return (
    <li className="flex gap-3 border-t border-slate-800/70 py-1.5" data-testid="example">
      <span className="w-14 shrink-0 text-right font-mono text-xs leading-6 text-orange-300">{formatMetric(ex.activation)}</span>
      <span className="min-w-0">
        <TokenText tokens={ex.context} values={ex.context_activations} max={max} focus={ex.position} />
      </span>
    </li>
  );
}

export function FeaturePanel({ trainingId, sae, latent }: { trainingId: number; sae: string; latent: number }) {
  const { data: rec, error } = useLatent(trainingId, sae, latent);
  if (error) return <Panel title={`Latent ${latent}`}><p role="alert" className="text-sm text-red-300">{error.message}</p></Panel>;
  if (!rec || rec.latent !== latent) return <Panel title={`Latent ${latent}`}><p className="text-sm text-slate-400">Loading…</p></Panel>;
  const max = rec.max_activation;
  return (
    <Panel title={<span data-testid="feature-title">Latent {rec.latent}{rec.label ? ` · ${rec.label}` : ""}</span>}>
      <div className="space-y-4">
        <div className="grid grid-cols-3 gap-3">
          <Stat label="Density" value={formatDensity(rec.density)} />
          <Stat label="Mean" value={formatMetric(rec.mean_activation)} />
          <Stat label="Max" value={formatMetric(rec.max_activation)} />
        </div>
        {rec.histogram && <ActivationHistogram edges={rec.histogram.log10_edges} counts={rec.histogram.counts} />}
        {rec.logits && (
          <div className="grid grid-cols-2 gap-3 text-xs" aria-label="Logit lens">
            {(["top", "bottom"] as const).map((side) => (
              <div key={side}>
                <h3 className="mb-1 uppercase tracking-wide text-slate-500">{side === "top" ? "Promotes" : "Suppresses"}</h3>
                <div className="flex flex-wrap gap-1">
                  {rec.logits?.[side].map((t, i) => (
                    <span key={i} className={`rounded px-1.5 font-mono ${side === "top" ? "bg-emerald-500/15 text-emerald-300" : "bg-red-500/15 text-red-300"}`} title={t.value.toFixed(3)}>
                      {t.token}
                    </span>
                  ))}
                </div>
              </div>
            ))}
          </div>
        )}
        <section>
          <h3 className="mb-1 text-xs uppercase tracking-wide text-slate-500">Top activations</h3>
          {rec.top.length ? (
            <ul>{rec.top.map((ex, i) => <ExampleRow key={i} ex={ex} max={max} />)}</ul>
          ) : (
            <p className="text-sm text-slate-400">No examples: this latent never fired on the inspected rows.</p>
          )}
        </section>
        {rec.quantiles.some((b) => b.examples.length) && (
          <section>
            <h3 className="mb-1 text-xs uppercase tracking-wide text-slate-500">By activation band</h3>
            {[...rec.quantiles].reverse().map((band, i) => (
              <details key={i} className="mb-1" open={(band.band ?? 0) === 0}>
                <summary className="cursor-pointer text-sm text-slate-300">
                  Band {(band.band ?? 0) + 1}: {formatMetric(band.low ?? 0)} – {formatMetric(band.high ?? 0)}
                </summary>
                <ul>{band.examples.map((ex, i) => <ExampleRow key={i} ex={ex} max={max} />)}</ul>
              </details>
            ))}
          </section>
        )}
        <section>
          <h3 className="mb-1 text-xs uppercase tracking-wide text-slate-500">Label</h3>
          <LabelEditor
            trainingId={trainingId}
            sae={sae}
            latent={rec.latent}
            label={rec.label ?? null}
            note={rec.note ?? null}
          />
        </section>
      </div>
    </Panel>
  );
}
