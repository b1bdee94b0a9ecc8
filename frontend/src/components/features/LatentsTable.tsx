// The latents of one SAE: sortable columns, search (top token, label, #number), a
// filter (dead, dense, labelled) and pages. Clicking a row opens it in the panel.
import { ChevronLeft, ChevronRight } from "lucide-react";
import { useEffect, useState } from "react";
import { IconButton } from "../ui";
import { formatMetric } from "../../lib/format";
import { formatDensity, useLatents, type LatentFilter, type LatentQuery, type LatentSort } from "../../hooks/useFeatures";

const PAGE = 25;
const COLUMNS: { key: LatentSort; label: string; className?: string }[] = [
  { key: "latent", label: "#" },
  { key: "density", label: "Density" },
  { key: "max_activation", label: "Max", className: "hidden sm:table-cell" },
  { key: "label", label: "Label" },
];

export function LatentsTable({
  trainingId,
  sae,
  selected,
  onSelect,
  onPick,
}: {
  trainingId: number;
  sae: string;
  selected: number | null;
  /** The first row is selected when nothing is. */
  onSelect: (latent: number) => void;
  /** A row clicked. */
  onPick: (latent: number) => void;
}) {
  const [sort, setSort] = useState<LatentSort>("density");
  const [order, setOrder] = useState<"asc" | "desc">("desc");
  const [filter, setFilter] = useState<LatentFilter>("alive");
  const [typed, setTyped] = useState("");
  const [q, setQ] = useState("");
  const [offset, setOffset] = useState(0);
  useEffect(() => {
    const t = setTimeout(() => setQ(typed.trim()), 250); // search as you type, debounced
    return () => clearTimeout(t);
  }, [typed]);
  useEffect(() => setOffset(0), [sae, sort, order, filter, q]);
  const query: LatentQuery = { sae, sort, order, filter, q: q || undefined, limit: PAGE, offset };
  const { data, error, isFetching: loading } = useLatents(trainingId, query);
  useEffect(() => {
    if (selected === null && data?.items.length) onSelect(data.items[0].latent);
  }, [data, selected, onSelect]);

  function sortBy(key: LatentSort) {
    if (key === sort) setOrder(order === "asc" ? "desc" : "asc");
    else {
      setSort(key);
      setOrder(key === "latent" || key === "label" ? "asc" : "desc");
    }
  }

  return (
    <div className="space-y-2">
      <div className="flex flex-wrap gap-2">
        <input aria-label="Search latents" placeholder="Search a token, a label or #12" value={typed} onChange={(e) => setTyped(e.target.value)} className="min-w-0 flex-1" />
        <select aria-label="Filter latents" value={filter} onChange={(e) => setFilter(e.target.value as LatentFilter)}>
          <option value="all">All</option>
          <option value="alive">Alive</option>
          <option value="dead">Dead</option>
          <option value="dense">Dense (&gt;10%)</option>
          <option value="labelled">Labelled</option>
        </select>
      </div>
      {error && <p role="alert" className="text-sm text-red-300">{error.message}</p>}
      <div className="overflow-x-auto">
        <table className="w-full table-fixed text-left text-sm" aria-label="Latents">
          <thead className="text-xs uppercase text-slate-500">
            <tr>
              {COLUMNS.map((c) => (
                <th key={c.key} className={`py-1 pr-2 ${c.key === "latent" ? "w-14" : c.key === "label" ? "" : "w-20"} ${c.className ?? ""}`} aria-sort={sort === c.key ? (order === "asc" ? "ascending" : "descending") : "none"}>
                  <button type="button" className="uppercase hover:text-slate-300" onClick={() => sortBy(c.key)}>
                    {c.label}
                    {sort === c.key ? (order === "asc" ? " ↑" : " ↓") : ""}
                  </button>
                </th>
              ))}
              <th className="w-2/5 py-1">Top tokens</th>
            </tr>
          </thead>
          <tbody className={loading ? "opacity-60" : ""}>
            {data?.items.map((l) => (
              <tr
                key={l.latent}
                data-testid="latent-row"
                aria-selected={l.latent === selected}
                onClick={() => onPick(l.latent)}
                className={`cursor-pointer border-t border-slate-800 hover:bg-slate-800/50 ${l.latent === selected ? "bg-indigo-500/15" : ""}`}
              >
                <td className="py-1.5 pr-2 font-mono">{l.latent}</td>
                <td className="pr-2 font-mono">{formatDensity(l.density)}</td>
                <td className="hidden pr-2 font-mono sm:table-cell">{formatMetric(l.max_activation)}</td>
                <td className="truncate pr-2 text-emerald-300" title={l.label ?? ""}>{l.label ?? ""}</td>
                <td className="truncate font-mono text-xs text-slate-300" title={l.top_tokens.join(" · ")}>
                  {l.top_tokens.join(" · ")}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {data && data.items.length === 0 && <p className="py-3 text-sm text-slate-400">No latents match.</p>}
      </div>
      {data && (
        <div className="flex items-center justify-between text-sm text-slate-400">
          <span data-testid="latents-count">
            {data.total ? `${offset + 1}–${Math.min(offset + PAGE, data.total)} of ${data.total}` : "0 latents"}
          </span>
          <span>
            <IconButton label="Previous page" icon={<ChevronLeft className="h-4 w-4" />} disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))} />
            <IconButton label="Next page" icon={<ChevronRight className="h-4 w-4" />} disabled={offset + PAGE >= data.total} onClick={() => setOffset(offset + PAGE)} />
          </span>
        </div>
      )}
    </div>
  );
}
