import type { FieldDef } from "../../lib/trainingForm";
import { description } from "../../lib/validate";

/** One form field: its label and help from the spec, its input, its message. */
export function Field({ def, value, error, placeholder, onChange }: { def: FieldDef; value: string; error?: string; placeholder: string; onChange: (v: string) => void }) {
  const id = `f-${def.path.replace(/\./g, "-")}`;
  const help = description(def.path);
  const described = error ? `${id}-err` : undefined;
  return (
    <div className="flex min-w-0 flex-col gap-1">
      <label htmlFor={id} className="text-xs font-medium text-slate-300" title={help}>
        {def.label}
      </label>
      {def.kind === "select" ? (
        <select id={id} value={value} onChange={(e) => onChange(e.target.value)} aria-invalid={!!error} aria-describedby={described}>
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
          aria-describedby={described}
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
