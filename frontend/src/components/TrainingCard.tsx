import { Eye } from "lucide-react";

import { Link } from "react-router-dom";
import type { Training } from "../api/client";
import { ACTION_LABEL, type RunAction } from "../lib/actions";
import { ACTION_ICONS } from "./actionIcons";
import { formatCount, formatDuration, formatMetric, formatPercent, latentsOf } from "../lib/format";
import { IconButton, ProgressBar, Stat, StatusBadge } from "./ui";

export function TrainingCard({
  training,
  selected,
  onSelect,
  onAction,
}: {
  training: Training;
  selected: boolean;
  onSelect: (on: boolean) => void;
  onAction: (action: RunAction) => void;
}) {
  const t = training;
  const m = (t.latest_metrics ?? {}) as Record<string, number>;
  const total = t.total_steps ?? 0;
  const active = t.status === "running" || t.status === "paused" || t.status === "queued";
  return (
    <article
      aria-label={`Training ${t.name}`}
      className="flex flex-col gap-3 rounded-lg border border-slate-800 bg-slate-900/70 p-4"
    >
      <div className="flex items-start gap-3">
        <input
          type="checkbox"
          className="mt-1 h-4 w-4 accent-indigo-500"
          aria-label={`Select ${t.name}`}
          checked={selected}
          onChange={(e) => onSelect(e.target.checked)}
        />
        <div className="min-w-0 flex-1">
          <h3 className="truncate font-medium">
            <Link to={`/runs/${t.id}`} className="hover:text-indigo-300">
              {t.name}
            </Link>
          </h3>
          <p className="truncate text-xs text-slate-400">
            {t.architecture} · {latentsOf(t)} · #{t.id}
          </p>
        </div>
        <StatusBadge status={t.status} control={t.control} />
      </div>

      <div className="space-y-1">
        <ProgressBar value={t.progress} label={`Progress of ${t.name}`} />
        <div className="flex justify-between gap-2 text-xs text-slate-400">
          <span data-testid="steps">
            Step {formatCount(t.step)} / {total ? formatCount(total) : "—"}
          </span>
          <span>{t.status === "running" ? `ETA ${formatDuration(t.eta_seconds)}` : active ? "" : t.finished_at ? "finished" : ""}</span>
        </div>
      </div>

      <div className="grid grid-cols-4 gap-2">
        <Stat label="Loss" value={<span data-testid="loss">{formatMetric(m.loss)}</span>} />
        <Stat label="L0" value={formatMetric(m.l0)} />
        <Stat label="FVU" value={formatMetric(m.fvu)} />
        <Stat label="Dead" value={formatPercent(m.dead_fraction)} />
      </div>

      {t.error && <p className="line-clamp-2 break-words text-xs text-red-300">{t.error}</p>}

      <div className="flex flex-wrap items-center gap-1 border-t border-slate-800 pt-2">
        {t.actions.map((a) => (
          <IconButton
            key={a}
            label={`${ACTION_LABEL[a]} ${t.name}`}
            icon={ACTION_ICONS[a]}
            onClick={() => onAction(a)}
          />
        ))}
        <Link
          to={`/runs/${t.id}`}
          aria-label={`Details of ${t.name}`}
          title="Details"
          className="ml-auto inline-flex items-center gap-1 rounded-md px-2 py-1 text-xs text-slate-300 hover:bg-slate-800"
        >
          <Eye className="h-4 w-4" aria-hidden /> Details
        </Link>
      </div>
    </article>
  );
}
