import { describe, expect, it } from "vitest";
import {
  type ArchInfo,
  contextFor,
  FIELDS,
  fromConfig,
  INITIAL,
  placeholderFor,
  toConfig,
  validateForm,
  visibleFields,
} from "./trainingForm";

const ARCHS: ArchInfo[] = [
  { name: "standard", description: "", activation: "relu", uses_k: false, defaults: { lr: 4e-4, sparsity_coefficient: 5 } },
  { name: "jumprelu", description: "", activation: "jumprelu", uses_k: false, defaults: { lr: 7e-5, sparsity_coefficient: 1e-3, adam_beta1: 0 } },
  { name: "topk", description: "", activation: "topk", uses_k: true, defaults: { lr: 2e-4, sparsity_coefficient: 0, adam_eps: 6.25e-10 } },
  { name: "transcoder", description: "", activation: null, uses_k: false, defaults: { lr: 4e-4, sparsity_coefficient: 1.4e-4 } },
];

const paths = (arch: string, extra: Record<string, string> = {}) =>
  visibleFields(contextFor({ ...INITIAL, "sae.architecture": arch, ...extra }, ARCHS, "dataset")).map((f) => f.path);

describe("each architecture shows its own fields", () => {
  it("topk takes k and AuxK, no λ", () => {
    expect(paths("topk")).toContain("sae.k");
    expect(paths("topk")).toContain("aux_k");
    expect(paths("topk")).not.toContain("sparsity_coefficient");
  });
  it("jumprelu takes λ, a target L0 and its kernel settings, no k", () => {
    const p = paths("jumprelu");
    expect(p).toEqual(expect.arrayContaining(["sparsity_coefficient", "l0_target", "sae.jumprelu_bandwidth"]));
    expect(p).not.toContain("sae.k");
  });
  it("a transcoder picks an activation and needs a target hook", () => {
    expect(paths("transcoder")).toEqual(expect.arrayContaining(["sae.activation", "target_hook", "sae.skip"]));
    expect(paths("transcoder", { "sae.activation": "topk" })).toContain("sae.k");
  });
});

describe("defaults are the papers' values", () => {
  it("shows what an empty field becomes", () => {
    const ctx = (arch: string) => contextFor({ ...INITIAL, "sae.architecture": arch }, ARCHS, "dataset");
    expect(placeholderFor("sparsity_coefficient", ctx("standard"), ARCHS)).toBe("default 5");
    expect(placeholderFor("adam_beta1", ctx("jumprelu"), ARCHS)).toBe("default 0");
    expect(placeholderFor("lr", ctx("topk"), ARCHS)).toContain("√(16384 / d_sae)");
  });
});

describe("validation and the request body", () => {
  const ctx = contextFor(INITIAL, ARCHS, "dataset");
  it("flags bad numbers, a missing hook and k > d_sae", () => {
    const errors = validateForm({ ...INITIAL, lr: "-3", "sae.d_sae": "16", "sae.k": "32" }, ctx);
    expect(errors.lr).toMatch("> 0");
    expect(errors.hook).toMatch("required");
    expect(errors["sae.k"]).toBe("must be at most d_sae (16)");
  });
  it("passes a good form and builds the config, leaving defaults to the server", () => {
    const values = { ...INITIAL, hook: "resid_post.3", steps: "300", batch_size: "512" };
    expect(validateForm(values, ctx)).toEqual({});
    const config = toConfig(values, ctx, "activations/demo");
    expect(config).toMatchObject({
      activations: "activations/demo",
      hook: ["resid_post.3"],
      steps: 300,
      batch_size: 512,
      sae: { architecture: "topk", k: 32, expansion_factor: 8 },
    });
    expect(config).not.toHaveProperty("lr");
    expect(config).not.toHaveProperty("sparsity_coefficient");
  });
  it("round-trips through a stored config (templates)", () => {
    const values = { ...INITIAL, hook: "resid_post.3", lr: "0.001" };
    const back = fromConfig(toConfig(values, ctx, "a"));
    expect(back.lr).toBe("0.001");
    expect(back.hook).toBe("resid_post.3");
    expect(back["sae.k"]).toBe("32");
  });
});

describe("select options are the API's own enums", () => {
  it("every schedule, optimizer and activation the spec allows, none it does not", () => {
    const options = (path: string) => FIELDS.find((f) => f.path === path)?.options;
    expect(options("lr_schedule")).toEqual(["constant", "cosine", "linear", "onecycle"]);
    expect(options("optimizer")).toEqual(["adam", "adamw"]);
    expect(options("sae.activation")).toEqual([
      "relu",
      "topk",
      "batchtopk",
      "matryoshka_batchtopk",
      "jumprelu",
    ]);
    expect(options("normalize_activations")?.[0]).toBe(""); // empty: the architecture's default
    expect(options("autocast")).toContain("bf16");
  });
});
