import { ChevronDown } from "lucide-react";
import type { ReactNode } from "react";
import { formatCount } from "../../lib/format";
import { type FieldDef, placeholderFor } from "../../lib/trainingForm";
import { Panel } from "../ui";
import { Field } from "./Field";
import type { TrainingForm } from "./useTrainingForm";

/** The visible fields of one section, wired to the form. */
function Fields({ form, section }: { form: TrainingForm; section: FieldDef["section"] }) {
  const { state, errors, ctx, archs, set } = form;
  return (
    <>
      {form.fields
        .filter((f) => f.section === section)
        .map((f) => (
          <Field key={f.path} def={f} value={state.values[f.path] ?? ""} error={errors[f.path]} placeholder={placeholderFor(f.path, ctx, archs)} onChange={(v) => set(f.path, v)} />
        ))}
    </>
  );
}

function Labelled({ id, label, children }: { id: string; label: string; children: ReactNode }) {
  return (
    <div className="flex min-w-0 flex-col gap-1">
      <label htmlFor={id} className="text-xs font-medium text-slate-300">
        {label}
      </label>
      {children}
    </div>
  );
}

/** Where the activations come from: a stored dataset, or a model run on text. */
export function DataPanel({ form }: { form: TrainingForm }) {
  const { state, dispatch, datasets, errors } = form;
  return (
    <Panel title="Data">
      <div className="mb-3 flex flex-wrap gap-4 text-sm" role="radiogroup" aria-label="Data source">
        <label className="flex items-center gap-2">
          <input type="radio" name="source" checked={state.source === "dataset"} onChange={() => dispatch({ type: "source", source: "dataset" })} />
          Activation dataset
        </label>
        <label className="flex items-center gap-2">
          <input type="radio" name="source" checked={state.source === "model"} onChange={() => dispatch({ type: "source", source: "model" })} />
          Model + text (on the fly)
        </label>
      </div>
      <div className="grid gap-3 sm:grid-cols-2">
        {state.source === "dataset" && (
          <Labelled id="f-activations" label="Activation dataset">
            <select
              id="f-activations"
              value={state.datasetId ?? ""}
              onChange={(e) => {
                const d = datasets.find((x) => x.id === Number(e.target.value));
                if (d) dispatch({ type: "dataset", dataset: d });
              }}
              aria-invalid={!!errors.activations}
            >
              {datasets.length === 0 && <option value="">no datasets yet</option>}
              {datasets.map((d) => (
                <option key={d.id} value={d.id}>
                  {d.name} ({d.status === "completed" ? `${formatCount(d.rows, true)} rows` : d.status})
                </option>
              ))}
            </select>
            {errors.activations && <p className="text-xs text-red-300">{errors.activations}</p>}
          </Labelled>
        )}
        <Fields form={form} section="data" />
      </div>
    </Panel>
  );
}

/** The run's name, the architecture and its own fields. */
export function ArchitecturePanel({ form }: { form: TrainingForm }) {
  const { state, dispatch, archs, set } = form;
  const arch = archs.find((a) => a.name === state.values["sae.architecture"]);
  return (
    <Panel title="Architecture">
      <div className="grid gap-3 sm:grid-cols-2">
        <Labelled id="f-name" label="Run name">
          <input id="f-name" value={state.name} placeholder={`${state.values["sae.architecture"]}-…`} onChange={(e) => dispatch({ type: "name", value: e.target.value })} />
        </Labelled>
        <Labelled id="f-sae-architecture" label="Architecture">
          <select id="f-sae-architecture" value={state.values["sae.architecture"]} onChange={(e) => set("sae.architecture", e.target.value)}>
            {archs.map((a) => (
              <option key={a.name} value={a.name}>
                {a.name}
              </option>
            ))}
          </select>
          {arch && <p className="text-xs text-slate-400">{arch.description}</p>}
        </Labelled>
        <Fields form={form} section="basic" />
      </div>
    </Panel>
  );
}

export function AdvancedPanel({ form }: { form: TrainingForm }) {
  return (
    <details className="group rounded-lg border border-slate-800 bg-slate-900/60">
      <summary className="flex cursor-pointer list-none items-center justify-between p-4 text-sm font-semibold text-slate-200">
        Advanced hyperparameters
        <ChevronDown className="h-4 w-4 transition-transform group-open:rotate-180" aria-hidden />
      </summary>
      <div className="grid gap-3 px-4 pb-4 sm:grid-cols-2 lg:grid-cols-3">
        <Fields form={form} section="advanced" />
      </div>
    </details>
  );
}
