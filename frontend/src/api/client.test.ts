import { describe, expect, it } from "vitest";
import { describeError, fieldPath } from "./client";

describe("API errors read well", () => {
  it("maps a 422 loc to the form's field path", () => {
    expect(fieldPath(["body", "config", "sae", "k"])).toBe("sae.k");
    expect(fieldPath(["body", "name"])).toBe("name");
  });
  it("names each field once and keeps a summary", () => {
    const e = describeError(422, {
      detail: [
        { loc: ["body", "config", "sae", "k"], msg: "k: must be at most d_sae (1536), got 5000" },
        { loc: ["body", "config", "lr"], msg: "Input should be greater than 0" },
      ],
    });
    expect(e.fields).toEqual({ "sae.k": "must be at most d_sae (1536), got 5000", lr: "Input should be greater than 0" });
    expect(e.message).toBe("sae.k: must be at most d_sae (1536), got 5000; lr: Input should be greater than 0");
  });
  it("passes plain details through and explains a missing token", () => {
    expect(describeError(409, { detail: "cannot pause training 3: it is completed" }).message).toMatch("cannot pause");
    expect(describeError(401, undefined).message).toMatch("needs an access token");
    expect(describeError(401, { detail: "missing or wrong bearer token" }).message).toMatch("key button");
  });
});
