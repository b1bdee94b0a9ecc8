import { Download, Play, Star, Trash2, Upload } from "lucide-react";
import { useCallback, useEffect, useRef, useState } from "react";
import { useNavigate } from "react-router-dom";
import { download } from "../api/actions";
import { api, call, describeError, TOKEN_KEY, type Template } from "../api/client";
import { Button, ErrorBanner, IconButton, Panel } from "../components/ui";

export function TemplatesPage() {
  const [items, setItems] = useState<Template[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const file = useRef<HTMLInputElement>(null);
  const navigate = useNavigate();

  const load = useCallback(async () => {
    try {
      setItems((await call(api.GET("/api/v1/templates", { params: { query: { limit: 500 } } }))).items);
    } catch (e) {
      setError((e as Error).message);
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);

  async function favourite(t: Template) {
    try {
      const updated = await call(api.PATCH("/api/v1/templates/{template_id}", { params: { path: { template_id: t.id } }, body: { favourite: !t.favourite } }));
      setItems((prev) => prev?.map((x) => (x.id === t.id ? updated : x)) ?? prev);
    } catch (e) {
      setError((e as Error).message);
    }
  }

  async function remove(t: Template) {
    try {
      await call(api.DELETE("/api/v1/templates/{template_id}", { params: { path: { template_id: t.id } } }));
      setItems((prev) => prev?.filter((x) => x.id !== t.id) ?? prev);
    } catch (e) {
      setError((e as Error).message);
    }
  }

  async function importFile(f: File) {
    setError(null);
    const token = localStorage.getItem(TOKEN_KEY);
    const res = await fetch("/api/v1/templates/import", {
      method: "POST",
      headers: { "content-type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      body: await f.text(),
    });
    const body = await res.json().catch(() => undefined);
    if (!res.ok) {
      setError(`Import failed: ${describeError(res.status, body).message}`);
      return;
    }
    setNotice(`Imported ${body.created.length}, skipped ${body.skipped.length} (names already present).`);
    void load();
  }

  const sorted = [...(items ?? [])].sort((a, b) => Number(b.favourite) - Number(a.favourite) || a.name.localeCompare(b.name));
  return (
    <div className="space-y-4">
      <div className="flex flex-wrap items-center justify-between gap-2">
        <h1 className="text-xl font-semibold">Templates</h1>
        <div className="flex gap-2">
          <Button icon={<Download className="h-4 w-4" />} onClick={() => download("/api/v1/templates/export", "saestudio-templates.json").catch((e) => setError(e.message))}>
            Export JSON
          </Button>
          <Button icon={<Upload className="h-4 w-4" />} onClick={() => file.current?.click()}>
            Import JSON
          </Button>
          <input ref={file} type="file" accept="application/json,.json" className="hidden" aria-label="Template file to import" onChange={(e) => {
              const f = e.target.files?.[0];
              e.target.value = ""; // choosing the same file again imports again
              if (f) void importFile(f);
            }} />
        </div>
      </div>
      <ErrorBanner message={error} onClose={() => setError(null)} />
      {notice && <p className="text-sm text-emerald-300">{notice}</p>}
      <Panel>
        {items === null ? (
          error ? null : <p className="text-slate-400">Loading…</p>
        ) : sorted.length === 0 ? (
          <p className="text-sm text-slate-400">No templates yet: save one from the New training form, or import a JSON file.</p>
        ) : (
          <ul className="divide-y divide-slate-800">
            {sorted.map((t) => {
              const cfg = t.config as { sae?: { architecture?: string; k?: number }; steps?: number };
              return (
                <li key={t.id} className="flex flex-wrap items-center gap-2 py-2">
                  <IconButton label={`${t.favourite ? "Unfavourite" : "Favourite"} ${t.name}`} icon={<Star className={`h-4 w-4 ${t.favourite ? "fill-amber-300 text-amber-300" : ""}`} />} onClick={() => favourite(t)} />
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
                  <IconButton label={`Delete template ${t.name}`} icon={<Trash2 className="h-4 w-4" />} onClick={() => remove(t)} />
                </li>
              );
            })}
          </ul>
        )}
      </Panel>
    </div>
  );
}
