import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Pause, Play, Plus, Sparkles, Square, Trash2 } from "lucide-react";
import { useState, type ReactNode } from "react";
import { putTraining } from "../api/actions";
import { ApiError, api, call, type Dataset, type Schemas } from "../api/client";
import { datasetsQuery, keys } from "../api/queries";
import { Button, ConfirmDialog, ErrorBanner, IconButton, Panel, ProgressBar, Stat, StatusBadge } from "../components/ui";
import type { DatasetAction } from "../lib/actions";
import { formatCount, formatMetric, formatPercent } from "../lib/format";
import { validateFields } from "../lib/validate";

const ICONS: Record<DatasetAction, ReactNode> = {
  pause: <Pause className="h-4 w-4" />,
  resume: <Play className="h-4 w-4" />,
  stop: <Square className="h-4 w-4" />,
  delete: <Trash2 className="h-4 w-4" />,
};

const EMPTY = { name: "", model: "", dataset: "demo:pydoc", hooks: "resid_post.3", max_tokens: "65536", context_length: "128" };

function HookStats({ d }: { d: Dataset }) {
  const m = d.manifest as { hooks?: Record<string, { d: number; side?: string }>; stats?: Record<string, { mean_norm?: number }>; model?: string } | null;
  if (!m?.hooks) return null;
  return (
    <div className="mt-2 grid gap-1 text-xs text-slate-400">
      {Object.entries(m.hooks).map(([name, h]) => (
        <div key={name} className="flex flex-wrap gap-x-4">
          <span className="font-mono text-slate-300">{name}</span>
          <span>width {h.d}</span>
          {m.stats?.[name]?.mean_norm !== undefined && <span>mean ‖x‖ {formatMetric(m.stats[name].mean_norm)}</span>}
        </div>
      ))}
    </div>
  );
}

