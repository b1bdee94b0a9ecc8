// The new-training form's state: one reducer for what the user typed, queries for what
// the server knows (architectures, datasets, templates, and /validate's plan for the
// current form), mutations for starting a run and saving a template.
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useMemo, useReducer, useRef, useState } from "react";
import { useNavigate, useSearchParams } from "react-router-dom";
import { ApiError, api, call, type Dataset, type Template, type TrainConfigIn } from "../../api/client";
import { architecturesQuery, datasetsQuery, keys, templatesQuery, type TrainingBody, validationQuery } from "../../api/queries";
import { contextFor, fromConfig, INITIAL, type Source, toConfig, validateForm, visibleFields } from "../../lib/trainingForm";

interface FormState {
  source: Source;
  datasetId: number | null;
  name: string;
  values: Record<string, string>;
  /** The user has edited a field or pressed start: field messages are shown from now on. */
  touched: boolean;
  notice: string | null;
}

type FormEvent =
  | { type: "set"; path: string; value: string }
  | { type: "name"; value: string }
  | { type: "source"; source: Source }
  | { type: "dataset"; dataset: Dataset }
  | { type: "template"; template: Template }
  | { type: "touch" }
  | { type: "notice"; notice: string | null };

function reduce(s: FormState, e: FormEvent): FormState {
  switch (e.type) {
    case "set":
      return { ...s, touched: true, values: { ...s.values, [e.path]: e.value } };
    case "name":
      return { ...s, name: e.value };
    case "source":
      return { ...s, source: e.source };
    case "dataset": {
      const hooks = (e.dataset.config.hooks as string[] | undefined) ?? [];
      return { ...s, datasetId: e.dataset.id, values: { ...s.values, hook: hooks[0] ?? s.values.hook } };
    }
    case "template": {
      const cfg = e.template.config as Record<string, unknown>;
      return { ...s, values: fromConfig(cfg), source: cfg.model ? "model" : s.source, notice: `Loaded template “${e.template.name}”.` };
    }
    case "touch":
      return { ...s, touched: true };
    case "notice":
      return { ...s, notice: e.notice };
  }
}

/** A value that follows `value` once it has stopped changing for `ms`. */
function useSettled<T>(value: T, ms: number): T {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = window.setTimeout(() => setSettled(value), ms);
    return () => window.clearTimeout(timer);
  }, [value, ms]);
  return settled;
}

export function useTrainingForm() {
  const qc = useQueryClient();
  const navigate = useNavigate();
  const [params] = useSearchParams();
  const archs = useQuery(architecturesQuery).data ?? [];
  const datasetsAll = useQuery(datasetsQuery);
  const templates = useQuery(templatesQuery);
  const [state, dispatch] = useReducer(reduce, { source: "dataset", datasetId: null, name: "", values: INITIAL, touched: false, notice: null });
  const datasets = useMemo(() => (datasetsAll.data ?? []).filter((x) => x.status !== "failed" && x.status !== "cancelled"), [datasetsAll.data]);

  // once the lists arrive: the first usable dataset, and the template named in the URL
  const started = useRef(false);
  useEffect(() => {
    if (started.current || !datasetsAll.data || !templates.data) return;
    started.current = true;
    const first = datasets.find((x) => x.status === "completed") ?? datasets[0];
    if (first) dispatch({ type: "dataset", dataset: first });
    else dispatch({ type: "source", source: "model" });
    const tpl = templates.data.find((x) => x.id === Number(params.get("template")));
    if (tpl) dispatch({ type: "template", template: tpl });
  }, [datasetsAll.data, templates.data, datasets, params]);

  const { source, values, datasetId } = state;
  const ctx = useMemo(() => contextFor(values, archs, source), [values, archs, source]);
  const dataset = datasets.find((d) => d.id === datasetId) ?? null;
  const datasetPath = dataset?.path ?? null;
  const local = useMemo(() => validateForm(values, ctx), [values, ctx]);
  const ready = Object.keys(local).length === 0 && (source === "model" || dataset !== null);
  // built only from a form that parses (toConfig applies the spec's rules and throws on
  // a bad field); the server validates it whole
  const body = useMemo<TrainingBody | null>(
    () =>
      ready
        ? {
            name: state.name.trim() || null,
            config: toConfig(values, ctx, source === "dataset" ? datasetPath : null) as TrainConfigIn,
            dataset_id: source === "dataset" ? datasetId : null,
          }
        : null,
    // the path, not the row: live progress of another extraction must not re-check
    [ready, state.name, values, ctx, source, datasetPath, datasetId],
  );

  // the server's check (the same as a submit's, plus the data's widths) as the user types
  const settled = useSettled(body, 350);
  const validation = useQuery({ ...validationQuery(body && settled), placeholderData: keepPreviousData });
  const checkErrors = validation.error instanceof ApiError && validation.error.status === 422 ? validation.error.fields : {};

  const start = useMutation({
    mutationFn: (b: TrainingBody) => call(api.POST("/api/v1/trainings", { body: b })),
    onSuccess: (run) => {
      void qc.invalidateQueries({ queryKey: keys.trainings, exact: true });
      navigate(`/runs/${run.id}`);
    },
  });
  const saveTemplate = useMutation({
    mutationFn: (name: string) =>
      call(api.POST("/api/v1/templates", { body: { name, config: toConfig(values, ctx, source === "dataset" ? datasetPath : null), favourite: false, description: "" } })),
    onSuccess: (t) => {
      qc.setQueryData<Template[]>(keys.templates, (prev) => [...(prev ?? []), t]);
      dispatch({ type: "notice", notice: `Saved template “${t.name}”.` });
    },
  });
  const [blocked, setBlocked] = useState<string | null>(null);

  function set(path: string, value: string) {
    dispatch({ type: "set", path, value });
    // a stale "fix the fields" or server message goes once the user edits
    setBlocked(null);
    start.reset();
  }

  function submit(e: React.FormEvent) {
    e.preventDefault();
    dispatch({ type: "touch" });
    const errs = { ...local };
    if (source === "dataset" && !dataset) errs.activations = "choose an activation dataset";
    if (Object.keys(errs).length) {
      setBlocked(`Fix ${Object.keys(errs).length === 1 ? "the field" : "the fields"} marked below.`);
      return; // nothing is sent
    }
    setBlocked(null);
    if (body) start.mutate(body);
  }

  function saveTemplateAs(name: string, onSaved: () => void) {
    if (!name) setBlocked("template name: required");
    else saveTemplate.mutate(name, { onSuccess: onSaved });
  }

  const startErrors = start.error instanceof ApiError ? start.error.fields : {};
  const shownLocal: Record<string, string> = state.touched ? { ...local } : {};
  if (state.touched && source === "dataset" && !dataset && blocked) shownLocal.activations = "choose an activation dataset";
  return {
    state,
    dispatch,
    set,
    submit,
    archs,
    datasets,
    dataset,
    templates: templates.data ?? [],
    ctx,
    fields: visibleFields(ctx),
    errors: { ...startErrors, ...checkErrors, ...shownLocal },
    // the plan of the form as it is now; a dimmed older one while the new one is checked
    plan: ready ? (validation.data ?? null) : null,
    planPending: ready && (validation.isPlaceholderData || settled !== body),
    message: blocked ?? start.error?.message ?? saveTemplate.error?.message ?? (datasetsAll.error ?? templates.error)?.message ?? null,
    clearMessage: () => {
      setBlocked(null);
      start.reset();
      saveTemplate.reset();
    },
    start,
    saveTemplateAs,
  };
}

export type TrainingForm = ReturnType<typeof useTrainingForm>;
