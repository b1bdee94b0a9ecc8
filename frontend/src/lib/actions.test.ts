import { describe, expect, it } from "vitest";
import { actionsFor } from "./actions";

describe("card buttons follow the run's state", () => {
  it("running: pause, stop, stop & finalize; never delete", () => {
    expect(actionsFor("running")).toEqual(["pause", "stop", "stop_and_finalize"]);
    expect(actionsFor("running")).not.toContain("delete");
  });
  it("paused resumes; finished runs retry and download", () => {
    expect(actionsFor("paused")).toContain("resume");
    expect(actionsFor("completed")).toEqual(["download", "retry", "delete"]);
    expect(actionsFor("failed")).toContain("retry");
  });
  it("a pending pause offers only to withdraw it; a pending stop offers nothing", () => {
    expect(actionsFor("running", "pause")).toEqual(["resume"]);
    expect(actionsFor("running", "stop")).toEqual([]);
  });
  it("unknown states show nothing", () => {
    expect(actionsFor("exploded")).toEqual([]);
  });
});
