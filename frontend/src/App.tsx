import { Activity, Database, FileStack, GitCompare, KeyRound, Plus } from "lucide-react";
import { lazy, Suspense, useState } from "react";
import { NavLink, Route, Routes } from "react-router-dom";
import { TOKEN_KEY } from "./api/client";
import { useJobEvents } from "./api/live";
import { DatasetsPage } from "./pages/DatasetsPage";
import { NewTrainingPage } from "./pages/NewTrainingPage";
import { RunsPage } from "./pages/RunsPage";
import { TemplatesPage } from "./pages/TemplatesPage";

// the chart pages load with their charting library on first visit: the runs list, the
// form and the datasets page do not pay for Recharts
const RunDetailPage = lazy(() => import("./pages/RunDetailPage").then((m) => ({ default: m.RunDetailPage })));
const ComparePage = lazy(() => import("./pages/ComparePage").then((m) => ({ default: m.ComparePage })));

const NAV = [
  { to: "/", label: "Runs", icon: Activity, end: true },
  { to: "/new", label: "New training", icon: Plus },
  { to: "/compare", label: "Compare", icon: GitCompare },
  { to: "/datasets", label: "Datasets", icon: Database },
  { to: "/templates", label: "Templates", icon: FileStack },
];

function TokenButton() {
  const [open, setOpen] = useState(false);
  const [value, setValue] = useState(localStorage.getItem(TOKEN_KEY) ?? "");
  return (
    <div className="relative">
      <button type="button" aria-label="Access token" title="Access token" className="rounded-md p-1.5 text-slate-400 hover:bg-slate-800" onClick={() => setOpen(!open)}>
        <KeyRound className="h-4 w-4" />
      </button>
      {open && (
        <form
          className="absolute right-0 top-9 z-40 flex w-72 flex-col gap-2 rounded-md border border-slate-700 bg-slate-900 p-3 shadow-lg"
          onSubmit={(e) => {
            e.preventDefault();
            if (value) localStorage.setItem(TOKEN_KEY, value);
            else localStorage.removeItem(TOKEN_KEY);
            location.reload();
          }}
        >
          <label className="text-xs text-slate-400" htmlFor="token">
            SAESTUDIO_API_TOKEN (needed when the studio is served beyond localhost)
          </label>
          <input id="token" type="password" value={value} onChange={(e) => setValue(e.target.value)} />
          <button type="submit" className="rounded-md bg-indigo-600 px-2 py-1 text-sm">
            Save token
          </button>
        </form>
      )}
    </div>
  );
}

export function App() {
  useJobEvents(); // one /ws/events socket keeps every page's job lists current
  return (
    <div className="min-h-screen">
      <header className="sticky top-0 z-30 border-b border-slate-800 bg-slate-950/95 backdrop-blur">
        <div className="mx-auto flex max-w-7xl items-center gap-1 px-2 py-2 sm:gap-2 sm:px-6">
          <span className="mr-1 whitespace-nowrap text-sm font-semibold tracking-tight text-indigo-300 sm:mr-2 sm:text-base">SAE Studio</span>
          <nav aria-label="Main" className="flex min-w-0 flex-1 gap-1 overflow-x-auto">
            {NAV.map(({ to, label, icon: Icon, end }) => (
              <NavLink
                key={to}
                to={to}
                end={end}
                aria-label={label}
                className={({ isActive }) =>
                  `flex shrink-0 items-center gap-1.5 rounded-md px-2 py-1.5 text-sm sm:px-2.5 ${isActive ? "bg-slate-800 text-white" : "text-slate-400 hover:text-slate-100"}`
                }
              >
                <Icon className="h-4 w-4" aria-hidden />
                {/* phones show the icons of the secondary pages; the name stays for screen readers */}
                <span className={to === "/" ? "" : "hidden md:inline"}>{label}</span>
              </NavLink>
            ))}
          </nav>
          <TokenButton />
        </div>
      </header>
      <main className="mx-auto max-w-7xl px-3 py-5 sm:px-6">
        <Suspense fallback={<p className="text-slate-400">Loading…</p>}>
          <Routes>
            <Route path="/" element={<RunsPage />} />
            <Route path="/new" element={<NewTrainingPage />} />
            <Route path="/runs/:id" element={<RunDetailPage />} />
            <Route path="/compare" element={<ComparePage />} />
            <Route path="/datasets" element={<DatasetsPage />} />
            <Route path="/templates" element={<TemplatesPage />} />
            <Route path="*" element={<p className="text-slate-400">Nothing here.</p>} />
          </Routes>
        </Suspense>
      </main>
    </div>
  );
}
