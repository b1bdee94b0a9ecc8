import { Download, Flag, Pause, Play, RotateCcw, Square, Trash2 } from "lucide-react";
import type { ReactNode } from "react";
import type { RunAction } from "../lib/actions";

/** The icon of each run action (cards and the run page). */
export const ACTION_ICONS: Record<RunAction, ReactNode> = {
  pause: <Pause className="h-4 w-4" />,
  resume: <Play className="h-4 w-4" />,
  stop: <Square className="h-4 w-4" />,
  stop_and_finalize: <Flag className="h-4 w-4" />,
  retry: <RotateCcw className="h-4 w-4" />,
  delete: <Trash2 className="h-4 w-4" />,
  download: <Download className="h-4 w-4" />,
};
