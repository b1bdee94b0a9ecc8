"""The training loop: flat, top to bottom, with small named helpers.

``Trainer(cfg).fit()`` trains one SAE (or transcoder) on an activation file or folder,
reports through :class:`TrainerCallback`, checkpoints, and exports the result in the
SAELens format. ``resume=`` continues a checkpoint exactly.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from saestudio.activations.buffer import Batch, ShuffledStream
from saestudio.activations.store import ArrayDataset, DataError
from saestudio.sae.base import LossSettings, SparseAutoencoder
from saestudio.sae.registry import build_sae
from saestudio.sae.saelens_format import save_saelens
from saestudio.training import checkpoint as ckpt
from saestudio.training.callbacks import MetricsFile, TrainerCallback
from saestudio.training.config import Resolved, TrainConfig, resolve
from saestudio.training.metrics import density_histogram, log_sparsity, reconstruction_metrics
from saestudio.training.schedules import lr_at, sparsity_at

log = logging.getLogger(__name__)

NORM_SAMPLE_BLOCKS = 16


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


class TrainResult(NamedTuple):
    status: str  # completed | paused | stopped
    step: int
    metrics: dict[str, Any]  # last training metrics line
    eval: dict[str, Any]  # last held-out evaluation
    sae_path: Path | None  # SAELens export (completed runs)
    checkpoint: Path | None  # last checkpoint written


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA was asked for but is not available")
    return dev


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        callbacks: Sequence[TrainerCallback] = (),
        resume: str | Path | None = None,
    ):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.ckpt_root = self.out / "checkpoints"
        self.callbacks = [MetricsFile(self.out / "metrics.jsonl"), *callbacks]
        self.device = pick_device(cfg.device)
        self._open_data()
        self.hp: Resolved = resolve(
            cfg, self.inputs.width, self.targets.width if self.targets else None
        )
        torch.manual_seed(cfg.seed)
        self.sae: SparseAutoencoder = build_sae(self.hp.sae).to(self.device)
        self.optimizer = self._make_optimizer()
        self.step = 0
        self.scale_in, self.scale_out = self._estimate_scales()
        d_sae = self.sae.d_sae
        self.since_fired = torch.zeros(d_sae, dtype=torch.long, device=self.device)
        self.fire_window = torch.zeros(d_sae, dtype=torch.long, device=self.device)
        self.fire_total = torch.zeros(d_sae, dtype=torch.long, device=self.device)
        self.tokens_window = 0
        self.last_eval: dict[str, Any] = {}
        self.last_metrics: dict[str, Any] = {}
        self.last_checkpoint: Path | None = None
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        self._amp_dtype = self._autocast_dtype()
        self._scaler = torch.amp.GradScaler("cuda", enabled=self._amp_dtype == torch.float16)
        use_compile = cfg.compile if cfg.compile is not None else self.device.type == "cuda"
        self._loss_fn = torch.compile(self.sae.loss) if use_compile else self.sae.loss
        if resume is not None:
            self._restore(ckpt.load_checkpoint(resume))

    # ---- setup ----------------------------------------------------------------------------
    def _open_data(self) -> None:
        cfg = self.cfg
        self.inputs = ArrayDataset(cfg.activations, "activations")
        self.targets = ArrayDataset(cfg.targets, "targets") if cfg.targets else None
        if self.targets is not None and len(self.targets) != len(self.inputs):
            raise DataError(
                f"targets: {len(self.targets)} rows but activations have {len(self.inputs)}; "
                "transcoder pairs must line up row by row"
            )
        rows = len(self.inputs)
        self.n_eval = min(cfg.eval_tokens, rows // 10)
        self.n_train = rows - self.n_eval
        if self.n_train < 1:
            raise DataError(f"activations: {cfg.activations} has too few rows ({rows})")

    def _make_optimizer(self) -> torch.optim.Optimizer:
        hp, cfg = self.hp, self.cfg
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return opt_cls(
            self.sae.parameters(),
            lr=hp.lr,
            betas=(hp.adam_beta1, hp.adam_beta2),
            eps=hp.adam_eps,
            weight_decay=cfg.weight_decay,
        )

    def _autocast_dtype(self) -> torch.dtype | None:
        if self.device.type != "cuda" or self.cfg.autocast == "none":
            return None  # fp32 on CPU: bf16 matmuls there are slower, not faster
        return torch.float16 if self.cfg.autocast == "fp16" else torch.bfloat16

    def _sample_rows(self, data: ArrayDataset) -> torch.Tensor:
        """Evenly spaced blocks of training rows: a deterministic sample for statistics."""
        block = min(1024, self.n_train)
        starts = torch.linspace(0, self.n_train - block, NORM_SAMPLE_BLOCKS).long().unique()
        return torch.cat([data.read(int(s), int(s) + block) for s in starts])

    def _estimate_scales(self) -> tuple[float, float]:
        """Input/target scale factors for the dataset-wide normalisations (1 otherwise)."""
        mode = self.hp.normalize_activations

        def scale(data: ArrayDataset) -> float:
            sample = self._sample_rows(data)
            if mode == "expected_average_only_in":  # E‖x‖ = √d (SAELens, Anthropic)
                return math.sqrt(data.width) / float(sample.norm(dim=1).mean().clamp_min(1e-12))
            if mode == "unit_mean_squared_norm":  # E‖x‖² = 1 (Gemma Scope)
                return 1.0 / math.sqrt(float(sample.pow(2).sum(1).mean().clamp_min(1e-24)))
            return 1.0

        s_in = scale(self.inputs)
        return s_in, scale(self.targets) if self.targets is not None else s_in

    def _prepare(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Move a batch to the device and apply the normalisation."""
        nb = self.device.type == "cuda"
        x = batch.x.to(self.device, non_blocking=nb)
        y = None if batch.target is None else batch.target.to(self.device, non_blocking=nb)
        if self.hp.normalize_activations == "constant_norm_rescale":
            coeff = math.sqrt(x.shape[1]) / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
            return x * coeff, None if y is None else y * coeff
        if self.scale_in != 1.0 or self.scale_out != 1.0:
            x = x * self.scale_in
            y = None if y is None else y * self.scale_out
        return x, y

    # ---- one step ---------------------------------------------------------------------------
    def _settings(self, lam: float) -> LossSettings:
        return LossSettings(
            sparsity_coefficient=lam,
            l0_target=self.cfg.l0_target,
            dead_mask=self.since_fired >= self.hp.dead_after_tokens,
            aux_k=self.hp.aux_k,
            aux_coefficient=self.cfg.aux_k_coefficient,
        )

    def _train_step(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Forward/backward over the micro-batches, clip, step, apply constraints."""
        step = self.step
        lr = lr_at(
            step,
            lr=self.hp.lr,
            total_steps=self.hp.steps,
            schedule=self.cfg.lr_schedule,
            warmup_steps=self.cfg.lr_warmup_steps,
            decay_steps=self.hp.lr_decay_steps,
            min_lr_ratio=self.cfg.min_lr_ratio,
        )
        lam = sparsity_at(
            step,
            coefficient=self.hp.sparsity_coefficient,
            warmup_steps=self.hp.sparsity_warmup_steps,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        settings = self._settings(lam)
        self.optimizer.zero_grad(set_to_none=True)
        n_micro = self.cfg.grad_accum_steps
        fired = torch.zeros_like(self.since_fired, dtype=torch.bool)
        ys = y.chunk(n_micro) if y is not None else (None,) * n_micro
        for xm, ym in zip(x.chunk(n_micro), ys, strict=True):
            with torch.autocast(
                self.device.type,
                dtype=self._amp_dtype or torch.float32,
                enabled=self._amp_dtype is not None,
            ):
                out = self._loss_fn(xm, ym, settings)
            self._scaler.scale(out.loss / n_micro).backward()
            active = out.out.z.detach() != 0
            fired |= active.any(0)
            self.fire_window += active.sum(0)
        self._nonfinite |= ~torch.isfinite(out.loss.detach())
        self._scaler.unscale_(self.optimizer)
        self.sae.remove_parallel_decoder_grad()
        grad_norm = self._clip_grads()
        self._scaler.step(self.optimizer)
        self._scaler.update()
        self.sae.after_optimizer_step()
        self._update_dead(fired, len(x))
        return {"out": out, "grad_norm": grad_norm, "lr": lr, "lam": lam, "x": xm, "y": ym}  # type: ignore[dict-item]

    def _clip_grads(self) -> torch.Tensor:
        params = [p for p in self.sae.parameters() if p.grad is not None]
        max_norm = self.cfg.grad_clip_norm or float("inf")
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def _update_dead(self, fired: torch.Tensor, rows: int) -> None:
        self.since_fired += rows
        self.since_fired.masked_fill_(fired, 0)
        self.tokens_window += rows

    # ---- logging and evaluation ---------------------------------------------------------------
    def _metrics_line(self, r: dict[str, Any], elapsed: float, rows: int) -> dict[str, Any]:
        out = r["out"]
        target = r["y"] if r["y"] is not None else r["x"]
        m = {k: float(v.detach()) for k, v in out.terms.items()}
        m.update(
            {
                k: float(v)
                for k, v in reconstruction_metrics(
                    target, out.out.x_hat.detach(), out.out.z.detach()
                ).items()
            }
        )
        dead = int((self.since_fired >= self.hp.dead_after_tokens).sum())
        m.update(
            loss=float(out.loss.detach()),
            grad_norm=float(r["grad_norm"]),
            lr=r["lr"],
            sparsity_coefficient=r["lam"],
            dead_latents=dead,
            dead_fraction=dead / self.sae.d_sae,
            tokens_per_s=rows / max(elapsed, 1e-9),
        )
        return {"step": self.step, "tokens": self.step * self.cfg.batch_size, **m}

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Held-out metrics; ``eval_loss`` uses the full λ, so it ranks checkpoints fairly."""
        if self.n_eval == 0:
            return {}
        x, y = self._prepare(
            Batch(
                self.inputs.read(self.n_train, self.n_train + self.n_eval),
                self.targets.read(self.n_train, self.n_train + self.n_eval)
                if self.targets
                else None,
            )
        )
        self.sae.eval()
        try:
            settings = LossSettings(self.hp.sparsity_coefficient, l0_target=self.cfg.l0_target)
            res = self.sae.loss(x, y, settings)
        finally:
            self.sae.train()
        target = y if y is not None else x
        met = reconstruction_metrics(target, res.out.x_hat, res.out.z)
        line = {f"eval_{k}": float(v) for k, v in met.items()}
        line["eval_loss"] = float(res.loss.detach())
        return line

    def _emit(self, line: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_metrics(self.step, line)

    def _emit_density(self) -> None:
        hist = density_histogram(self.fire_window, self.tokens_window)
        self.fire_total += self.fire_window
        self.fire_window.zero_()
        self.tokens_window = 0
        self._emit({"step": self.step, "feature_density": hist})

    # ---- checkpoints ---------------------------------------------------------------------------
    def _check_finite(self) -> None:
        if bool(self._nonfinite):
            last = self.last_checkpoint or "none (no checkpoint was written yet)"
            raise TrainingDiverged(
                f"loss became NaN/Inf by step {self.step}; stopped. Last good checkpoint: {last}. "
                "Lower lr or check the data."
            )

    def save_checkpoint(self) -> Path:
        self._check_finite()
        ev = self.evaluate()
        self.last_eval = ev
        tensors = {
            "since_fired": self.since_fired,
            "fire_window": self.fire_window,
            "fire_total": self.fire_total,
            "torch_rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            tensors["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        state = {
            "step": self.step,
            "tokens_window": self.tokens_window,
            "data_position": self.step * self.cfg.batch_size,
            "config": self.cfg.model_dump(mode="json"),
            "resolved": self.hp.to_json(),
            "scale_in": self.scale_in,
            "scale_out": self.scale_out,
            "eval_loss": ev.get("eval_loss"),
            "eval": ev,
        }
        path = ckpt.save_checkpoint(
            self.ckpt_root,
            self.step,
            sae_state=self.sae.state_dict(),
            optimizer_state=self.optimizer.state_dict(),
            tensors=tensors,
            state=state,
        )
        is_best = ev.get("eval_loss") is not None and ckpt.update_best(
            self.ckpt_root, self.step, ev["eval_loss"]
        )
        ckpt.prune(self.ckpt_root, self.cfg.keep_checkpoints)
        self.last_checkpoint = path
        for cb in self.callbacks:
            cb.on_checkpoint(self.step, path, is_best)
        return path

    def _restore(self, c: ckpt.Checkpoint) -> None:
        if c.state["resolved"]["sae"] != self.hp.sae.model_dump():
            raise ValueError(f"resume: checkpoint {c.path} holds a different architecture")
        self.sae.load_state_dict(c.sae)
        self.optimizer.load_state_dict(c.optimizer)
        self.step = int(c.state["step"])
        self.tokens_window = int(c.state["tokens_window"])
        self.scale_in, self.scale_out = c.state["scale_in"], c.state["scale_out"]
        for name in ("since_fired", "fire_window", "fire_total"):
            getattr(self, name).copy_(c.tensors[name])
        torch.set_rng_state(c.tensors["torch_rng"])
        if "cuda_rng" in c.tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(c.tensors["cuda_rng"], self.device)
        self.last_eval = c.state.get("eval", {})
        self.last_checkpoint = c.path
        ckpt.drop_after(self.ckpt_root, self.step)

    # ---- export ------------------------------------------------------------------------------
    def export(self, path: Path | None = None) -> Path:
        """Write the SAE in the SAELens format, with dataset-wide scaling folded in."""
        return export_sae(
            self.sae,
            path or self.out,
            cfg=self.cfg,
            normalize=self.hp.normalize_activations,
            scale_in=self.scale_in,
            scale_out=self.scale_out,
            fire_counts=self.fire_total + self.fire_window,
            step=self.step,
        )

    # ---- the loop -----------------------------------------------------------------------------
    def _batches(self) -> Iterator[Batch]:
        stream = ShuffledStream(
            self.inputs,
            self.targets,
            self.n_train,
            self.cfg.batch_size,
            self.cfg.seed,
            self.cfg.shuffle_block_rows,
            self.cfg.shuffle_buffer_rows,
        )
        it = stream.iterate(start_batch=self.step)
        try:
            yield from it
        finally:
            it.close()

    def _control(self) -> str | None:
        if any(cb.should_stop() for cb in self.callbacks):
            return "stopped"
        if any(cb.should_pause() for cb in self.callbacks):
            return "paused"
        return None

    def _after_step(self, r: dict[str, Any], t0: float, rows: int) -> tuple[float, int]:
        cfg, step = self.cfg, self.step
        last = step == self.hp.steps
        if step % cfg.log_every == 0 or last:
            self._check_finite()
            self.last_metrics = self._metrics_line(r, time.perf_counter() - t0, rows)
            self._emit(self.last_metrics)
            t0, rows = time.perf_counter(), 0
        if step % cfg.density_every == 0 or last:
            self._emit_density()
        if step % cfg.eval_every == 0 and not last:
            self._emit({"step": step, **self.evaluate()})
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and not last:
            self.save_checkpoint()
        return t0, rows

    def fit(self) -> TrainResult:
        for cb in self.callbacks:
            cb.on_start(step=self.step, total_steps=self.hp.steps, resolved=self.hp.to_json())
        self.sae.train()
        status = "completed"
        batches = self._batches()
        try:
            t0, rows = time.perf_counter(), 0
            while self.step < self.hp.steps:
                x, y = self._prepare(next(batches))
                r = self._train_step(x, y)
                self.step += 1
                rows += len(x)
                for cb in self.callbacks:
                    cb.on_step(self.step)
                t0, rows = self._after_step(r, t0, rows)
                control = self._control() if self.step < self.hp.steps else None
                if control:
                    status = control
                    break
            batches.close()  # type: ignore[attr-defined]
            self.save_checkpoint()
            if status == "completed":
                self._emit({"step": self.step, **self.last_eval})
        except BaseException:
            for cb in self.callbacks:
                cb.on_end("failed", self.step)
            raise
        finally:
            batches.close()  # type: ignore[attr-defined]
        sae_path = self.export() if status == "completed" else None
        for cb in self.callbacks:
            cb.on_end(status, self.step)
        return TrainResult(
            status, self.step, self.last_metrics, self.last_eval, sae_path, self.last_checkpoint
        )


def export_sae(
    sae: SparseAutoencoder,
    path: Path,
    *,
    cfg: TrainConfig,
    normalize: str,
    scale_in: float,
    scale_out: float,
    fire_counts: torch.Tensor,
    step: int,
) -> Path:
    """SAELens export of a trained SAE (used by the trainer and by ``saestudio export``)."""
    cpu = build_sae(sae.cfg)
    cpu.load_state_dict({k: v.detach().cpu() for k, v in sae.state_dict().items()})
    cpu.eval()
    if normalize in ("expected_average_only_in", "unit_mean_squared_norm"):
        cpu.fold_input_scaling(scale_in, scale_out)
    tokens = step * cfg.batch_size
    return save_saelens(
        cpu,
        path,
        model_name=cfg.model_name,
        hook_name=cfg.hook_name,
        hook_name_out=cfg.hook_name_out,
        normalize_activations="constant_norm_rescale"
        if normalize == "constant_norm_rescale"
        else "none",
        sparsity=log_sparsity(fire_counts, tokens) if tokens else None,
        extra_metadata={"training_steps": step, "training_tokens": tokens},
    )


def train(
    cfg: TrainConfig,
    callbacks: Sequence[TrainerCallback] = (),
    resume: str | Path | None = None,
) -> TrainResult:
    """Train (or resume) one SAE as configured; see :class:`Trainer`."""
    return Trainer(cfg, callbacks, resume).fit()
