import { Save, Star } from "lucide-react";
import { useState } from "react";
import { formatBytes, formatCount, formatDuration, formatMetric } from "../../lib/format";
import { Button, Panel, Stat } from "../ui";
import type { TrainingForm } from "./useTrainingForm";

/** Size, memory and time of the job as the server plans it (POST /trainings/validate);
 * an older plan stays, dimmed, while the current form is checked. */
export function EstimatePanel({ form }: { form: TrainingForm }) {
  const { plan, planPending, errors, state } = form;
  const resolved = plan?.resolved as { sae?: { d_sae?: number }; lr?: number; sparsity_coefficient?: number } | null | undefined;
  return (
    <Panel title="Estimate">
      {plan?.estimate ? (
        <div className={`grid grid-cols-2 gap-3 transition-opacity ${planPending ? "opacity-50" : ""}`} data-testid="estimate" aria-busy={planPending}>
          <Stat label="Parameters" value={formatCount(plan.estimate.parameters, true)} />
          <Stat label="Memory" value={formatBytes(plan.estimate.memory_bytes)} />
          <Stat label="Tokens" value={formatCount(plan.estimate.tokens, true)} />
          <Stat label="Latents" value={formatCount(resolved?.sae?.d_sae)} />
          <Stat label="Time (CPU)" value={formatDuration(plan.estimate.seconds_cpu)} />
          <Stat label="Time (GPU)" value={formatDuration(plan.estimate.seconds_gpu)} />
          <Stat label="LR" value={formatMetric(resolved?.lr)} />
          <Stat label="λ" value={formatMetric(resolved?.sparsity_coefficient)} />
        </div>
      ) : (
        <p className="text-xs text-slate-400">
          {Object.keys(errors).length
            ? "Fix the marked fields to see the estimate."
            : state.source === "model"
              ? "Known once the model runs (on-the-fly data)."
              : "Choose the data to see size, memory and time."}
        </p>
      )}
    </Panel>
  );
}

/** Load a saved template into the form, or save the form as one. */
export function TemplatesPanel({ form }: { form: TrainingForm }) {
  const { templates, dispatch, saveTemplateAs } = form;
  const [name, setName] = useState("");
  const sorted = [...templates].sort((a, b) => Number(b.favourite) - Number(a.favourite) || a.name.localeCompare(b.name));
  return (
    <Panel title="Templates">
      <div className="space-y-3">
        <div className="flex flex-col gap-1">
          <label htmlFor="load-template" className="text-xs text-slate-300">
            Load a template
          </label>
          <select
            id="load-template"
            value=""
            onChange={(e) => {
              const t = templates.find((x) => x.id === Number(e.target.value));
              if (t) dispatch({ type: "template", template: t });
            }}
          >
            <option value="">{templates.length ? "choose…" : "no templates yet"}</option>
            {sorted.map((t) => (
              <option key={t.id} value={t.id}>
                {t.favourite ? "★ " : ""}
                {t.name}
              </option>
            ))}
          </select>
        </div>
        <div className="flex gap-2">
          <input aria-label="Template name" placeholder="template name" value={name} onChange={(e) => setName(e.target.value)} className="min-w-0 flex-1" />
          <Button
            icon={<Save className="h-4 w-4" />}
            onClick={() => saveTemplateAs(name.trim(), () => setName(""))}
          >
            Save
          </Button>
        </div>
        <p className="flex items-center gap-1 text-xs text-slate-500">
          <Star className="h-3 w-3" aria-hidden /> favourites, import and export: Templates page
        </p>
      </div>
    </Panel>
  );
}
