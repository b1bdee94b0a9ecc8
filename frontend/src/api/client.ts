// Typed API client: paths and schemas come from src/api/schema.d.ts, which
// `npm run gen` generates from openapi.json (never edit either by hand).
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Training = Schemas["TrainingPublic"];
export type TrainingDetail = Schemas["TrainingDetail"];
export type ResolvedValue = Schemas["ResolvedValue"];
export type Dataset = Schemas["DatasetPublic"];
export type Checkpoint = Schemas["CheckpointPublic"];
export type Template = Schemas["TemplatePublic"];
export type Metric = Schemas["MetricPublic"];
export type Architecture = Schemas["ArchitectureInfo"];
export type Status = Training["status"];
export type TrainingPlan = Schemas["TrainingPlan"];
export type TrainConfigIn = Schemas["TrainConfig"];

export const TOKEN_KEY = "saestudio.token";

export const api = createClient<paths>({ baseUrl: "" });

api.use({
  onRequest({ request }) {
    const token = localStorage.getItem(TOKEN_KEY);
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
});

/** A failed request: a readable message, and per-field messages for 422s. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly fields: Record<string, string> = {},
  ) {
    super(message);
  }
}

interface ValidationItem {
  loc: (string | number)[];
  msg: string;
}

/** FastAPI's 422 `loc` → the form's dotted field path: ["body","config","sae","k"] → "sae.k". */
export function fieldPath(loc: (string | number)[]): string {
  const parts = loc.map(String);
  const start = parts[0] === "body" ? 1 : 0;
  const rest = parts.slice(start);
  return (rest[0] === "config" ? rest.slice(1) : rest).join(".");
}

/** The message a user reads for an error body (`detail` string or 422 list). */
export function describeError(status: number, body: unknown): ApiError {
  const detail = (body as { detail?: unknown } | undefined)?.detail;
  if (Array.isArray(detail)) {
    const fields: Record<string, string> = {};
    for (const item of detail as ValidationItem[]) {
      const path = fieldPath(item.loc) || "request";
      const last = String(item.loc[item.loc.length - 1]);
      // the server's messages may lead with the field's own name: say it once
      fields[path] ??= item.msg.replace(/^Value error, /, "").replace(`${last}: `, "");
    }
    const summary = Object.entries(fields)
      .map(([k, v]) => `${k}: ${v}`)
      .join("; ");
    return new ApiError(summary || "invalid request", status, fields);
  }
  // a 401 means the token: say what to do about it, whatever the server's wording
  if (status === 401) {
    const had = typeof localStorage !== "undefined" && localStorage.getItem(TOKEN_KEY);
    const what = had ? "the saved access token was refused" : "this studio needs an access token";
    return new ApiError(`${what}: set SAESTUDIO_API_TOKEN's value with the key button (top right)`, status);
  }
  if (typeof detail === "string") return new ApiError(detail, status);
  return new ApiError(`request failed (HTTP ${status})`, status);
}

/** Unwrap an openapi-fetch result: the data, or an ApiError. */
export async function call<T>(
  promise: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  let result;
  try {
    result = await promise;
  } catch {
    throw new ApiError("the studio server is not reachable", 0);
  }
  if (!result.response.ok) throw describeError(result.response.status, result.error);
  return result.data as T;
}

/** URL of a WebSocket under /api/v1/ws (the token goes in the query: browsers cannot
 * set headers on WebSockets). */
export function wsUrl(path: string, params: Record<string, string | number> = {}): string {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]));
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) query.set("token", token);
  const qs = query.toString();
  return `${proto}//${location.host}/api/v1/ws${path}${qs ? `?${qs}` : ""}`;
}
