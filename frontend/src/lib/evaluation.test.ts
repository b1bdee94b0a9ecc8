import { describe, expect, it } from "vitest";
import { EVAL_METRICS, formatEval, latestEvaluations, shownMetrics } from "./evaluation";

describe("latestEvaluations", () => {
  it("keeps each SAE's last eval line and folds its downstream line in", () => {
    const evals = latestEvaluations([
      { step: 100, sae: "a", kind: "eval", metrics: { eval_fvu: 0.5, eval_l0: 9 } },
      { step: 100, sae: "a", kind: "train", metrics: { loss: 1 } },
      { step: 200, sae: "b", kind: "eval", metrics: { eval_fvu: 0.4 } },
      { step: 200, sae: "a", kind: "eval", metrics: { eval_fvu: 0.3, eval_l0: 7, time: 5, note: "x" } },
      { step: 200, sae: "a", kind: "downstream", metrics: { ce_loss_recovered: 0.9 } },
      { step: 150, sae: "a", kind: "eval", metrics: { eval_fvu: 0.9 } }, // older, arrives late
    ]);
    expect(evals.map((e) => [e.sae, e.step])).toEqual([
      ["a", 200],
      ["b", 200],
    ]);
    expect(evals[0]!.metrics).toEqual({ eval_fvu: 0.3, eval_l0: 7, time: 5, ce_loss_recovered: 0.9 });
    expect(shownMetrics(evals).map((m) => m.label)).toEqual(["FVU", "L0", "CE loss recovered"]);
  });

  it("labels every core metric once", () => {
    const keys = EVAL_METRICS.map((m) => m.key);
    expect(new Set(keys).size).toBe(keys.length);
    expect(EVAL_METRICS.find((m) => m.key === "eval_explained_variance")?.label).toBe("Explained variance");
    const dead = EVAL_METRICS.find((m) => m.key === "eval_dead_latents")!;
    expect(formatEval(dead, 1234)).toBe("1,234"); // a count, not "1234.0"
    expect(formatEval(EVAL_METRICS[0]!, 0.86371)).toBe("0.8637");
  });
});
