// The run page's tabs: training (curves, checkpoints, config) and features.
const TABS = [
  { key: "training", label: "Training" },
  { key: "features", label: "Features" },
] as const;

export type RunTab = (typeof TABS)[number]["key"];

export function RunTabs({ tab, onChange }: { tab: RunTab; onChange: (tab: RunTab) => void }) {
  return (
    <div role="tablist" aria-label="Run views" className="flex gap-1 border-b border-slate-800">
      {TABS.map((t) => (
        <button
          key={t.key}
          type="button"
          role="tab"
          aria-selected={tab === t.key}
          onClick={() => onChange(t.key)}
          className={`-mb-px border-b-2 px-3 py-1.5 text-sm font-medium ${tab === t.key ? "border-indigo-400 text-slate-100" : "border-transparent text-slate-400 hover:text-slate-200"}`}
        >
          {t.label}
        </button>
      ))}
    </div>
  );
}
