import type { ResolvedValue, TrainingDetail } from "../../api/client";
import { formatMetric } from "../../lib/format";
import { fieldSchema } from "../../lib/validate";
import { Panel } from "../ui";

const SOURCE_STYLE: Record<ResolvedValue["source"], string> = {
  set: "text-indigo-300",
  default: "text-slate-500",
  derived: "text-amber-300/80",
};

function show(v: unknown): string {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number" && !Number.isInteger(v)) return formatMetric(v); // the title has it whole
  if (Array.isArray(v)) return v.join(", ");
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** A config value's source by the spec's own defaults (the API's rule for a resolved
 * field; an empty list or map is a default factory's). */
function sourceOf(path: string, v: unknown): ResolvedValue["source"] {
  if (v === null || v === undefined) return "default";
  if (typeof v === "object" && Object.keys(v).length === 0) return "default";
  const schema = fieldSchema(path);
  return schema && JSON.stringify(schema.default) === JSON.stringify(v) ? "default" : "set";
}

/** The config as given, while the run has resolved nothing the API can read (a run on
 * the fly from a model, before its first checkpoint): empty fields say "default". */
function unresolved(config: Record<string, unknown>): [string, ResolvedValue][] {
  const out: [string, ResolvedValue][] = [];
  for (const [k, v] of Object.entries(config)) {
    if (k === "sae" && v && typeof v === "object") {
      for (const [sk, sv] of Object.entries(v)) out.push([`sae.${sk}`, { value: sv, source: sourceOf(`sae.${sk}`, sv) }]);
    } else out.push([k, { value: v, source: sourceOf(k, v) }]);
  }
  return out.sort(([a], [b]) => a.localeCompare(b));
}

/** Each hyperparameter with the value the run used and where it came from (the API's
 * `resolved`, read from the SAE's latest checkpoint), or the config until then. */
export function HyperparameterTable({ run, sae }: { run: TrainingDetail; sae: string | null }) {
  const resolved = run.resolved ? (run.resolved[sae ?? ""] ?? Object.values(run.resolved)[0]) : null;
  const rows = resolved ? Object.entries(resolved) : unresolved(run.config as Record<string, unknown>);
  return (
    <Panel title="Hyperparameters">
      <p className="mb-2 text-xs text-slate-500">
        {resolved
          ? "As the run uses them: set in the config, an architecture default, or derived from other values."
          : "As configured; empty fields are resolved once the run has read its data."}
      </p>
      <dl className="grid gap-x-6 gap-y-1 text-sm sm:grid-cols-2 lg:grid-cols-3" aria-label="Hyperparameters">
        {rows.map(([k, { value, source }]) => (
          <div key={k} className="flex min-w-0 items-baseline justify-between gap-3 border-b border-slate-800/60 py-1" data-testid="hyperparameter">
            <dt className="shrink-0 text-slate-400">{k}</dt>
            <dd className="flex min-w-0 items-baseline gap-2">
              <span className="min-w-0 truncate text-right font-mono text-slate-200" title={typeof value === "object" ? show(value) : String(value)}>
                {show(value)}
              </span>
              <span className={`shrink-0 text-[10px] uppercase tracking-wide ${SOURCE_STYLE[source]}`}>{source}</span>
            </dd>
          </div>
        ))}
      </dl>
    </Panel>
  );
}
