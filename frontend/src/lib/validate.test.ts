import { describe, expect, it } from "vitest";
import { fieldSchema, parseField, validateFields } from "./validate";

describe("rules come from the API's OpenAPI spec", () => {
  it("finds nested fields through $ref", () => {
    expect(fieldSchema("sae.k")?.type).toBe("integer");
    expect(fieldSchema("lr")).toBeDefined();
  });

  it("applies minimum, exclusive bounds and integer-ness", () => {
    expect(parseField("batch_size", "4096")).toBe(4096);
    expect(() => parseField("batch_size", "0")).toThrow("≥ 1");
    expect(() => parseField("batch_size", "12.5")).toThrow("whole number");
    expect(() => parseField("lr", "0")).toThrow("> 0");
    expect(() => parseField("lr", "2")).toThrow("≤ 1");
    expect(() => parseField("adam_beta1", "1")).toThrow("< 1");
    expect(() => parseField("sae.k", "many")).toThrow("number");
  });

  it("empty optional fields mean 'use the default'", () => {
    expect(parseField("lr", "")).toBeNull();
    expect(parseField("sae.d_sae", " ")).toBeNull();
  });

  it("enums", () => {
    expect(parseField("lr_schedule", "cosine")).toBe("cosine");
    expect(() => parseField("lr_schedule", "sawtooth")).toThrow("one of");
  });

  it("collects a message per bad field and none for good ones", () => {
    const errors = validateFields({ lr: "-1", steps: "100", "sae.k": "0" });
    expect(Object.keys(errors).sort()).toEqual(["lr", "sae.k"]);
  });
});