export function DatasetsPage() {
  const qc = useQueryClient();
  const query = useQuery(datasetsQuery);
  const [form, setForm] = useState(EMPTY);
  const [fieldErrors, setFieldErrors] = useState<Record<string, string>>({});
  const [confirm, setConfirm] = useState<Dataset | null>(null);
  const put = (d: Dataset) =>
    qc.setQueryData<Dataset[]>(keys.datasets, (prev) => (prev?.some((r) => r.id === d.id) ? prev.map((r) => (r.id === d.id ? d : r)) : [d, ...(prev ?? [])]));

  const create = useMutation({
    mutationFn: (config: Schemas["ExtractConfig"]) =>
      call(api.POST("/api/v1/activation-datasets", { body: { name: form.name.trim(), config } })),
    onSuccess: (d) => {
      put(d);
      setForm(EMPTY);
    },
    onError: (err) => setFieldErrors((err as ApiError).fields ?? {}),
  });
  const act = useMutation({
    mutationFn: async ({ d, action }: { d: Dataset; action: DatasetAction }) => {
      if (action === "delete") {
        await call(api.DELETE("/api/v1/activation-datasets/{dataset_id}", { params: { path: { dataset_id: d.id } } }));
        qc.setQueryData<Dataset[]>(keys.datasets, (prev) => prev?.filter((r) => r.id !== d.id));
      } else {
        put(await call(api.POST("/api/v1/activation-datasets/{dataset_id}/control", { params: { path: { dataset_id: d.id } }, body: { action } })));
      }
    },
  });
  const demo = useMutation({
    mutationFn: () => call(api.POST("/api/v1/demo")),
    onSuccess: (started) => {
      put(started.dataset);
      putTraining(qc, started.training);
    },
  });
  const rows = query.data;
  const error = (create.error ?? act.error ?? demo.error ?? query.error)?.message ?? null;

  function submit(e: React.FormEvent) {
    e.preventDefault();
    const errs = validateFields({ max_tokens: form.max_tokens, context_length: form.context_length }, "ExtractConfig");
    if (!form.name.trim()) errs.name = "required";
    if (!form.model.trim()) errs.model = "required: a hub name or a model folder";
    if (!form.hooks.trim()) errs.hooks = "required";
    setFieldErrors(errs);
    if (Object.keys(errs).length) return;
    const slug = form.name.trim().toLowerCase().replace(/[^a-z0-9._-]+/g, "-");
    create.mutate({
      model: form.model.trim(),
      dataset: form.dataset.trim(),
      hooks: form.hooks.split(",").map((h) => h.trim()).filter(Boolean),
      out: `activations/${slug}`,
      max_tokens: Number(form.max_tokens),
      context_length: Number(form.context_length),
    });
  }

  const input = (key: keyof typeof EMPTY, label: string, placeholder = "") => (
    <div className="flex min-w-0 flex-col gap-1">
      <label htmlFor={`ds-${key}`} className="text-xs font-medium text-slate-300">
        {label}
      </label>
      <input id={`ds-${key}`} value={form[key]} placeholder={placeholder} onChange={(e) => setForm({ ...form, [key]: e.target.value })} aria-invalid={!!fieldErrors[key]} />
      {fieldErrors[key] && <p className="text-xs text-red-300">{fieldErrors[key]}</p>}
    </div>
  );

  return (
    <div className="space-y-4">
      <div className="flex flex-wrap items-center justify-between gap-2">
        <h1 className="text-xl font-semibold">Activation datasets</h1>
        <Button icon={<Sparkles className="h-4 w-4" />} onClick={() => demo.mutate()} disabled={demo.isPending}>
          Start the demo
        </Button>
      </div>
      <ErrorBanner
        message={error}
        onClose={() => {
          create.reset();
          act.reset();
          demo.reset();
        }}
      />
      <Panel title="Extract activations">
        <form onSubmit={submit} noValidate className="grid gap-3 sm:grid-cols-2 lg:grid-cols-3">
          {input("name", "Name", "e.g. gpt2-layer6")}
          {input("model", "Model", "gpt2, EleutherAI/pythia-70m or a folder")}
          {input("dataset", "Text dataset", "demo:pydoc, a hub dataset or a file")}
          {input("hooks", "Hook points (comma separated)", "resid_post.6, mlp_out.6")}
          {input("max_tokens", "Tokens")}
          {input("context_length", "Context length")}
          <div className="sm:col-span-2 lg:col-span-3">
            <Button type="submit" tone="primary" icon={<Plus className="h-4 w-4" />}>
              Start extraction
            </Button>
          </div>
        </form>
      </Panel>

      {rows === undefined ? (
        query.error ? null : <p className="text-slate-400">Loading…</p>
      ) : rows.length === 0 ? (
        <p className="text-sm text-slate-400">No activation datasets yet. Start the demo, or extract from a model above.</p>
      ) : (
        <div className="grid gap-3 md:grid-cols-2">
          {rows.map((d) => (
            <article key={d.id} aria-label={`Dataset ${d.name}`} className="rounded-lg border border-slate-800 bg-slate-900/70 p-4">
              <div className="mb-2 flex items-start justify-between gap-2">
                <div className="min-w-0">
                  <h3 className="truncate font-medium">{d.name}</h3>
                  <p className="truncate text-xs text-slate-400" title={String(d.config.model)}>
                    {String(d.config.model).split("/").slice(-2).join("/")} · {String(d.config.dataset)}
                  </p>
                </div>
                <StatusBadge status={d.status} control={d.control} />
              </div>
              <ProgressBar value={d.progress} label={`Extraction progress of ${d.name}`} />
              <div className="mt-3 grid grid-cols-3 gap-2">
                <Stat label="Progress" value={formatPercent(d.progress)} />
                <Stat label="Contexts" value={`${formatCount(d.contexts)}${d.target_contexts ? ` / ${formatCount(d.target_contexts)}` : ""}`} />
                <Stat label="Rows" value={<span data-testid="dataset-rows">{formatCount(d.rows)}</span>} />
              </div>
              <HookStats d={d} />
              {d.error && <p className="mt-2 break-words text-xs text-red-300">{d.error}</p>}
              <div className="mt-2 flex gap-1 border-t border-slate-800 pt-2">
                {d.actions.map((a) => (
                  <IconButton key={a} label={`${a[0].toUpperCase()}${a.slice(1)} ${d.name}`} icon={ICONS[a]} onClick={() => (a === "delete" ? setConfirm(d) : act.mutate({ d, action: a }))} />
                ))}
              </div>
            </article>
          ))}
        </div>
      )}
      {confirm && (
        <ConfirmDialog
          title="Delete dataset"
          body={<>Delete {confirm.name} and its stored activations? Runs trained on it keep their results.</>}
          confirmLabel="Delete"
          onConfirm={() => {
            const d = confirm;
            setConfirm(null);
            act.mutate({ d, action: "delete" });
          }}
          onCancel={() => setConfirm(null)}
        />
      )}
    </div>
  );
}
