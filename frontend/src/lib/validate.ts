// Field checks in the browser from the API's own OpenAPI spec (the same pydantic rules
// that give the server's 422s): type, minimum / maximum (inclusive or exclusive) and
// enums. Cross-field rules (k ≤ d_sae once the data's width is known, a hook the dataset
// lacks) come from POST /trainings/validate as the user types.
import spec from "../../openapi.json";

export interface JsonSchema {
  type?: string;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  anyOf?: JsonSchema[];
  $ref?: string;
  items?: JsonSchema;
  properties?: Record<string, JsonSchema>;
  default?: unknown;
  description?: string;
}

const components = (spec as unknown as { components: { schemas: Record<string, JsonSchema> } })
  .components.schemas;

function deref(s: JsonSchema): JsonSchema {
  if (s.$ref) return components[s.$ref.split("/").pop() as string];
  return s;
}

/** The schema of a dotted config path ("lr", "sae.k") in `root` (default TrainConfig). */
export function fieldSchema(path: string, root = "TrainConfig"): JsonSchema | undefined {
  let s: JsonSchema | undefined = components[root];
  for (const part of path.split(".")) {
    s = s && deref(s).properties?.[part];
  }
  return s && deref(s);
}

/** The non-null alternative of an optional field, and whether null (empty) is allowed. */
function concrete(s: JsonSchema): { schema: JsonSchema; nullable: boolean } {
  if (s.anyOf) {
    const options = s.anyOf.map(deref);
    const nonNull = options.find((o) => o.type !== "null") ?? {};
    return { schema: nonNull, nullable: options.some((o) => o.type === "null") };
  }
  return { schema: s, nullable: false };
}

/** The allowed values of an enum field in the spec ("TrainConfig", "lr_schedule"):
 * select options come from the API's own Literal types, not a copy here. */
export function enumOf(root: string, path: string): string[] {
  const s = fieldSchema(path, root);
  if (!s) return [];
  const { schema } = concrete(s);
  return (schema.enum ?? []).map(String);
}

export function description(path: string, root = "TrainConfig"): string | undefined {
  return fieldSchema(path, root)?.description;
}

/** Parse a form string for `path`: a number, a boolean, a string, or null when empty
 * (the server then applies the architecture's default). Throws a readable message. */
export function parseField(path: string, raw: string, root = "TrainConfig"): unknown {
  const s = fieldSchema(path, root);
  if (!s) return raw;
  const { schema, nullable } = concrete(s);
  const text = raw.trim();
  if (text === "") {
    if (nullable || schema.default !== undefined) return null;
    throw new Error("required");
  }
  let value: unknown = text;
  if (schema.type === "integer" || schema.type === "number") {
    const n = Number(text);
    if (!Number.isFinite(n)) throw new Error("must be a number");
    if (schema.type === "integer" && !Number.isInteger(n)) throw new Error("must be a whole number");
    value = n;
    if (schema.minimum !== undefined && n < schema.minimum)
      throw new Error(`must be ≥ ${schema.minimum}`);
    if (schema.exclusiveMinimum !== undefined && n <= schema.exclusiveMinimum)
      throw new Error(`must be > ${schema.exclusiveMinimum}`);
    if (schema.maximum !== undefined && n > schema.maximum)
      throw new Error(`must be ≤ ${schema.maximum}`);
    if (schema.exclusiveMaximum !== undefined && n >= schema.exclusiveMaximum)
      throw new Error(`must be < ${schema.exclusiveMaximum}`);
  } else if (schema.type === "boolean") {
    value = text === "true";
  }
  if (schema.enum && !schema.enum.includes(value)) {
    throw new Error(`must be one of ${schema.enum.join(", ")}`);
  }
  return value;
}

/** Field → message for every field of `values` that does not parse. */
export function validateFields(
  values: Record<string, string>,
  root = "TrainConfig",
): Record<string, string> {
  const errors: Record<string, string> = {};
  for (const [path, raw] of Object.entries(values)) {
    try {
      parseField(path, raw, root);
    } catch (e) {
      errors[path] = (e as Error).message;
    }
  }
  return errors;
}
