// Live updates over the API's WebSockets, reconnecting with back-off, written into the
// query cache (cache.ts) so every page reads one copy of each run. The training stream
// resumes with ?since_step=<last step seen>, so a dropped connection leaves no gap.
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef, useState } from "react";
import { addRows, applyCheckpoint, applyJobEvent, applyTrainingLive, type JobEvent, type MetricRow } from "./cache";
import { wsUrl } from "./client";
import { keys } from "./queries";

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

/** Every job's status and progress (``/ws/events``) into the cache: mounted once, for
 * the whole app. */
export function useJobEvents(): boolean {
  const qc = useQueryClient();
  return useSocket("/events", () => ({}), (msg: JobEvent) => applyJobEvent(qc, msg));
}

/** One run's metric lines (backlog, then live) as a cache entry, with its status and
 * checkpoint events folded into the run's own entries. */
export function useTrainingStream(id: number | null) {
  const qc = useQueryClient();
  const lastStep = useRef(-1);
  useEffect(() => {
    lastStep.current = -1;
    // the socket replays the backlog on connect: start the lines afresh
    if (id !== null) qc.setQueryData<MetricRow[]>(keys.stream(id), []);
  }, [id, qc]);
  const connected = useSocket(
    id === null ? null : `/trainings/${id}`,
    // a reconnect asks only for what it has not seen (lines at the last step may still
    // arrive for another SAE or kind: addRows de-duplicates them)
    () => ({ since_step: Math.max(lastStep.current - 1, -1) }),
    (msg) => {
      if (id === null) return;
      if (msg.type === "metrics") {
        for (const r of msg.rows as MetricRow[]) lastStep.current = Math.max(lastStep.current, r.step);
        qc.setQueryData<MetricRow[]>(keys.stream(id), (prev) => addRows(prev, msg.rows));
      } else if (msg.type === "status") {
        applyTrainingLive(qc, id, msg);
      } else if (msg.type === "checkpoint") {
        applyCheckpoint(qc, id);
      }
    },
  );
  const rows = useQuery({
    queryKey: keys.stream(id ?? -1),
    queryFn: () => qc.getQueryData<MetricRow[]>(keys.stream(id ?? -1)) ?? [],
    enabled: false, // the socket fills it
    initialData: [],
  }).data;
  return { rows, connected };
}
