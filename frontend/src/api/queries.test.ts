import { QueryClient, QueryObserver } from "@tanstack/react-query";
import { describe, expect, it } from "vitest";
import type { TrainingPlan } from "./client";
import { type TrainingBody, validationQuery } from "./queries";

/** A server whose answers the test releases in any order. */
function slowServer() {
  const asked = new Map<string, { answer: (p: TrainingPlan) => void; signal?: AbortSignal }>();
  const validate = (body: TrainingBody, signal?: AbortSignal) =>
    new Promise<TrainingPlan>((resolve, reject) => {
      signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      asked.set(body.name!, { answer: resolve, signal });
    });
  return { asked, validate };
}

const body = (name: string): TrainingBody => ({ name, config: { sae: { architecture: "topk", k: 8 } }, dataset_id: null });
const plan = (d_in: number): TrainingPlan => ({ d_in, d_out: d_in, saes: 1, resolved: null, estimate: null });
const settle = () => new Promise((r) => setTimeout(r, 10));

describe("the form's /validate answers", () => {
  it("an older, slower answer never replaces the newer one, and its request is aborted", async () => {
    const qc = new QueryClient();
    const server = slowServer();
    const observer = new QueryObserver(qc, validationQuery(body("old"), server.validate));
    const shown: (number | null | undefined)[] = [];
    const stop = observer.subscribe((r) => shown.push(r.data?.d_in));
    await settle();
    observer.setOptions(validationQuery(body("new"), server.validate)); // the user typed on
    await settle();
    server.asked.get("new")!.answer(plan(2));
    await settle();
    server.asked.get("old")!.answer(plan(1)); // the first request comes back last
    await settle();
    expect(observer.getCurrentResult().data?.d_in).toBe(2);
    expect(shown).not.toContain(1);
    expect(server.asked.get("old")!.signal?.aborted).toBe(true);
    stop();
  });

  it("an answer that comes back while the user has moved on is not shown for the new form", async () => {
    const qc = new QueryClient();
    const server = slowServer();
    const observer = new QueryObserver(qc, validationQuery(body("a"), server.validate));
    const stop = observer.subscribe(() => {});
    await settle();
    observer.setOptions(validationQuery(body("b"), server.validate));
    server.asked.get("a")!.answer(plan(1));
    await settle();
    // b has not answered: nothing is shown as b's plan
    expect(observer.getCurrentResult().data).toBeUndefined();
    server.asked.get("b")!.answer(plan(3));
    await settle();
    expect(observer.getCurrentResult().data?.d_in).toBe(3);
    stop();
  });

  it("no request while the form is not ready", () => {
    expect(validationQuery(null).enabled).toBe(false);
  });
});
