import { Play } from "lucide-react";
import { AdvancedPanel, ArchitecturePanel, DataPanel } from "../components/training-form/FormPanels";
import { EstimatePanel, TemplatesPanel } from "../components/training-form/SidePanels";
import { useTrainingForm } from "../components/training-form/useTrainingForm";
import { Button, ErrorBanner } from "../components/ui";

/** The new-training form: data, architecture and advanced fields on the left; the
 * server's estimate, templates and the start button on the right. */
export function NewTrainingPage() {
  const form = useTrainingForm();
  return (
    <form onSubmit={form.submit} noValidate className="grid gap-4 lg:grid-cols-[1fr_20rem]">
      <div className="min-w-0 space-y-4">
        <h1 className="text-xl font-semibold">New training</h1>
        <ErrorBanner message={form.message} onClose={form.clearMessage} />
        {form.state.notice && <p className="text-sm text-emerald-300">{form.state.notice}</p>}
        <DataPanel form={form} />
        <ArchitecturePanel form={form} />
        <AdvancedPanel form={form} />
      </div>
      <aside className="space-y-4 lg:pt-11">
        <EstimatePanel form={form} />
        <TemplatesPanel form={form} />
        <Button type="submit" tone="primary" className="w-full py-2" icon={<Play className="h-4 w-4" />} disabled={form.start.isPending}>
          {form.start.isPending ? "Starting…" : "Start training"}
        </Button>
      </aside>
    </form>
  );
}
