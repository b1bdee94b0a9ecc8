// Live updates over the API's WebSockets, reconnecting with back-off. The training
// stream resumes with ?since_step=<last step seen>, so a dropped connection leaves no gap.
import { useEffect, useRef, useState } from "react";
import { wsUrl } from "./client";

function useSocket(path: string | null, params: () => Record<string, string | number>, onMessage: (m: any) => void) {
  const handler = useRef(onMessage);
  handler.current = onMessage;
  const paramsRef = useRef(params);
  paramsRef.current = params;
  const [connected, setConnected] = useState(false);
  useEffect(() => {
    if (path === null) return;
    let socket: WebSocket | null = null;
    let closed = false;
    let delay = 500;
    let timer: number | undefined;
    const open = () => {
      socket = new WebSocket(wsUrl(path, paramsRef.current()));
      socket.onopen = () => {
        delay = 500;
        setConnected(true);
      };
      socket.onmessage = (e) => handler.current(JSON.parse(e.data));
      socket.onclose = () => {
        setConnected(false);
        if (closed) return;
        timer = window.setTimeout(open, delay);
        delay = Math.min(delay * 2, 8000);
      };
    };
    open();
    return () => {
      closed = true;
      window.clearTimeout(timer);
      socket?.close();
    };
  }, [path]);
  return connected;
}

export interface JobSnapshot {
  type: "training" | "activation_dataset";
  id: number;
  name: string;
  status: string;
  control: string | null;
  progress: number;
  error: string | null;
  step?: number;
  total_steps?: number | null;
  eta_seconds?: number | null;
  latest_metrics?: Record<string, number> | null;
  contexts?: number;
  target_contexts?: number | null;
  rows?: number;
}

/** Every job's latest status / progress (``/ws/events``), keyed "training:3". */
export function useJobEvents(onChange?: (snap: JobSnapshot | { type: "deleted"; kind: string; id: number }) => void) {
  const [jobs, setJobs] = useState<Record<string, JobSnapshot>>({});
  const connected = useSocket("/events", () => ({}), (msg) => {
    onChange?.(msg);
    setJobs((prev) => {
      const next = { ...prev };
      if (msg.type === "deleted") delete next[`${msg.kind}:${msg.id}`];
      else next[`${msg.type}:${msg.id}`] = msg;
      return next;
    });
  });
  return { jobs, connected };
}

export interface MetricRow {
  step: number;
  sae: string;
  kind: string;
  metrics: Record<string, any>;
}

export interface StatusMessage {
  status: string;
  control: string | null;
  step: number;
  total_steps: number | null;
  progress: number;
  eta_seconds: number | null;
  error: string | null;
}

/** One run's metric lines (backlog, then live), status and checkpoint events. */
export function useTrainingStream(id: number | null) {
  const [rows, setRows] = useState<MetricRow[]>([]);
  const [status, setStatus] = useState<StatusMessage | null>(null);
  const [checkpointEvents, setCheckpointEvents] = useState(0);
  const lastStep = useRef(-1);
  useEffect(() => {
    setRows([]);
    setStatus(null);
    lastStep.current = -1;
  }, [id]);
  const connected = useSocket(
    id === null ? null : `/trainings/${id}`,
    // a reconnect asks only for what it has not seen (lines at the last step may still
    // arrive for another SAE or kind: they are de-duplicated below)
    () => ({ since_step: Math.max(lastStep.current - 1, -1) }),
    (msg) => {
      if (msg.type === "metrics") {
        setRows((prev) => {
          const seen = new Set(prev.map((r) => `${r.sae}|${r.kind}|${r.step}`));
          const fresh = (msg.rows as MetricRow[]).filter((r) => !seen.has(`${r.sae}|${r.kind}|${r.step}`));
          for (const r of fresh) lastStep.current = Math.max(lastStep.current, r.step);
          return fresh.length ? [...prev, ...fresh] : prev;
        });
      } else if (msg.type === "status") {
        setStatus(msg);
      } else if (msg.type === "checkpoint") {
        setCheckpointEvents((n) => n + 1);
      }
    },
  );
  return { rows, status, checkpointEvents, connected };
}
