import { QueryClient, QueryObserver } from "@tanstack/react-query";
import { describe, expect, it } from "vitest";
import { addRows, applyJobEvent, type TrainingSnapshot } from "./cache";
import type { Training } from "./client";
import { keys } from "./queries";

const run = (over: Partial<Training> = {}): Training =>
  ({
    id: 1, name: "demo topk", status: "queued", control: null, error: null, config: { sae: { expansion_factor: 4 } },
    architecture: "topk", d_sae: null, step: 0, total_steps: 2000, progress: 0, latest_metrics: null, eta_seconds: null,
    out_dir: "runs/1-demo", exports: null, dataset_id: null, parent_id: null, worker: null, attempts: 0,
    created_at: "", updated_at: "", started_at: null, finished_at: null, actions: ["pause", "stop", "delete"], ...over,
  }) as Training;

const snap = (over: Partial<TrainingSnapshot>): TrainingSnapshot => ({ type: "training", id: 1, name: "demo topk", status: "running", control: null, progress: 0.01, error: null, step: 20, ...over });
const settle = () => new Promise((r) => setTimeout(r, 20));

/** A cache whose run list is fetched from `server` (what GET /trainings answers now)
 * and watched, as the runs page watches it. */
function listed(server: { rows: Training[] }, counter = { fetches: 0 }) {
  const qc = new QueryClient();
  qc.setQueryDefaults(keys.trainings, { queryFn: async () => (counter.fetches++, server.rows.map((r) => ({ ...r }))) });
  new QueryObserver(qc, { queryKey: keys.trainings, staleTime: Infinity }).subscribe(() => {});
  return qc;
}

describe("live events in the query cache", () => {
  it("a card listed while queued shows the latent count once the run knows it", async () => {
    const server = { rows: [run()] };
    const qc = listed(server);
    await settle();
    // the worker starts, reads the data (384 wide × 4) and says so in its heartbeat
    server.rows = [run({ status: "running", d_sae: 1536, step: 20, actions: ["pause", "stop", "stop_and_finalize"] })];
    applyJobEvent(qc, snap({}));
    expect(qc.getQueryData<Training[]>(keys.trainings)![0].status).toBe("running"); // at once
    await settle();
    const card = qc.getQueryData<Training[]>(keys.trainings)![0];
    expect(card.d_sae).toBe(1536);
    expect(card.actions).toEqual(["pause", "stop", "stop_and_finalize"]);
  });

  it("claimed before the worker read the data: a later step fetches the width", async () => {
    const server = { rows: [run({ status: "running", step: 0 })] }; // claimed, not started
    const qc = listed(server);
    await settle();
    applyJobEvent(qc, snap({ step: 0 }));
    await settle();
    expect(qc.getQueryData<Training[]>(keys.trainings)![0].d_sae).toBeNull();
    server.rows = [run({ status: "running", d_sae: 1536, step: 40 })];
    applyJobEvent(qc, snap({ step: 40 }));
    await settle();
    expect(qc.getQueryData<Training[]>(keys.trainings)![0].d_sae).toBe(1536);
  });

  it("a status change re-reads the run's actions; progress alone does not refetch", async () => {
    const server = { rows: [run({ status: "running", d_sae: 64, step: 10 })] };
    const counter = { fetches: 0 };
    const qc = listed(server, counter);
    await settle();
    applyJobEvent(qc, snap({ step: 30, progress: 0.3 }));
    await settle();
    expect(counter.fetches).toBe(1);
    expect(qc.getQueryData<Training[]>(keys.trainings)![0].step).toBe(30);
    server.rows = [run({ status: "running", control: "pause", d_sae: 64, step: 30, actions: ["resume"] })];
    applyJobEvent(qc, snap({ control: "pause", step: 30 }));
    await settle();
    expect(counter.fetches).toBe(2);
    expect(qc.getQueryData<Training[]>(keys.trainings)![0].actions).toEqual(["resume"]);
  });

  it("a run created elsewhere is listed; a deleted one goes", async () => {
    const server = { rows: [run()] };
    const qc = listed(server);
    await settle();
    server.rows = [run({ id: 2, name: "other" }), run()];
    applyJobEvent(qc, snap({ id: 2, name: "other", status: "queued" }));
    await settle();
    expect(qc.getQueryData<Training[]>(keys.trainings)!.map((t) => t.id)).toEqual([2, 1]);
    applyJobEvent(qc, { type: "deleted", kind: "training", id: 1 });
    expect(qc.getQueryData<Training[]>(keys.trainings)!.map((t) => t.id)).toEqual([2]);
  });

  it("a list nobody watched while runs changed is read anew when a page shows it", async () => {
    const server = { rows: [run({ status: "running", d_sae: 64, step: 10, actions: ["pause", "stop", "stop_and_finalize"] })] };
    const qc = new QueryClient();
    qc.setQueryDefaults(keys.trainings, { queryFn: async () => server.rows.map((r) => ({ ...r })) });
    await qc.fetchQuery({ queryKey: keys.trainings }); // listed, then the user went to another page
    server.rows = [run({ status: "completed", d_sae: 64, step: 600, actions: ["download", "retry", "delete"] })];
    applyJobEvent(qc, snap({ status: "completed", step: 600, progress: 1 }));
    applyJobEvent(qc, snap({ status: "completed", step: 600, progress: 1, latest_metrics: { loss: 1 } }));
    new QueryObserver(qc, { queryKey: keys.trainings, staleTime: 30_000 }).subscribe(() => {}); // back on the runs page
    await settle();
    expect(qc.getQueryData<Training[]>(keys.trainings)![0].actions).toEqual(["download", "retry", "delete"]);
  });

  it("a reconnect's repeated lines are dropped", () => {
    const line = (step: number, kind = "train") => ({ step, sae: "sae", kind, metrics: { loss: 1 } });
    const rows = addRows(addRows([], [line(10), line(20)]), [line(20), line(20, "eval"), line(30)]);
    expect(rows.map((r) => `${r.kind}${r.step}`)).toEqual(["train10", "train20", "eval20", "train30"]);
  });
});
