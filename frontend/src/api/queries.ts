// All server state goes through one TanStack Query cache over the typed client: each
// resource has a key and a query here, pages read them with useQuery, and the
// WebSocket streams (live.ts → cache.ts) write live changes into the same entries.
import { QueryClient, queryOptions } from "@tanstack/react-query";
import { api, call, type TrainConfigIn, type TrainingPlan } from "./client";

export const keys = {
  trainings: ["trainings"] as const,
  training: (id: number) => ["trainings", id] as const,
  checkpoints: (id: number) => ["trainings", id, "checkpoints"] as const,
  /** The run page's metric lines: filled by the run's WebSocket (backlog, then live). */
  stream: (id: number) => ["trainings", id, "stream"] as const,
  metrics: (id: number, kind: string) => ["trainings", id, "metrics", kind] as const,
  datasets: ["activation-datasets"] as const,
  templates: ["templates"] as const,
  architectures: ["architectures"] as const,
  validate: (body: unknown) => ["validate", body] as const,
};

export function newQueryClient(): QueryClient {
  return new QueryClient({
    defaultOptions: {
      // live updates come over the sockets; a refetch on focus would only repeat them
      queries: { staleTime: 30_000, refetchOnWindowFocus: false, retry: 1 },
    },
  });
}

export const trainingsQuery = queryOptions({
  queryKey: keys.trainings,
  queryFn: async () => (await call(api.GET("/api/v1/trainings", { params: { query: { limit: 500 } } }))).items,
});

export const trainingQuery = (id: number) =>
  queryOptions({
    queryKey: keys.training(id),
    queryFn: () => call(api.GET("/api/v1/trainings/{training_id}", { params: { path: { training_id: id } } })),
  });

export const checkpointsQuery = (id: number) =>
  queryOptions({
    queryKey: keys.checkpoints(id),
    queryFn: () => call(api.GET("/api/v1/trainings/{training_id}/checkpoints", { params: { path: { training_id: id } } })),
  });

export const metricsQuery = (id: number, kind: "train" | "eval" | "downstream") =>
  queryOptions({
    queryKey: keys.metrics(id, kind),
    queryFn: () =>
      call(api.GET("/api/v1/trainings/{training_id}/metrics", { params: { path: { training_id: id }, query: { kind: [kind] } } })),
  });

export const datasetsQuery = queryOptions({
  queryKey: keys.datasets,
  queryFn: async () => (await call(api.GET("/api/v1/activation-datasets", { params: { query: { limit: 200 } } }))).items,
});

export const templatesQuery = queryOptions({
  queryKey: keys.templates,
  queryFn: async () => (await call(api.GET("/api/v1/templates", { params: { query: { limit: 500 } } }))).items,
});

export const architecturesQuery = queryOptions({
  queryKey: keys.architectures,
  queryFn: () => call(api.GET("/api/v1/architectures")),
  staleTime: Infinity, // fixed by the server's version
});

export interface TrainingBody {
  name: string | null;
  config: TrainConfigIn;
  dataset_id: number | null;
}

export function postValidate(body: TrainingBody, signal?: AbortSignal): Promise<TrainingPlan> {
  return call(api.POST("/api/v1/trainings/validate", { body, signal }));
}

/** POST /trainings/validate for one form state. The key is the body itself, so an
 * answer always lands on the body it was asked for: an older, slower answer can never
 * replace the newer one on screen, and the abandoned request is aborted (`signal`). */
export const validationQuery = (body: TrainingBody | null, validate = postValidate) =>
  queryOptions({
    queryKey: keys.validate(body),
    queryFn: ({ signal }) => validate(body!, signal),
    enabled: body !== null,
    retry: false,
    staleTime: 60_000,
  });
