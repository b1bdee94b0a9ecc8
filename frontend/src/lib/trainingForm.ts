// The new-training form's model: which fields each architecture takes, their defaults
// (paper-grounded, from GET /architectures), and form values ↔ a TrainConfig body.
import type { Architecture } from "../api/client";
import { enumOf, parseField, validateFields } from "./validate";

/** GET /architectures' items, as the spec types them. */
export type ArchInfo = Architecture;

export type Source = "dataset" | "model";

export interface FieldDef {
  path: string;
  label: string;
  /** "basic" fields are always shown; "advanced" ones sit in the collapsible section. */
  section: "data" | "basic" | "advanced";
  kind: "number" | "text" | "select" | "bool";
  options?: string[];
  /** Shown only when this returns true for the chosen architecture / activation. */
  when?: (ctx: FieldContext) => boolean;
}

export interface FieldContext {
  architecture: string;
  activation: string;
  usesK: boolean;
  source: Source;
}

const isJumpRelu = (c: FieldContext) => c.activation === "jumprelu";
const isMatryoshka = (c: FieldContext) => c.activation === "matryoshka_batchtopk";

export const FIELDS: FieldDef[] = [
  { path: "model", label: "Model (hub name or folder)", section: "data", kind: "text", when: (c) => c.source === "model" },
  { path: "dataset", label: "Text dataset", section: "data", kind: "text", when: (c) => c.source === "model" },
  { path: "hook", label: "Hook point", section: "data", kind: "text" },
  { path: "target_hook", label: "Target hook", section: "data", kind: "text", when: (c) => c.architecture === "transcoder" },
  { path: "sae.activation", label: "Activation", section: "basic", kind: "select", options: enumOf("SAEConfig", "activation"), when: (c) => c.architecture === "transcoder" || c.architecture === "skip" },
  { path: "sae.expansion_factor", label: "Expansion factor", section: "basic", kind: "number" },
  { path: "sae.d_sae", label: "Latents (d_sae)", section: "basic", kind: "number" },
  { path: "sae.k", label: "k (active latents)", section: "basic", kind: "number", when: (c) => c.usesK },
  { path: "sae.matryoshka_widths", label: "Matryoshka widths (comma-separated)", section: "basic", kind: "text", when: isMatryoshka },
  { path: "sae.matryoshka_aux_per_level", label: "AuxK per Matryoshka level", section: "advanced", kind: "bool", when: isMatryoshka },
  { path: "sparsity_coefficient", label: "Sparsity coefficient λ", section: "basic", kind: "number", when: (c) => !c.usesK },
  { path: "l0_target", label: "Target L0", section: "basic", kind: "number", when: isJumpRelu },
  { path: "steps", label: "Steps", section: "basic", kind: "number" },
  { path: "batch_size", label: "Batch size", section: "basic", kind: "number" },
  { path: "lr", label: "Learning rate", section: "basic", kind: "number" },
  { path: "sae.skip", label: "Skip connection (W_skip)", section: "advanced", kind: "bool", when: (c) => c.architecture === "transcoder" },
  { path: "sae.jumprelu_bandwidth", label: "JumpReLU bandwidth ε", section: "advanced", kind: "number", when: isJumpRelu },
  { path: "sae.jumprelu_init_threshold", label: "JumpReLU initial θ", section: "advanced", kind: "number", when: isJumpRelu },
  { path: "aux_k", label: "AuxK latents", section: "advanced", kind: "number", when: (c) => c.usesK },
  { path: "aux_k_coefficient", label: "AuxK coefficient α", section: "advanced", kind: "number", when: (c) => c.usesK },
  { path: "sparsity_warmup_steps", label: "λ warm-up steps", section: "advanced", kind: "number", when: (c) => !c.usesK },
  { path: "lr_schedule", label: "LR schedule", section: "advanced", kind: "select", options: enumOf("TrainConfig", "lr_schedule") },
  { path: "lr_warmup_steps", label: "LR warm-up steps", section: "advanced", kind: "number" },
  { path: "lr_decay_steps", label: "LR decay steps", section: "advanced", kind: "number" },
  { path: "min_lr_ratio", label: "Final LR ratio", section: "advanced", kind: "number" },
  { path: "optimizer", label: "Optimizer", section: "advanced", kind: "select", options: enumOf("TrainConfig", "optimizer") },
  { path: "adam_beta1", label: "Adam β1", section: "advanced", kind: "number" },
  { path: "adam_beta2", label: "Adam β2", section: "advanced", kind: "number" },
  { path: "adam_eps", label: "Adam ε", section: "advanced", kind: "number" },
  { path: "weight_decay", label: "Weight decay", section: "advanced", kind: "number" },
  { path: "grad_clip_norm", label: "Gradient clip norm", section: "advanced", kind: "number" },
  { path: "grad_accum_steps", label: "Gradient accumulation", section: "advanced", kind: "number" },
  { path: "normalize_activations", label: "Input normalisation", section: "advanced", kind: "select", options: ["", ...enumOf("TrainConfig", "normalize_activations")] },
  { path: "dead_after_tokens", label: "Dead after tokens", section: "advanced", kind: "number" },
  { path: "context_length", label: "Context length", section: "advanced", kind: "number", when: (c) => c.source === "model" },
  { path: "eval_every", label: "Evaluate every", section: "advanced", kind: "number" },
  { path: "log_every", label: "Log every", section: "advanced", kind: "number" },
  { path: "checkpoint_every", label: "Checkpoint every", section: "advanced", kind: "number" },
  { path: "keep_checkpoints", label: "Keep checkpoints", section: "advanced", kind: "number" },
  { path: "seed", label: "Seed", section: "advanced", kind: "number" },
  { path: "device", label: "Device", section: "advanced", kind: "text" },
  { path: "autocast", label: "Autocast", section: "advanced", kind: "select", options: enumOf("TrainConfig", "autocast") },
];

