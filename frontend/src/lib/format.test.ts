import { describe, expect, it } from "vitest";
import { formatBytes, formatCount, formatDuration, formatMetric, formatPercent, niceCeil } from "./format";

describe("formatDuration", () => {
  it("reads like a clock at every scale", () => {
    expect(formatDuration(42.4)).toBe("42s");
    expect(formatDuration(0.2)).toBe("<1s");
    expect(formatDuration(0)).toBe("0s");
    expect(formatDuration(125)).toBe("2m 05s");
    expect(formatDuration(3 * 3600 + 7 * 60)).toBe("3h 07m");
    expect(formatDuration(50 * 3600)).toBe("2d 2h");
  });
  it("shows a dash for unknown or nonsense", () => {
    expect(formatDuration(null)).toBe("—");
    expect(formatDuration(-1)).toBe("—");
    expect(formatDuration(Infinity)).toBe("—");
  });
});

describe("formatBytes / formatCount / formatPercent", () => {
  it("scales units", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(1536)).toBe("1.5 KB");
    expect(formatBytes(3 * 1024 ** 3)).toBe("3.0 GB");
  });
  it("groups and compacts counts", () => {
    expect(formatCount(12288)).toBe("12,288");
    expect(formatCount(1_500_000, true)).toBe("1.5M");
    expect(formatCount(999, true)).toBe("999");
  });
  it("percent keeps a decimal for small fractions", () => {
    expect(formatPercent(0.5)).toBe("50%");
    expect(formatPercent(0.034)).toBe("3.4%");
    expect(formatPercent(0)).toBe("0%");
  });
});

describe("formatMetric", () => {
  it("keeps about four significant digits", () => {
    expect(formatMetric(0.123456)).toBe("0.1235");
    expect(formatMetric(1.5)).toBe("1.5");
    expect(formatMetric(32)).toBe("32");
    expect(formatMetric(1234.56)).toBe("1234.6");
  });
  it("uses exponents for tiny and huge values", () => {
    expect(formatMetric(0.0000625)).toBe("6.25e-5");
    expect(formatMetric(2.5e6)).toBe("2.50e+6");
    expect(formatMetric(NaN)).toBe("—");
  });
});

describe("niceCeil", () => {
  it("ends axes on round numbers at or above the data", () => {
    expect(niceCeil(0.188)).toBe(0.2);
    expect(niceCeil(33.6)).toBe(35);
    expect(niceCeil(0.006152)).toBe(0.0065);
    expect(niceCeil(100)).toBe(100);
    expect(niceCeil(0)).toBe(1);
  });
});
