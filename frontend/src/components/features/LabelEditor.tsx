// Name a latent and note why; saving replaces the earlier label, clearing removes it.
import { Save, Trash2 } from "lucide-react";
import { useEffect, useState } from "react";
import { Button } from "../ui";
import { useLabel } from "../../hooks/useFeatures";

export function LabelEditor({
  trainingId,
  sae,
  latent,
  label,
  note,
}: {
  trainingId: number;
  sae: string;
  latent: number;
  label: string | null;
  note: string | null;
}) {
  const [text, setText] = useState(label ?? "");
  const [why, setWhy] = useState(note ?? "");
  const save = useLabel(trainingId, sae);
  const { reset } = save;
  useEffect(() => {
    setText(label ?? "");
    setWhy(note ?? "");
    reset();
  }, [latent, label, note, reset]);
  const busy = save.isPending;
  const error = save.error?.message ?? null;

  return (
    <form
      className="space-y-2"
      onSubmit={(e) => {
        e.preventDefault();
        if (text.trim()) save.mutate({ latent, label: text.trim(), note: why });
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
          <Button icon={<Trash2 className="h-4 w-4" />} disabled={busy} onClick={() => save.mutate({ latent, label: null, note: "" })}>
            Clear
          </Button>
        )}
      </div>
    </form>
  );
}