/** The optimiser fields whose empty value means "the architecture's default". */
const DEFAULT_KEYS: Record<string, string> = {
  lr: "lr",
  sparsity_coefficient: "sparsity_coefficient",
  adam_beta1: "adam_beta1",
  adam_beta2: "adam_beta2",
  adam_eps: "adam_eps",
  normalize_activations: "normalize_activations",
};

export function activationOf(values: Record<string, string>, archs: ArchInfo[]): string {
  const arch = archs.find((a) => a.name === values["sae.architecture"]);
  return arch?.activation ?? (values["sae.activation"] || "relu");
}

export function contextFor(values: Record<string, string>, archs: ArchInfo[], source: Source): FieldContext {
  const activation = activationOf(values, archs);
  return {
    architecture: values["sae.architecture"] ?? "topk",
    activation,
    usesK: ["topk", "batchtopk", "matryoshka_batchtopk"].includes(activation),
    source,
  };
}

export function visibleFields(ctx: FieldContext): FieldDef[] {
  return FIELDS.filter((f) => !f.when || f.when(ctx));
}

/** What an empty optional field becomes on the server, shown as its placeholder. */
export function placeholderFor(path: string, ctx: FieldContext, archs: ArchInfo[]): string {
  const arch = archs.find((a) => a.name === ctx.architecture);
  const active = archs.find((a) => a.name === ctx.activation && a.activation === ctx.activation);
  const defaults = { ...(arch?.defaults ?? {}) };
  if ((ctx.architecture === "transcoder" || ctx.architecture === "skip") && active && ctx.activation !== "relu") {
    // skip SAEs and transcoders take their activation's optimiser settings (JumpReLU's β1 = 0)
    Object.assign(defaults, { ...active.defaults, lr: ctx.activation === "jumprelu" ? arch?.defaults.lr : active.defaults.lr });
  }
  if (path === "lr" && ctx.usesK) return `auto: ${defaults.lr} × √(16384 / d_sae)`;
  if (path === "sae.d_sae") return "expansion × d_in";
  if (path === "steps") return "2000";
  if (path === "aux_k") return "d_in / 2";
  if (path === "sae.matryoshka_widths") return String(arch?.sae_defaults?.matryoshka_widths ?? active?.sae_defaults?.matryoshka_widths ?? "");
  if (path === "lr_decay_steps" || path === "sparsity_warmup_steps") return "architecture default";
  if (path === "dead_after_tokens") return "auto";
  const key = DEFAULT_KEYS[path];
  if (key && defaults[key] !== undefined) return `default ${defaults[key]}`;
  return "";
}

