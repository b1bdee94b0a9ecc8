// The held-out evaluation metrics (saestudio.training.evaluation; README "Held-out
// evaluation"), as the run page's Evaluation panel and Compare's table show them.
import { formatCount, formatMetric } from "./format";

/** One stored metric line (the API's Metric and the stream's MetricRow both fit). */
export interface EvalLine {
  step: number;
  sae: string;
  kind: string;
  metrics: Record<string, unknown>;
}

/** Every metric, in the README's order, keyed as the trainer logs it. */
export const EVAL_METRICS: { key: string; label: string; hint: string; count?: boolean }[] = [
  { key: "eval_explained_variance", label: "Explained variance", hint: "1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² (higher is better)" },
  { key: "eval_fvu", label: "FVU", hint: "fraction of variance unexplained = 1 − explained variance" },
  { key: "eval_mse", label: "MSE", hint: "mean over rows of Σ_d (x − x̂)²" },
  { key: "eval_mse_per_element", label: "MSE per element", hint: "MSE / d" },
  { key: "eval_cossim", label: "Cosine similarity", hint: "mean over rows of x·x̂ / (‖x‖‖x̂‖)" },
  { key: "eval_l2_ratio", label: "L2 ratio", hint: "mean over rows of ‖x̂‖ / ‖x‖ (< 1: shrinkage)" },
  { key: "eval_relative_reconstruction_bias", label: "Relative reconstruction bias", hint: "γ = E‖x̂‖² / E[x̂·x] (Gated SAE paper, eq. 10)" },
  { key: "eval_l0", label: "L0", hint: "mean number of non-zero latents per row" },
  { key: "eval_l1", label: "L1", hint: "mean over rows of Σ_i |z_i|" },
  { key: "eval_dead_latents", label: "Dead latents", hint: "latents firing on none of the held-out rows", count: true },
  { key: "eval_dense_latents_1pct", label: "Dense latents (>1\u00a0%)", hint: "latents firing on more than 1 % of the rows", count: true },
  { key: "eval_dense_latents_10pct", label: "Dense latents (>10\u00a0%)", hint: "latents firing on more than 10 % of the rows", count: true },
  { key: "eval_enc_dec_cosine_mean", label: "Encoder–decoder cosine (mean)", hint: "cosine of W_enc[:, i] and W_dec[i], mean over latents" },
  { key: "eval_enc_dec_cosine_min", label: "Encoder–decoder cosine (min)", hint: "the smallest such cosine" },
  { key: "eval_dec_dec_max_cosine", label: "Max decoder–decoder cosine", hint: "largest |cosine| between two decoder rows (duplicates → 1)" },
  { key: "eval_dec_dec_max_cosine_mean", label: "Decoder–decoder cosine (mean of max)", hint: "each row's largest |cosine| with another, averaged" },
  { key: "ce_loss_recovered", label: "CE loss recovered", hint: "causal models: (CE zero-ablated − CE spliced) / (CE zero-ablated − CE clean)" },
  { key: "ce_spliced", label: "CE loss with the SAE", hint: "causal models: next-token CE with the SAE spliced in (nats/token)" },
  { key: "kl_spliced", label: "KL divergence with the SAE", hint: "causal models: mean KL(clean ‖ spliced) of the next-token distributions" },
];

/** An SAE's latest evaluation: its last eval line's metrics with its last downstream
 * (CE / KL) line's, at the eval line's step. */
export interface Evaluation {
  sae: string;
  step: number;
  metrics: Record<string, number>;
}

/** The latest evaluation of each SAE in `lines` (any kinds; others are skipped), in the
 * order the SAEs first appear. */
export function latestEvaluations(lines: readonly EvalLine[]): Evaluation[] {
  const out = new Map<string, Evaluation>();
  const downstream = new Map<string, Record<string, number>>();
  for (const l of lines) {
    if (l.kind === "eval") {
      const prev = out.get(l.sae);
      if (!prev || l.step >= prev.step) out.set(l.sae, { sae: l.sae, step: l.step, metrics: numbers(l.metrics) });
    } else if (l.kind === "downstream") {
      downstream.set(l.sae, { ...downstream.get(l.sae), ...numbers(l.metrics) });
    }
  }
  return [...out.values()].map((e) => ({ ...e, metrics: { ...downstream.get(e.sae), ...e.metrics } }));
}

/** The metrics of EVAL_METRICS that any of `evals` carries (a transcoder has no
 * encoder–decoder cosine; only causal runs have CE / KL). */
export function shownMetrics(evals: readonly Evaluation[]) {
  return EVAL_METRICS.filter((m) => evals.some((e) => typeof e.metrics[m.key] === "number"));
}

/** A metric's value as the tables show it: latent counts as whole numbers (1,234). */
export function formatEval(m: { count?: boolean }, v: number | undefined): string {
  return m.count ? formatCount(v) : formatMetric(v);
}

function numbers(m: Record<string, unknown>): Record<string, number> {
  return Object.fromEntries(Object.entries(m).filter((kv): kv is [string, number] => typeof kv[1] === "number"));
}
