// "Try a prompt": a text through the run's model and SAE; its tokens tinted by the
// chosen latent, and the latents that fire anywhere in it, strongest first.
import { Search } from "lucide-react";
import { useState } from "react";
import { Button, Panel } from "../ui";
import { formatMetric } from "../../lib/format";
import { usePromptSearch } from "../../hooks/useFeatures";
import { TokenText } from "./TokenText";

export function PromptBox({ trainingId, sae, onOpen }: { trainingId: number; sae: string; onOpen: (latent: number) => void }) {
  const [text, setText] = useState("");
  const [chosen, setChosen] = useState<number | null>(null);
  const search = usePromptSearch(trainingId, sae);
  const result = search.data ?? null;
  const busy = search.isPending;
  const error = search.error?.message ?? null;
  const run = () => search.mutate(text, { onSuccess: (r) => setChosen(r.latents[0]?.latent ?? null) });

  const current = result?.latents.find((l) => l.latent === chosen) ?? null;
  return (
    <Panel title="Try a prompt">
      <form
        className="space-y-2"
        onSubmit={(e) => {
          e.preventDefault();
          if (text.trim()) run();
        }}
      >
        <textarea aria-label="Prompt" rows={3} value={text} placeholder="Type a text: see which latents fire on each token" onChange={(e) => setText(e.target.value)} className="w-full" />
        <Button type="submit" tone="primary" icon={<Search className="h-4 w-4" />} disabled={busy || !text.trim()}>
          {busy ? "Running…" : "Run"}
        </Button>
      </form>
      {error && <p role="alert" className="mt-2 break-words text-sm text-red-300">{error}</p>}
      {result && (
        <div className="mt-3 space-y-3" data-testid="prompt-result">
          <div className="rounded-md border border-slate-800 bg-slate-950/60 p-2">
            <TokenText
              tokens={result.tokens.map((t) => t.token)}
              values={current?.activations ?? []}
              max={current?.max_activation ?? 1}
            />
          </div>
          <p className="text-xs text-slate-500">
            {result.tokens.length} tokens · {result.seconds.toFixed(2)} s in the model and SAE
            {current ? ` · tinted by latent ${current.latent}` : ""}
          </p>
          <ul className="flex flex-wrap gap-1.5" aria-label="Latents in the prompt">
            {result.latents.slice(0, 30).map((l) => (
              <li key={l.latent}>
                <button
                  type="button"
                  data-testid="prompt-latent"
                  onClick={() => setChosen(l.latent)}
                  onDoubleClick={() => onOpen(l.latent)}
                  title={`fires on ${l.tokens_fired} tokens; double-click to open`}
                  className={`rounded border px-2 py-0.5 font-mono text-xs ${l.latent === chosen ? "border-orange-400 bg-orange-500/20 text-orange-200" : "border-slate-700 text-slate-300 hover:bg-slate-800"}`}
                >
                  #{l.latent} {formatMetric(l.max_activation)}
                  {l.label ? <span className="ml-1 font-sans text-emerald-300">{l.label}</span> : null}
                </button>
              </li>
            ))}
          </ul>
          {current && (
            <Button onClick={() => onOpen(current.latent)}>Open latent {current.latent}</Button>
          )}
        </div>
      )}
    </Panel>
  );
}
