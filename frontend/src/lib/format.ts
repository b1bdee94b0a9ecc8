// Display formatting shared by cards, tables and charts.

export function formatDuration(seconds: number | null | undefined): string {
  if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return "—";
  if (seconds > 0 && seconds < 1) return "<1s";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

export function formatBytes(bytes: number | null | undefined): string {
  if (bytes == null || !Number.isFinite(bytes)) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

/** 12288 → "12,288"; 1.5e6 → "1.5M" when compact. */
export function formatCount(n: number | null | undefined, compact = false): string {
  if (n == null || !Number.isFinite(n)) return "—";
  if (compact && Math.abs(n) >= 1e4) {
    const units: [number, string][] = [
      [1e12, "T"],
      [1e9, "B"],
      [1e6, "M"],
      [1e3, "k"],
    ];
    for (const [size, unit] of units) {
      if (Math.abs(n) >= size) return `${+(n / size).toFixed(1)}${unit}`;
    }
  }
  return Math.round(n).toLocaleString("en-US");
}

/** A metric value with about 4 significant digits; tiny and huge ones in exponent form. */
export function formatMetric(v: number | null | undefined): string {
  if (v == null || !Number.isFinite(v)) return "—";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e5) return v.toExponential(2);
  if (a >= 100) return v.toFixed(1);
  return v.toPrecision(4).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
}

export function formatPercent(fraction: number | null | undefined): string {
  if (fraction == null || !Number.isFinite(fraction)) return "—";
  return `${(fraction * 100).toFixed(fraction < 0.1 && fraction > 0 ? 1 : 0)}%`;
}

/** The next round number above v (1, 1.5, 2, 2.5 … × a power of ten): where an axis ends. */
export function niceCeil(v: number): number {
  if (!(v > 0) || !Number.isFinite(v)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return +((Math.ceil((v / p) * 2) / 2) * p).toPrecision(12);
}

/** A run's width: the latent count once the run knows it (the worker reads the data's
 * width when it starts), else what the config says it will be. */
export function latentsOf(t: { d_sae: number | null; config: Record<string, unknown> }): string {
  if (t.d_sae) return `${formatCount(t.d_sae)} latents`;
  const factor = (t.config.sae as { expansion_factor?: number } | undefined)?.expansion_factor ?? 8;
  return `${factor}× d_in latents`;
}
