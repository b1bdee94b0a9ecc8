import { ChevronDown, Play, Save, Star } from "lucide-react";
import { useEffect, useMemo, useRef, useState } from "react";
import { useNavigate, useSearchParams } from "react-router-dom";
import { ApiError, api, call, type Architecture, type Dataset, type Template, type TrainingPlan } from "../api/client";
import { Button, ErrorBanner, Panel, Stat } from "../components/ui";
import { formatBytes, formatCount, formatDuration, formatMetric } from "../lib/format";
import {
  contextFor,
  type FieldDef,
  fromConfig,
  INITIAL,
  placeholderFor,
  type Source,
  toConfig,
  validateForm,
  visibleFields,
} from "../lib/trainingForm";
import { description } from "../lib/validate";

function Field({
  def,
  value,
  error,
  placeholder,
  onChange,
}: {
  def: FieldDef;
  value: string;
  error?: string;
  placeholder: string;
  onChange: (v: string) => void;
}) {
  const id = `f-${def.path.replace(/\./g, "-")}`;
  const help = description(def.path);
  return (
    <div className="flex min-w-0 flex-col gap-1">
      <label htmlFor={id} className="text-xs font-medium text-slate-300" title={help}>
        {def.label}
      </label>
      {def.kind === "select" ? (
        <select id={id} value={value} onChange={(e) => onChange(e.target.value)} aria-invalid={!!error} aria-describedby={error ? `${id}-err` : undefined}>
          {def.options!.map((o) => (
            <option key={o} value={o}>
              {o || placeholder || "default"}
            </option>
          ))}
        </select>
      ) : def.kind === "bool" ? (
        <select id={id} value={value || "false"} onChange={(e) => onChange(e.target.value)}>
          <option value="false">no</option>
          <option value="true">yes</option>
        </select>
      ) : (
        <input
          id={id}
          inputMode={def.kind === "number" ? "decimal" : undefined}
          value={value}
          placeholder={placeholder}
          onChange={(e) => onChange(e.target.value)}
          aria-invalid={!!error}
          aria-describedby={error ? `${id}-err` : undefined}
          className={error ? "border-red-500" : ""}
        />
      )}
      {error && (
        <p id={`${id}-err`} className="text-xs text-red-300">
          {error}
        </p>
      )}
    </div>
  );
}

