import { Pause, Play, Plus, Sparkles, Square, Trash2 } from "lucide-react";
import { useCallback, useEffect, useMemo, useState, type ReactNode } from "react";
import { ApiError, api, call, type Dataset } from "../api/client";
import { useJobEvents } from "../api/live";
import { Button, ConfirmDialog, ErrorBanner, IconButton, Panel, ProgressBar, Stat, StatusBadge } from "../components/ui";
import { DATASET_ACTIONS } from "../lib/actions";
import { formatCount, formatMetric, formatPercent } from "../lib/format";
import { validateFields } from "../lib/validate";

const ICONS: Record<string, ReactNode> = {
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
  const [rows, setRows] = useState<Dataset[] | null>(null);
  const [form, setForm] = useState(EMPTY);
  const [fieldErrors, setFieldErrors] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  const [confirm, setConfirm] = useState<Dataset | null>(null);

  const load = useCallback(async () => {
    try {
      setRows((await call(api.GET("/api/v1/activation-datasets", { params: { query: { limit: 200 } } }))).items);
    } catch (e) {
      setError((e as Error).message);
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);
  const { jobs } = useJobEvents((msg) => {
    if (msg.type === "activation_dataset") {
      const known = rows?.find((r) => r.id === msg.id);
      // a new dataset, or one that just finished (its manifest holds the stats): reload
      if (!known || (known.status !== msg.status && msg.status === "completed")) void load();
    }
  });
  const live = useMemo(
    () =>
      (rows ?? []).map((r) => {
        const s = jobs[`activation_dataset:${r.id}`];
        return s ? { ...r, status: s.status, control: s.control, progress: s.progress, error: s.error, contexts: s.contexts ?? r.contexts, rows: s.rows ?? r.rows } : r;
      }),
    [rows, jobs],
  );

  async function create(e: React.FormEvent) {
    e.preventDefault();
    const errs = validateFields({ max_tokens: form.max_tokens, context_length: form.context_length }, "ExtractConfig");
    if (!form.name.trim()) errs.name = "required";
    if (!form.model.trim()) errs.model = "required: a hub name or a model folder";
    if (!form.hooks.trim()) errs.hooks = "required";
    setFieldErrors(errs);
    if (Object.keys(errs).length) return;
    setError(null);
    const slug = form.name.trim().toLowerCase().replace(/[^a-z0-9._-]+/g, "-");
    try {
      const d = await call(
        api.POST("/api/v1/activation-datasets", {
          body: {
            name: form.name.trim(),
            config: {
              model: form.model.trim(),
              dataset: form.dataset.trim(),
              hooks: form.hooks.split(",").map((h) => h.trim()).filter(Boolean),
              out: `activations/${slug}`,
              max_tokens: Number(form.max_tokens),
              context_length: Number(form.context_length),
            } as never,
          },
        }),
      );
      setRows((prev) => [d, ...(prev ?? [])]);
      setForm(EMPTY);
    } catch (err) {
      const apiErr = err as ApiError;
      setFieldErrors(apiErr.fields ?? {});
      setError(apiErr.message);
    }
  }

  async function act(d: Dataset, action: string) {
    setError(null);
    try {
      if (action === "delete") {
        await call(api.DELETE("/api/v1/activation-datasets/{dataset_id}", { params: { path: { dataset_id: d.id } } }));
        setRows((prev) => prev?.filter((r) => r.id !== d.id) ?? prev);
      } else {
        const updated = await call(api.POST("/api/v1/activation-datasets/{dataset_id}/control", { params: { path: { dataset_id: d.id } }, body: { action: action as "pause" | "resume" | "stop" } }));
        setRows((prev) => prev?.map((r) => (r.id === d.id ? updated : r)) ?? prev);
      }
    } catch (e) {
      setError((e as Error).message);
    }
  }

  async function demo() {
    setError(null);
    try {
      await call(api.POST("/api/v1/demo"));
      void load();
    } catch (e) {
      setError((e as Error).message);
    }
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
        <Button icon={<Sparkles className="h-4 w-4" />} onClick={demo}>
          Start the demo
        </Button>
      </div>
      <ErrorBanner message={error} onClose={() => setError(null)} />
      <Panel title="Extract activations">
        <form onSubmit={create} noValidate className="grid gap-3 sm:grid-cols-2 lg:grid-cols-3">
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

      {rows === null ? (
        error ? null : <p className="text-slate-400">Loading…</p>
      ) : live.length === 0 ? (
        <p className="text-sm text-slate-400">No activation datasets yet. Start the demo, or extract from a model above.</p>
      ) : (
        <div className="grid gap-3 md:grid-cols-2">
          {live.map((d) => (
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
                {(DATASET_ACTIONS[d.status] ?? []).map((a) => (
                  <IconButton key={a} label={`${a[0].toUpperCase()}${a.slice(1)} ${d.name}`} icon={ICONS[a]} onClick={() => (a === "delete" ? setConfirm(d) : act(d, a))} />
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
            void act(d, "delete");
          }}
          onCancel={() => setConfirm(null)}
        />
      )}
    </div>
  );
}
