import { describe, expect, it } from "vitest";
import { tint, tokenPieces } from "./TokenText";

describe("tokenPieces", () => {
  it("joins BERT word pieces and spaces BERT words", () => {
    expect(tokenPieces(["[CLS]", "the", "token", "##izer", "runs"]).join("")).toBe("[CLS] the tokenizer runs");
  });
  it("keeps the spaces GPT-2 tokens carry", () => {
    expect(tokenPieces(["The", " cat", " sat", "\n"]).join("")).toBe("The cat sat⏎");
  });
});

describe("tint", () => {
  it("is empty for zero and strongest at the max", () => {
    expect(tint(0, 5)).toBeUndefined();
    expect(tint(5, 5)).toBe("rgba(249, 115, 22, 0.900)");
    expect(tint(10, 5)).toBe("rgba(249, 115, 22, 0.900)");
  });
});