export function NewTrainingPage() {
  const navigate = useNavigate();
  const [params] = useSearchParams();
  const [archs, setArchs] = useState<Architecture[]>([]);
  const [datasets, setDatasets] = useState<Dataset[]>([]);
  const [templates, setTemplates] = useState<Template[]>([]);
  const [source, setSource] = useState<Source>("dataset");
  const [datasetId, setDatasetId] = useState<number | null>(null);
  const [name, setName] = useState("");
  const [values, setValues] = useState<Record<string, string>>(INITIAL);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [serverErrors, setServerErrors] = useState<Record<string, string>>({});
  const [plan, setPlan] = useState<TrainingPlan | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [templateName, setTemplateName] = useState("");
  const [notice, setNotice] = useState<string | null>(null);
  const touched = useRef(false);

  useEffect(() => {
    Promise.all([
      call(api.GET("/api/v1/architectures")),
      call(api.GET("/api/v1/activation-datasets", { params: { query: { limit: 200 } } })),
      call(api.GET("/api/v1/templates", { params: { query: { limit: 200 } } })),
    ])
      .then(([a, d, t]) => {
        setArchs(a);
        const usable = d.items.filter((x) => x.status !== "failed" && x.status !== "cancelled");
        setDatasets(usable);
        setTemplates(t.items);
        const first = usable.find((x) => x.status === "completed") ?? usable[0];
        if (first) pickDataset(first);
        else setSource("model");
        const tid = Number(params.get("template"));
        const tpl = t.items.find((x) => x.id === tid);
        if (tpl) applyTemplate(tpl);
      })
      .catch((e) => setError((e as Error).message));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  const ctx = useMemo(() => contextFor(values, archs, source), [values, archs, source]);
  const fields = visibleFields(ctx);
  const dataset = datasets.find((d) => d.id === datasetId) ?? null;

  function pickDataset(d: Dataset) {
    setDatasetId(d.id);
    const hooks = (d.config.hooks as string[] | undefined) ?? [];
    setValues((v) => ({ ...v, hook: hooks[0] ?? v.hook }));
  }

  function applyTemplate(t: Template) {
    const cfg = t.config as Record<string, unknown>;
    setValues(fromConfig(cfg));
    if (cfg.model) setSource("model");
    setNotice(`Loaded template “${t.name}”.`);
  }

  function set(path: string, v: string) {
    touched.current = true;
    setError(null); // a stale "fix the fields" or server message goes once the user edits
    setValues((prev) => ({ ...prev, [path]: v }));
    setServerErrors((prev) => {
      const next = { ...prev };
      delete next[path];
      return next;
    });
  }

  function body() {
    const config = toConfig(values, ctx, source === "dataset" ? (dataset?.path ?? null) : null);
    return { name: name.trim() || null, config, dataset_id: source === "dataset" ? datasetId : null } as const;
  }

  // the server's check (same rules as a submit, plus the data's widths) as the user types
  useEffect(() => {
    const local = validateForm(values, ctx);
    setErrors(touched.current ? local : {});
    if (Object.keys(local).length || (source === "dataset" && !dataset)) {
      setPlan(null);
      return;
    }
    const timer = window.setTimeout(async () => {
      try {
        setPlan(await call(api.POST("/api/v1/trainings/validate", { body: body() as never })));
        setServerErrors({});
      } catch (e) {
        setPlan(null);
        if (e instanceof ApiError && e.status === 422) setServerErrors(e.fields);
      }
    }, 350);
    return () => window.clearTimeout(timer);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [values, ctx, source, datasetId, name]);

  async function submit(e: React.FormEvent) {
    e.preventDefault();
    touched.current = true;
    const local = validateForm(values, ctx);
    if (source === "dataset" && !dataset) local.activations = "choose an activation dataset";
    setErrors(local);
    if (Object.keys(local).length) {
      setError(`Fix ${Object.keys(local).length === 1 ? "the field" : "the fields"} marked below.`);
      return; // nothing is sent
    }
    setBusy(true);
    setError(null);
    try {
      const run = await call(api.POST("/api/v1/trainings", { body: body() as never }));
      navigate(`/runs/${run.id}`);
    } catch (err) {
      const apiErr = err as ApiError;
      if (apiErr.fields) setServerErrors(apiErr.fields);
      setError(apiErr.message);
    } finally {
      setBusy(false);
    }
  }

  async function saveTemplate() {
    if (!templateName.trim()) {
      setError("template name: required");
      return;
    }
    try {
      const t = await call(api.POST("/api/v1/templates", { body: { name: templateName.trim(), config: body().config, favourite: false, description: "" } }));
      setTemplates((prev) => [...prev, t]);
      setNotice(`Saved template “${t.name}”.`);
      setTemplateName("");
    } catch (err) {
      setError((err as Error).message);
    }
  }

  const allErrors = { ...serverErrors, ...errors };
  const arch = archs.find((a) => a.name === values["sae.architecture"]);
  const basic = fields.filter((f) => f.section === "basic");
  const advanced = fields.filter((f) => f.section === "advanced");
  const data = fields.filter((f) => f.section === "data");
  const sortedTemplates = [...templates].sort((a, b) => Number(b.favourite) - Number(a.favourite) || a.name.localeCompare(b.name));

  const renderField = (f: FieldDef) => (
    <Field key={f.path} def={f} value={values[f.path] ?? ""} error={allErrors[f.path]} placeholder={placeholderFor(f.path, ctx, archs)} onChange={(v) => set(f.path, v)} />
  );

  return (
    <form onSubmit={submit} noValidate className="grid gap-4 lg:grid-cols-[1fr_20rem]">
      <div className="min-w-0 space-y-4">
        <h1 className="text-xl font-semibold">New training</h1>
        <ErrorBanner message={error} onClose={() => setError(null)} />
        {notice && <p className="text-sm text-emerald-300">{notice}</p>}

        <Panel title="Data">
          <div className="mb-3 flex flex-wrap gap-4 text-sm" role="radiogroup" aria-label="Data source">
            <label className="flex items-center gap-2">
              <input type="radio" name="source" checked={source === "dataset"} onChange={() => setSource("dataset")} />
              Activation dataset
            </label>
            <label className="flex items-center gap-2">
              <input type="radio" name="source" checked={source === "model"} onChange={() => setSource("model")} />
              Model + text (on the fly)
            </label>
          </div>
          <div className="grid gap-3 sm:grid-cols-2">
            {source === "dataset" && (
              <div className="flex min-w-0 flex-col gap-1">
                <label htmlFor="f-activations" className="text-xs font-medium text-slate-300">
                  Activation dataset
                </label>
                <select
                  id="f-activations"
                  value={datasetId ?? ""}
                  onChange={(e) => {
                    const d = datasets.find((x) => x.id === Number(e.target.value));
                    if (d) pickDataset(d);
                  }}
                  aria-invalid={!!allErrors.activations}
                >
                  {datasets.length === 0 && <option value="">no datasets yet</option>}
                  {datasets.map((d) => (
                    <option key={d.id} value={d.id}>
                      {d.name} ({d.status === "completed" ? `${formatCount(d.rows, true)} rows` : d.status})
                    </option>
                  ))}
                </select>
                {allErrors.activations && <p className="text-xs text-red-300">{allErrors.activations}</p>}
              </div>
            )}
            {data.map(renderField)}
          </div>
        </Panel>

        <Panel title="Architecture">
          <div className="grid gap-3 sm:grid-cols-2">
            <div className="flex min-w-0 flex-col gap-1">
              <label htmlFor="f-name" className="text-xs font-medium text-slate-300">
                Run name
              </label>
              <input id="f-name" value={name} placeholder={`${values["sae.architecture"]}-…`} onChange={(e) => setName(e.target.value)} />
            </div>
            <div className="flex min-w-0 flex-col gap-1">
              <label htmlFor="f-sae-architecture" className="text-xs font-medium text-slate-300">
                Architecture
              </label>
              <select id="f-sae-architecture" value={values["sae.architecture"]} onChange={(e) => set("sae.architecture", e.target.value)}>
                {archs.map((a) => (
                  <option key={a.name} value={a.name}>
                    {a.name}
                  </option>
                ))}
              </select>
              {arch && <p className="text-xs text-slate-400">{arch.description}</p>}
            </div>
            {basic.map(renderField)}
          </div>
        </Panel>

        <details className="group rounded-lg border border-slate-800 bg-slate-900/60">
          <summary className="flex cursor-pointer list-none items-center justify-between p-4 text-sm font-semibold text-slate-200">
            Advanced hyperparameters
            <ChevronDown className="h-4 w-4 transition-transform group-open:rotate-180" aria-hidden />
          </summary>
          <div className="grid gap-3 px-4 pb-4 sm:grid-cols-2 lg:grid-cols-3">{advanced.map(renderField)}</div>
        </details>
      </div>

      <aside className="space-y-4 lg:pt-11">
        <Panel title="Estimate">
          {plan?.estimate ? (
            <div className="grid grid-cols-2 gap-3" data-testid="estimate">
              <Stat label="Parameters" value={formatCount(plan.estimate.parameters, true)} />
              <Stat label="Memory" value={formatBytes(plan.estimate.memory_bytes)} />
              <Stat label="Tokens" value={formatCount(plan.estimate.tokens, true)} />
              <Stat label="Latents" value={formatCount((plan.resolved?.sae as { d_sae?: number } | undefined)?.d_sae)} />
              <Stat label="Time (CPU)" value={formatDuration(plan.estimate.seconds_cpu)} />
              <Stat label="Time (GPU)" value={formatDuration(plan.estimate.seconds_gpu)} />
              <Stat label="LR" value={formatMetric(plan.resolved?.lr as number)} />
              <Stat label="λ" value={formatMetric(plan.resolved?.sparsity_coefficient as number)} />
            </div>
          ) : (
            <p className="text-xs text-slate-400">
              {Object.keys(allErrors).length ? "Fix the marked fields to see the estimate." : source === "model" ? "Known once the model runs (on-the-fly data)." : "Choose the data to see size, memory and time."}
            </p>
          )}
        </Panel>
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
                  if (t) applyTemplate(t);
                }}
              >
                <option value="">{templates.length ? "choose…" : "no templates yet"}</option>
                {sortedTemplates.map((t) => (
                  <option key={t.id} value={t.id}>
                    {t.favourite ? "★ " : ""}
                    {t.name}
                  </option>
                ))}
              </select>
            </div>
            <div className="flex gap-2">
              <input aria-label="Template name" placeholder="template name" value={templateName} onChange={(e) => setTemplateName(e.target.value)} className="min-w-0 flex-1" />
              <Button icon={<Save className="h-4 w-4" />} onClick={saveTemplate}>
                Save
              </Button>
            </div>
            <p className="flex items-center gap-1 text-xs text-slate-500">
              <Star className="h-3 w-3" aria-hidden /> favourites, import and export: Templates page
            </p>
          </div>
        </Panel>
        <Button type="submit" tone="primary" className="w-full py-2" icon={<Play className="h-4 w-4" />} disabled={busy}>
          {busy ? "Starting…" : "Start training"}
        </Button>
      </aside>
    </form>
  );
}
