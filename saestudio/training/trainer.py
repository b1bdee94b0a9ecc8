"""The training loop: flat, top to bottom, with small named helpers.

``Trainer(cfg).fit()`` trains the SAE(s) a config describes — one, or one per hook ×
sweep value from a single activation stream — reports through
:class:`TrainerCallback`, checkpoints, and exports each result in the SAELens format.
``resume=`` continues from checkpoints exactly.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from saestudio.training import checkpoint as ckpt
from saestudio.training.callbacks import TrainerCallback
from saestudio.training.config import TrainConfig
from saestudio.training.distributed import pick_device, setup
from saestudio.training.sae_run import SAERun, StepResult, TrainingDiverged
from saestudio.training.sources import TrainingSource, open_source, stream_names

log = logging.getLogger(__name__)

JOB_FILE = "job.json"

__all__ = ["TrainResult", "Trainer", "TrainingDiverged", "pick_device", "train"]


class TrainResult(NamedTuple):
    status: str  # completed | paused | stopped
    step: int
    metrics: dict[str, Any]  # last training metrics line (first SAE)
    eval: dict[str, Any]  # last held-out evaluation (first SAE)
    sae_path: Path | None  # SAELens export of the first SAE (completed runs)
    checkpoint: Path | None  # last checkpoint of the first SAE
    saes: dict[str, Path | None] = {}  # every SAE's export folder, by label


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        callbacks: Sequence[TrainerCallback] = (),
        resume: str | Path | None = None,
    ):
        self.cfg = cfg
        self.callbacks = list(callbacks)
        # under torchrun: this rank's device and process group (data parallel, see
        # saestudio.training.distributed); otherwise one process and cfg.device
        self.dist, self.device = setup(cfg.device)
        self.dist.check_batch(cfg.batch_size, cfg.grad_accum_steps)
        jobs = cfg.sae_jobs()
        names = [stream_names(c) for _, c in jobs]
        needed = list(dict.fromkeys(n for pair in names for n in pair if n))
        self.source: TrainingSource = open_source(cfg, needed, self.device, self.dist)
        self.runs = [
            SAERun(label, c, n, self.source.widths, self.device, self.dist)
            for (label, c), n in zip(jobs, names, strict=True)
        ]
        self.steps = self.runs[0].hp.steps
        for run in self.runs:
            # every rank reads the same deterministic sample: the same factors everywhere
            sample_out = self.source.sample_rows(run.target_name) if run.target_name else None
            run.set_scales(self.source.sample_rows(run.input_name), sample_out)
            self.dist.broadcast_module(run.sae)  # identical replicas (same seed anyway)
        self.step = 0
        self._eval_rows: dict[str, torch.Tensor] | None = None
        if resume is not None:
            self._restore(Path(resume))

    @property
    def sae(self) -> Any:
        """The (first) SAE module being trained."""
        return self.runs[0].sae

    # ---- helpers ----------------------------------------------------------------------------
    def eval_rows(self) -> dict[str, torch.Tensor]:
        if self._eval_rows is None:
            self._eval_rows = self.source.eval_rows()
        return self._eval_rows

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): the one that writes metrics and checkpoints."""
        return self.dist.is_main

    def _emit(self, run: SAERun, line: dict[str, Any]) -> None:
        if not self.is_main:
            return
        # wall-clock time of the line (Unix seconds), as W&B's _timestamp: charts against
        # time, and the studio's live-latency check measures from it
        line["time"] = round(time.time(), 3)
        run.metrics_file.on_metrics(self.step, line)
        for cb in self.callbacks:
            cb.on_metrics(self.step, line)

    def save_checkpoint(self) -> list[Path]:
        for run in self.runs:
            run.check_finite(self.step)  # before any run writes: all or none
        paths: list[Path] = []
        if not self.is_main:  # rank 0 writes; the other ranks hold the same state
            return paths
        for run in self.runs:
            path, best = run.save_checkpoint(self.step, self.eval_rows())
            paths.append(path)
            for cb in self.callbacks:
                cb.on_checkpoint(self.step, path, best)
        return paths

    def _restore(self, resume: Path) -> None:
        """Resume every SAE from its latest checkpoint at a step they all reached."""
        if len(self.runs) == 1:
            found = [ckpt.load_checkpoint(resume)]
        else:
            roots = [resume / run.label / "checkpoints" for run in self.runs]
            step = ckpt.latest_common_step(roots)
            if step is None:
                raise FileNotFoundError(f"resume: no step that every SAE reached in {resume}")
            found = [ckpt.load_checkpoint(ckpt.step_dir(root, step)) for root in roots]
        steps = {run.restore(c) for run, c in zip(self.runs, found, strict=True)}
        self.step = steps.pop()
        self.dist.barrier()  # every rank has read its files before rank 0 prunes
        if self.is_main:  # a resume from an older checkpoint supersedes the newer ones
            for run in self.runs:
                ckpt.drop_after(run.ckpt_root, self.step)

    def _control(self) -> str | None:
        request = None
        if any(cb.should_stop() for cb in self.callbacks):
            request = "stopped"
        elif any(cb.should_pause() for cb in self.callbacks):
            request = "paused"
        return self.dist.control(request)  # all ranks stop at the same step

    def _after_step(self, results: list[StepResult], t0: float, rows: int) -> tuple[float, int]:
        cfg, step = self.cfg, self.step
        last = step == self.steps
        if step % cfg.log_every == 0 or last:
            elapsed = time.perf_counter() - t0
            for run, r in zip(self.runs, results, strict=True):
                run.check_finite(step)
                self._emit(run, run.metrics_line(step, r, elapsed, rows))
            t0, rows = time.perf_counter(), 0
        if step % cfg.density_every == 0 or last:
            for run in self.runs:
                self._emit(run, run.density_line(step))
        if step % cfg.eval_every == 0 and not last and self.is_main:
            for run in self.runs:
                self._emit(run, {"step": step, "sae": run.label, **run.evaluate(self.eval_rows())})
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and not last:
            self.save_checkpoint()
        return t0, rows

    def _downstream(self, exports: dict[str, Path | None]) -> None:
        """CE loss recovered / KL with each SAE spliced in, when a causal LM is named."""
        from saestudio.training.downstream_report import downstream_lines

        for run, line in downstream_lines(self.cfg, self.runs, exports, self.source, self.step):
            extra = {k: v for k, v in line.items() if k not in ("step", "sae")}
            run.last_eval = {**run.last_eval, **extra}
            self._emit(run, line)

    # ---- the loop -----------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        out = Path(self.cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            # the whole job's config: what `saestudio train --resume OUT` starts from
            (out / JOB_FILE).write_text(json.dumps(self.cfg.model_dump(mode="json"), indent=1))
            for run in self.runs:
                run.metrics_file.on_start(
                    step=self.step, total_steps=self.steps, resolved=run.hp.to_json()
                )
        for cb in self.callbacks:
            cb.on_start(step=self.step, total_steps=self.steps, resolved=self.runs[0].hp.to_json())
        status = "completed"
        batches = self.source.batches(self.step)
        try:
            t0, rows = time.perf_counter(), 0
            while self.step < self.steps:
                batch = self.dist.shard(next(batches), self.cfg.grad_accum_steps)
                results = [run.train_step(self.step, *run.prepare(batch)) for run in self.runs]
                self.step += 1
                rows += len(next(iter(batch.values()))) * self.dist.world_size
                for cb in self.callbacks:
                    cb.on_step(self.step)  # every rank: control callbacks count steps
                t0, rows = self._after_step(results, t0, rows)
                control = self._control() if self.step < self.steps else None
                if control:
                    status = control
                    break
            self.save_checkpoint()
            if status == "completed" and self.is_main:
                for run in self.runs:
                    self._emit(run, {"step": self.step, "sae": run.label, **run.last_eval})
        except BaseException:
            for cb in self.callbacks:
                cb.on_end("failed", self.step)
            raise
        finally:
            batches.close()  # type: ignore[attr-defined]
            self.source.close()
        done = status == "completed" and self.is_main
        exports = {r.label: r.export(self.step) if done else None for r in self.runs}
        if done:
            self._downstream(exports)
        self.dist.barrier()  # rank 0's exports exist when any rank returns
        for cb in self.callbacks:
            cb.on_end(status, self.step)
        first = self.runs[0]
        return TrainResult(
            status,
            self.step,
            first.last_metrics,
            first.last_eval,
            exports[first.label],
            first.last_checkpoint,
            exports,
        )


def train(
    cfg: TrainConfig,
    callbacks: Sequence[TrainerCallback] = (),
    resume: str | Path | None = None,
) -> TrainResult:
    """Train (or resume) the SAE(s) a config describes; see :class:`Trainer`."""
    return Trainer(cfg, callbacks, resume).fit()
