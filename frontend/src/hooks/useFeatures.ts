// Server state of the Features tab on the one TanStack Query cache, through the
// generated client: one query per resource (keys under the run's ["trainings", id]),
// and mutations that invalidate what they change.
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, call, type Schemas } from "../api/client";

export type FeaturesStatus = Schemas["FeaturesStatus"];
export type LatentPage = Schemas["LatentPage"];
export type LatentSummary = Schemas["LatentSummary"];
export type LatentRecord = Schemas["LatentRecord"];
export type Example = Schemas["Example"];
export type PromptResult = Schemas["PromptResult"];
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

export const featureKeys = {
  inspection: (id: number) => ["trainings", id, "inspection"] as const,
  /** Every latent query of a run (pages and records): what a label change invalidates. */
  latents: (id: number) => ["trainings", id, "features"] as const,
  page: (id: number, query: LatentQuery) => ["trainings", id, "features", "page", query] as const,
  latent: (id: number, sae: string, latent: number) => ["trainings", id, "features", "latent", sae, latent] as const,
};

/** A firing density as a percentage with two significant digits (0.012%, 3.4%). */
export function formatDensity(f: number): string {
  if (f <= 0) return "0";
  const pct = f * 100;
  return `${pct >= 10 ? pct.toFixed(0) : pct.toPrecision(2)}%`;
}

const busy = (s: FeaturesStatus | undefined) => ["queued", "running"].includes(s?.inspection?.status ?? "");

/** The run's inspection and whether it can be (re)queued; polled while it runs. */
export function useInspection(trainingId: number) {
  return useQuery({
    queryKey: featureKeys.inspection(trainingId),
    queryFn: () => call(api.GET("/api/v1/trainings/{training_id}/inspection", { params: { path: { training_id: trainingId } } })),
    refetchInterval: (q) => (busy(q.state.data) ? 1500 : false),
    staleTime: 0,
  });
}

/** One page of an SAE's latents (the previous page stays on screen while the next loads). */
export function useLatents(trainingId: number, query: LatentQuery) {
  return useQuery({
    queryKey: featureKeys.page(trainingId, query),
    queryFn: () => call(api.GET("/api/v1/trainings/{training_id}/features", { params: { path: { training_id: trainingId }, query } })),
    placeholderData: keepPreviousData,
  });
}

/** One latent's full record. */
export function useLatent(trainingId: number, sae: string, latent: number) {
  return useQuery({
    queryKey: featureKeys.latent(trainingId, sae, latent),
    queryFn: () =>
      call(api.GET("/api/v1/trainings/{training_id}/features/{latent}", { params: { path: { training_id: trainingId, latent }, query: { sae } } })),
  });
}

/** Save (label given) or clear (label null) a latent's label; the table and the record refetch. */
export function useLabel(trainingId: number, sae: string) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: ({ latent, label, note }: { latent: number; label: string | null; note: string }) => {
      const params = { path: { training_id: trainingId, latent }, query: { sae } };
      return label === null
        ? call(api.DELETE("/api/v1/trainings/{training_id}/features/{latent}/label", { params }))
        : call(api.PUT("/api/v1/trainings/{training_id}/features/{latent}/label", { params, body: { label, note } }));
    },
    onSuccess: () => client.invalidateQueries({ queryKey: featureKeys.latents(trainingId) }),
  });
}

/** Queue an inspection (again), or stop the running one. */
export function useInspectionAction(trainingId: number) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (action: "inspect" | "stop") => {
      const path = { training_id: trainingId };
      return action === "inspect"
        ? call(api.POST("/api/v1/trainings/{training_id}/inspection", { params: { path }, body: {} }))
        : call(api.POST("/api/v1/trainings/{training_id}/inspection/control", { params: { path }, body: { action: "stop" } }));
    },
    onSuccess: () => {
      void client.invalidateQueries({ queryKey: featureKeys.inspection(trainingId) });
      void client.invalidateQueries({ queryKey: featureKeys.latents(trainingId) });
    },
  });
}

/** Run a prompt through the run's model and SAE. */
export function usePromptSearch(trainingId: number, sae: string) {
  return useMutation({
    mutationFn: (text: string) =>
      call(api.POST("/api/v1/trainings/{training_id}/features/search", { params: { path: { training_id: trainingId } }, body: { text, sae, top: 8 } })),
  });
}
