// Name a latent and note why; saving replaces the earlier label, clearing removes it.
import { Save, Trash2 } from "lucide-react";
import { useEffect, useState } from "react";
import { Button } from "../ui";
import { clearLabel, saveLabel } from "../../hooks/useFeatures";

export function LabelEditor({
  trainingId,
  sae,
  latent,
  label,
  note,
  onSaved,
}: {
  trainingId: number;
  sae: string;
  latent: number;
  label: string | null;
  note: string | null;
  onSaved: () => void;
}) {
  const [text, setText] = useState(label ?? "");
  const [why, setWhy] = useState(note ?? "");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    setText(label ?? "");
    setWhy(note ?? "");
    setError(null);
  }, [latent, label, note]);

  async function run(go: () => Promise<unknown>) {
    setBusy(true);
    setError(null);
    try {
      await go();
      onSaved();
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form
      className="space-y-2"
      onSubmit={(e) => {
        e.preventDefault();
        if (text.trim()) void run(() => saveLabel(trainingId, sae, latent, text.trim(), why));
      }}
    >
      <input aria-label="Label" placeholder="Label, e.g. closing parenthesis" value={text} maxLength={200} onChange={(e) => setText(e.target.value)} className="w-full" />
      <textarea aria-label="Note" placeholder="Note (optional)" value={why} rows={2} onChange={(e) => setWhy(e.target.value)} className="w-full" />
      {error && <p role="alert" className="text-sm text-red-300">{error}</p>}
      <div className="flex gap-2">
        <Button type="submit" tone="primary" icon={<Save className="h-4 w-4" />} disabled={busy || !text.trim()}>
          Save label
        </Button>
        {label && (
          <Button icon={<Trash2 className="h-4 w-4" />} disabled={busy} onClick={() => void run(() => clearLabel(trainingId, sae, latent))}>
            Clear
          </Button>
        )}
      </div>
    </form>
  );
}