export const INITIAL: Record<string, string> = {
  "sae.architecture": "topk",
  "sae.activation": "",
  "sae.expansion_factor": "8",
  "sae.d_sae": "",
  "sae.k": "32",
  hook: "",
  steps: "2000",
  batch_size: "4096",
  lr_schedule: "constant",
  optimizer: "adam",
  autocast: "auto",
  "sae.skip": "false",
};

/** Field → message for the visible fields (sources and hooks are checked by the page). */
export function validateForm(values: Record<string, string>, ctx: FieldContext): Record<string, string> {
  const shown: Record<string, string> = {};
  for (const f of visibleFields(ctx)) {
    if (f.kind === "number" && values[f.path] !== undefined) shown[f.path] = values[f.path];
  }
  const errors = validateFields(shown);
  if (ctx.source === "model") {
    if (!values.model?.trim()) errors.model = "required: a model for on-the-fly activations";
    if (!values.dataset?.trim()) errors.dataset = "required: a text dataset";
  }
  if (!values.hook?.trim()) errors.hook = "required: the hook point to train on";
  if (ctx.architecture === "transcoder" && !values.target_hook?.trim())
    errors.target_hook = "required: a transcoder reconstructs this hook";
  const k = Number(values["sae.k"]);
  const dSae = Number(values["sae.d_sae"]);
  if (ctx.usesK && values["sae.d_sae"]?.trim() && !errors["sae.k"] && !errors["sae.d_sae"] && k > dSae)
    errors["sae.k"] = `must be at most d_sae (${dSae})`;
  return errors;
}

function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split(".");
  let cur = obj;
  for (const p of parts.slice(0, -1)) {
    cur[p] ??= {};
    cur = cur[p] as Record<string, unknown>;
  }
  cur[parts[parts.length - 1]] = value;
}

/** The TrainConfig body for the visible fields; empty optional fields are left out. */
export function toConfig(
  values: Record<string, string>,
  ctx: FieldContext,
  activations: string | null,
): Record<string, unknown> {
  const config: Record<string, unknown> = { sae: { architecture: ctx.architecture } };
  if (ctx.source === "dataset" && activations) config.activations = activations;
  for (const f of visibleFields(ctx)) {
    const raw = values[f.path] ?? "";
    if (f.path === "hook") {
      config.hook = raw.split(",").map((h) => h.trim()).filter(Boolean);
      continue;
    }
    if (f.kind === "text") {
      if (raw.trim()) setPath(config, f.path, raw.trim());
      continue;
    }
    if (f.kind === "bool") {
      setPath(config, f.path, raw === "true");
      continue;
    }
    if (raw.trim() === "") continue;
    setPath(config, f.path, f.kind === "number" ? parseField(f.path, raw) : raw);
  }
  return config;
}

/** Form values from a stored config (a template, or a run to copy). */
export function fromConfig(config: Record<string, unknown>): Record<string, string> {
  const values: Record<string, string> = { ...INITIAL, "sae.d_sae": "", "sae.k": "" };
  const walk = (obj: Record<string, unknown>, prefix: string) => {
    for (const [k, v] of Object.entries(obj)) {
      const path = prefix + k;
      if (v && typeof v === "object" && !Array.isArray(v)) walk(v as Record<string, unknown>, `${path}.`);
      else if (Array.isArray(v)) values[path] = v.join(", ");
      else if (v !== null && v !== undefined) values[path] = String(v);
    }
  };
  walk(config, "");
  return values;
}
