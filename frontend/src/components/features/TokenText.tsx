// Tokens as running text, each tinted by an activation (0 → none, `max` → full).

/** How a token reads inside text: BERT word pieces ("##ing") join the previous token;
 * tokenizers whose tokens carry their own spaces (GPT-2's " the") keep them; others
 * (BERT words) get a space before them. */
export function tokenPieces(tokens: (string | null)[]): string[] {
  const ownSpaces = tokens.some((t) => t !== null && /^\s/.test(t));
  return tokens.map((raw, i) => {
    const t = raw ?? "�";
    if (t.startsWith("##")) return t.slice(2);
    if (ownSpaces || i === 0) return t.replace(/\n/g, "⏎");
    return ` ${t}`;
  });
}

export function tint(value: number, max: number): string | undefined {
  if (!(value > 0) || !(max > 0)) return undefined;
  const a = Math.min(1, value / max);
  return `rgba(249, 115, 22, ${(0.15 + 0.75 * a).toFixed(3)})`; // orange-500
}

export function TokenText({
  tokens,
  values,
  max,
  focus,
  onPick,
}: {
  tokens: (string | null)[];
  values: number[];
  max: number;
  /** Index of the token the example is about (underlined). */
  focus?: number;
  onPick?: (index: number) => void;
}) {
  const pieces = tokenPieces(tokens);
  return (
    <span className="whitespace-pre-wrap break-words font-mono text-[13px] leading-6 text-slate-200">
      {pieces.map((p, i) => {
        const lead = p.match(/^\s*/)?.[0] ?? "";
        const value = values[i] ?? 0;
        return (
          <span key={i}>
            {lead}
            <span
              data-testid="token"
              title={`${tokens[i] ?? ""}: ${value.toFixed(3)}`}
              onClick={onPick ? () => onPick(i) : undefined}
              className={`rounded-sm ${i === focus ? "underline decoration-2 underline-offset-4" : ""} ${onPick ? "cursor-pointer" : ""}`}
              style={{ backgroundColor: tint(value, max) }}
            >
              {p.slice(lead.length)}
            </span>
          </span>
        );
      })}
    </span>
  );
}
