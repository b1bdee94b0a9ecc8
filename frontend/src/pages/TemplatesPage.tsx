import { Download, Play, Star, Trash2, Upload } from "lucide-react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useRef, useState } from "react";
import { useNavigate } from "react-router-dom";
import { download } from "../api/actions";
import { api, call, describeError, type Schemas, TOKEN_KEY, type Template } from "../api/client";
import { keys, templatesQuery } from "../api/queries";

type ImportResult = Schemas["ImportResult"];
import { Button, ErrorBanner, IconButton, Panel } from "../components/ui";

export function TemplatesPage() {
  const qc = useQueryClient();
  const query = useQuery(templatesQuery);
  const [notice, setNotice] = useState<string | null>(null);
  const file = useRef<HTMLInputElement>(null);
  const navigate = useNavigate();
  const items = query.data;

  const favourite = useMutation({
    mutationFn: (t: Template) => call(api.PATCH("/api/v1/templates/{template_id}", { params: { path: { template_id: t.id } }, body: { favourite: !t.favourite } })),
    onSuccess: (updated) => qc.setQueryData<Template[]>(keys.templates, (prev) => prev?.map((x) => (x.id === updated.id ? updated : x))),
  });
  const remove = useMutation({
    mutationFn: (t: Template) => call(api.DELETE("/api/v1/templates/{template_id}", { params: { path: { template_id: t.id } } })),
    onSuccess: (_, t) => qc.setQueryData<Template[]>(keys.templates, (prev) => prev?.filter((x) => x.id !== t.id)),
  });
  // the import takes the exported file as it is (a JSON list), so it is posted raw
  const importFile = useMutation({
    mutationFn: async (f: File) => {
      const token = localStorage.getItem(TOKEN_KEY);
      const res = await fetch("/api/v1/templates/import", {
        method: "POST",
        headers: { "content-type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
        body: await f.text(),
      });
      const body = await res.json().catch(() => undefined);
      if (!res.ok) throw new Error(`Import failed: ${describeError(res.status, body).message}`);
      return body as ImportResult;
    },
    onSuccess: (r) => {
      setNotice(`Imported ${r.created.length}, skipped ${r.skipped.length} (names already present).`);
      void qc.invalidateQueries({ queryKey: keys.templates, exact: true });
    },
  });
  const exportAll = useMutation({ mutationFn: () => download("/api/v1/templates/export", "saestudio-templates.json") });
  const error = (favourite.error ?? remove.error ?? importFile.error ?? exportAll.error ?? query.error)?.message ?? null;
  const clear = () => [favourite, remove, importFile, exportAll].forEach((m) => m.reset());

  const sorted = [...(items ?? [])].sort((a, b) => Number(b.favourite) - Number(a.favourite) || a.name.localeCompare(b.name));
  return (
    <div className="space-y-4">
      <div className="flex flex-wrap items-center justify-between gap-2">
        <h1 className="text-xl font-semibold">Templates</h1>
        <div className="flex gap-2">
          <Button icon={<Download className="h-4 w-4" />} onClick={() => exportAll.mutate()}>
            Export JSON
          </Button>
          <Button icon={<Upload className="h-4 w-4" />} onClick={() => file.current?.click()}>
            Import JSON
          </Button>
          <input ref={file} type="file" accept="application/json,.json" className="hidden" aria-label="Template file to import" onChange={(e) => {
              const f = e.target.files?.[0];
              e.target.value = ""; // choosing the same file again imports again
              if (f) importFile.mutate(f);
            }} />
        </div>
      </div>
      <ErrorBanner message={error} onClose={clear} />
      {notice && <p className="text-sm text-emerald-300">{notice}</p>}
      <Panel>
        {items === undefined ? (
          query.error ? null : <p className="text-slate-400">Loading…</p>
        ) : sorted.length === 0 ? (
          <p className="text-sm text-slate-400">No templates yet: save one from the New training form, or import a JSON file.</p>
        ) : (
          <ul className="divide-y divide-slate-800">
            {sorted.map((t) => {
              const cfg = t.config as { sae?: { architecture?: string; k?: number }; steps?: number };
              return (
                <li key={t.id} className="flex flex-wrap items-center gap-2 py-2">
                  <IconButton label={`${t.favourite ? "Unfavourite" : "Favourite"} ${t.name}`} icon={<Star className={`h-4 w-4 ${t.favourite ? "fill-amber-300 text-amber-300" : ""}`} />} onClick={() => favourite.mutate(t)} />
                  <div className="min-w-0 flex-1">
                    <div className="truncate font-medium">{t.name}</div>
                    <div className="truncate text-xs text-slate-400">
                      {cfg.sae?.architecture ?? "topk"}
                      {cfg.sae?.k ? ` · k ${cfg.sae.k}` : ""}
                      {cfg.steps ? ` · ${cfg.steps} steps` : ""}
                      {t.description ? ` · ${t.description}` : ""}
                    </div>
                  </div>
                  <Button icon={<Play className="h-4 w-4" />} onClick={() => navigate(`/new?template=${t.id}`)} aria-label={`Use ${t.name}`}>
                    Use
                  </Button>
                  <IconButton label={`Delete template ${t.name}`} icon={<Trash2 className="h-4 w-4" />} onClick={() => remove.mutate(t)} />
                </li>
              );
            })}
          </ul>
        )}
      </Panel>
    </div>
  );
}
