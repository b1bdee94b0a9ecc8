// Server state of the Features tab, one hook per resource, all through the generated
// client. Each hook is one query (key = its arguments) or one mutation, so it maps
// one-to-one onto TanStack Query's useQuery / useMutation.
import { useCallback, useEffect, useRef, useState } from "react";
import { api, call, type Schemas } from "../api/client";

export type FeaturesStatus = Schemas["FeaturesStatus"];
export type LatentPage = Schemas["LatentPage"];
export type LatentSummary = Schemas["LatentSummary"];
export type LatentRecord = Schemas["LatentRecord"];
export type Example = Schemas["Example"];
export type PromptResult = Schemas["PromptResult"];

/** A firing density as a percentage with two significant digits (0.012%, 3.4%). */
export function formatDensity(f: number): string {
  if (f <= 0) return "0";
  const pct = f * 100;
  return `${pct >= 10 ? pct.toFixed(0) : pct.toPrecision(2)}%`;
}
export type LatentSort = NonNullable<LatentQuery["sort"]>;
export type LatentFilter = NonNullable<LatentQuery["filter"]>;

export interface LatentQuery {
  sae?: string;
  sort?: "latent" | "density" | "max_activation" | "mean_activation" | "label";
  order?: "asc" | "desc";
  filter?: "all" | "alive" | "dead" | "dense" | "labelled";
  q?: string;
  limit?: number;
  offset?: number;
}

interface Query<T> {
  data: T | undefined;
  error: string | null;
  loading: boolean;
  refetch: () => void;
}

/** One query: loads when `key` changes (null = disabled), refetches every `pollMs`
 * while `poll(data)` says so; the last answer wins (no stale overwrite). */
function useQuery<T>(key: string | null, load: () => Promise<T>, pollMs = 0, poll?: (d: T) => boolean): Query<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    if (key === null) return;
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    setLoading(true);
    loadRef
      .current()
      .then((d) => {
        if (!live) return;
        setData(d);
        setError(null);
        if (pollMs && poll?.(d)) timer = setTimeout(() => setTick((t) => t + 1), pollMs);
      })
      .catch((e: Error) => live && setError(e.message))
      .finally(() => live && setLoading(false));
    return () => {
      live = false;
      if (timer) clearTimeout(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, tick]);
  const refetch = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, loading, refetch };
}

const busy = (s: FeaturesStatus) => ["queued", "running"].includes(s.inspection?.status ?? "");

/** The run's inspection and whether it can be (re)queued; polls while it runs. */
export function useInspection(trainingId: number) {
  return useQuery(
    `inspection:${trainingId}`,
    () => call(api.GET("/api/v1/trainings/{training_id}/inspection", { params: { path: { training_id: trainingId } } })),
    1500,
    busy,
  );
}

/** One page of an SAE's latents; `version` changes when a label did (fetch again). */
export function useLatents(trainingId: number, query: LatentQuery, version = 0) {
  return useQuery(`latents:${trainingId}:${JSON.stringify(query)}:${version}`, () =>
    call(api.GET("/api/v1/trainings/{training_id}/features", { params: { path: { training_id: trainingId }, query } })),
  );
}

/** One latent's full record. */
export function useLatent(trainingId: number, sae: string | undefined, latent: number | null) {
  return useQuery(latent === null ? null : `latent:${trainingId}:${sae}:${latent}`, () =>
    call(
      api.GET("/api/v1/trainings/{training_id}/features/{latent}", {
        params: { path: { training_id: trainingId, latent: latent ?? 0 }, query: { sae } },
      }),
    ),
  );
}

// ---- mutations ---------------------------------------------------------------------------

export function saveLabel(trainingId: number, sae: string, latent: number, label: string, note: string) {
  return call(
    api.PUT("/api/v1/trainings/{training_id}/features/{latent}/label", {
      params: { path: { training_id: trainingId, latent }, query: { sae } },
      body: { label, note },
    }),
  );
}

export function clearLabel(trainingId: number, sae: string, latent: number) {
  return call(
    api.DELETE("/api/v1/trainings/{training_id}/features/{latent}/label", {
      params: { path: { training_id: trainingId, latent }, query: { sae } },
    }),
  );
}

export function queueInspection(trainingId: number) {
  return call(api.POST("/api/v1/trainings/{training_id}/inspection", { params: { path: { training_id: trainingId } }, body: {} }));
}

export function stopInspection(trainingId: number) {
  return call(
    api.POST("/api/v1/trainings/{training_id}/inspection/control", {
      params: { path: { training_id: trainingId } },
      body: { action: "stop" },
    }),
  );
}

export function searchPrompt(trainingId: number, sae: string, text: string) {
  return call(
    api.POST("/api/v1/trainings/{training_id}/features/search", {
      params: { path: { training_id: trainingId } },
      body: { text, sae, top: 8 },
    }),
  );
}
