// The Features tab of a run: the inspection's state, the latents table beside the
// selected latent's panel, the prompt box, and the exports (labels included).
import { Download, RefreshCw, Square } from "lucide-react";
import { useRef, useState } from "react";
import { download } from "../../api/actions";
import { Button, ErrorBanner, Panel, ProgressBar, StatusBadge } from "../ui";
import { formatCount, formatDuration } from "../../lib/format";
import { useInspection, useInspectionAction } from "../../hooks/useFeatures";
import { FeaturePanel } from "./FeaturePanel";
import { LatentsTable } from "./LatentsTable";
import { PromptBox } from "./PromptBox";

export function FeaturesTab({ trainingId }: { trainingId: number }) {
  const { data: status, error: loadError } = useInspection(trainingId);
  const inspection = useInspectionAction(trainingId);
  const [sae, setSae] = useState<string | null>(null);
  const [selected, setSelected] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(null);
  const panel = useRef<HTMLDivElement>(null);
  // a latent picked by hand (a row, a prompt's latent) is brought into view when its
  // panel is off screen: below the table on a phone, above the prompt box everywhere
  function pick(latent: number) {
    setSelected(latent);
    requestAnimationFrame(() => {
      const top = panel.current?.getBoundingClientRect().top ?? 0;
      if (top < 0 || top > window.innerHeight * 0.8) panel.current?.scrollIntoView({ behavior: "smooth", block: "start" });
    });
  }

  async function act(go: () => Promise<unknown>) {
    setError(null);
    try {
      await go();
    } catch (e) {
      setError((e as Error).message);
    }
  }

  if (!status) return loadError ? <ErrorBanner message={loadError.message} /> : <p className="text-slate-400">Loading…</p>;
  const ins = status.inspection;
  const current = sae ?? status.saes[0] ?? null;
  const done = ins?.status === "completed" && current !== null;
  const summary = current && ins?.summary ? (ins.summary[current] as Record<string, number> | undefined) : undefined;
  const base = `/api/v1/trainings/${trainingId}/features`;
  const q = current ? `?sae=${encodeURIComponent(current)}` : "";

  return (
    <div className="space-y-4">
      <ErrorBanner message={error ?? (ins?.status === "failed" ? ins.error : null)} onClose={error ? () => setError(null) : undefined} />
      <Panel
        title="Feature inspection"
        actions={
          <>
            {ins && <StatusBadge status={ins.status} control={ins.control} />}
            {ins && ["queued", "running"].includes(ins.status) && (
              <Button icon={<Square className="h-4 w-4" />} onClick={() => act(() => inspection.mutateAsync("stop"))}>
                Stop
              </Button>
            )}
            {status.inspectable && (
              <Button icon={<RefreshCw className="h-4 w-4" />} tone={ins ? "default" : "primary"} onClick={() => act(() => inspection.mutateAsync("inspect"))}>
                {ins ? "Inspect again" : "Inspect"}
              </Button>
            )}
            {done && (
              <>
                <Button icon={<Download className="h-4 w-4" />} onClick={() => act(() => download(`${base}/latents.jsonl${q}`, "latents.jsonl"))}>
                  latents.jsonl
                </Button>
                <Button icon={<Download className="h-4 w-4" />} onClick={() => act(() => download(`${base}/neuronpedia.zip${q}`, "neuronpedia.zip"))}>
                  Neuronpedia
                </Button>
              </>
            )}
          </>
        }
      >
        {!ins && <p className="text-sm text-slate-400">{status.why_not ?? "Not inspected yet."}</p>}
        {ins && ins.status !== "completed" && (
          <div className="space-y-1">
            <ProgressBar value={ins.progress} label="Inspection progress" />
            <p className="text-sm text-slate-400">
              {formatCount(ins.rows_done)} / {formatCount(ins.row_end - ins.row_start)} rows
            </p>
          </div>
        )}
        {done && (
          <p className="text-sm text-slate-400" data-testid="inspection-summary">
            The last {formatCount(ins.row_end - ins.row_start)} rows of the dataset (rows {formatCount(ins.row_start)}–{formatCount(ins.row_end)})
            {summary ? ` · ${formatCount(summary.dead)} dead · ${formatCount(summary.dense)} dense · ${formatDuration(summary.seconds)}` : ""}
          </p>
        )}
        {status.saes.length > 1 && (
          <label className="mt-2 flex items-center gap-2 text-sm text-slate-300">
            SAE
            <select aria-label="Which SAE's features" value={current ?? ""} onChange={(e) => { setSae(e.target.value); setSelected(null); }}>
              {status.saes.map((s) => <option key={s}>{s}</option>)}
            </select>
          </label>
        )}
      </Panel>
      {done && current && (
        <>
          <div className="grid gap-4 lg:grid-cols-2">
            <Panel title="Latents">
              <LatentsTable trainingId={trainingId} sae={current} selected={selected} onSelect={setSelected} onPick={pick} />
            </Panel>
            <div ref={panel} className="scroll-mt-16">
              {selected !== null && <FeaturePanel trainingId={trainingId} sae={current} latent={selected} />}
            </div>
          </div>
          <PromptBox trainingId={trainingId} sae={current} onOpen={pick} />
        </>
      )}
    </div>
  );
}
