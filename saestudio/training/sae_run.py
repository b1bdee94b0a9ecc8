"""One SAE inside a training job: its module, optimiser, counters, checkpoints and export.

A job trains one or many of these from the same batches (several hooks, or a sweep of
k / λ). Everything here depends only on this SAE's own config, so a run inside a job
and the same config trained alone produce the same SAE.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import torch

from saestudio.sae.base import LossOutput, LossSettings, SparseAutoencoder
from saestudio.sae.batchtopk import BatchTopKSAE
from saestudio.sae.registry import build_sae
from saestudio.sae.sparse_ops import fire_counts
from saestudio.training import checkpoint as ckpt
from saestudio.training.callbacks import MetricsFile
from saestudio.training.config import Resolved, TrainConfig, resolve
from saestudio.training.distributed import SINGLE, Dist
from saestudio.training.evaluation import MetricAccumulator, weight_metrics
from saestudio.training.export import export_sae
from saestudio.training.metrics import density_histogram
from saestudio.training.schedules import lr_at, sparsity_at


def _finite_rows(x: torch.Tensor) -> torch.Tensor:
    """The rows whose squared norm is finite (one corrupt row must not set a statistic)."""
    ok = torch.isfinite(x.pow(2).sum(1))
    return x[ok] if bool(ok.any()) else x


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


class StepResult(NamedTuple):
    out: LossOutput
    x: torch.Tensor  # last micro-batch input
    target: torch.Tensor  # last micro-batch target
    grad_norm: torch.Tensor
    lr: float
    lam: float


def autocast_dtype(device: torch.device, mode: str) -> torch.dtype | None:
    if device.type != "cuda" or mode == "none":
        return None  # fp32 on CPU: bf16 matmuls there are slower, not faster
    return torch.float16 if mode == "fp16" else torch.bfloat16


class SAERun:
    def __init__(
        self,
        label: str,
        cfg: TrainConfig,
        names: tuple[str, str | None],
        widths: dict[str, int],
        device: torch.device,
        dist: Dist = SINGLE,
    ):
        self.label, self.cfg, self.device = label, cfg, device
        self.dist = dist  # torchrun: batch statistics and gradients are reduced over ranks
        self.input_name, self.target_name = names
        d_out = widths[self.target_name] if self.target_name else None
        self.hp: Resolved = resolve(cfg, widths[self.input_name], d_out)
        self.out = Path(cfg.out)
        self.ckpt_root = self.out / "checkpoints"
        self.metrics_file = MetricsFile(self.out / "metrics.jsonl")
        torch.manual_seed(cfg.seed)  # same init as this config trained alone
        self.sae: SparseAutoencoder = build_sae(self.hp.sae).to(device)
        if dist.active and isinstance(self.sae, BatchTopKSAE):
            self.sae.batch_reduce = dist  # select the top k·batch over all ranks' rows
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(
            self.sae.parameters(),
            lr=self.hp.lr,
            betas=(self.hp.adam_beta1, self.hp.adam_beta2),
            eps=self.hp.adam_eps,
            weight_decay=cfg.weight_decay,
            # one fused kernel per parameter: ~6× faster than the per-op loop on CPU
            fused=device.type in ("cpu", "cuda"),
        )
        self.amp = autocast_dtype(device, cfg.autocast)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        use_compile = cfg.compile if cfg.compile is not None else device.type == "cuda"
        self.loss_fn = torch.compile(self.sae.loss) if use_compile else self.sae.loss
        d_sae = self.sae.d_sae
        self.since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.fire_window = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.fire_total = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.tokens_window = 0
        self.scale_in = self.scale_out = 1.0
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.last_eval: dict[str, Any] = {}
        self.last_metrics: dict[str, Any] = {}
        self.last_checkpoint: Path | None = None

    # ---- normalisation ---------------------------------------------------------------------
    def set_scales(self, sample_in: torch.Tensor, sample_out: torch.Tensor | None) -> None:
        """Dataset-wide scale factors from a sample (1 unless the mode needs them), and the
        biases started at the data's mean.

        The scale is measured on the centred rows x − E[x]: b_dec starts at the mean, so the
        SAE models the spread around it, and the sparsity penalty λ was calibrated (Anthropic:
        E‖x‖ = √d_in; Gemma Scope: E‖x‖² = 1) on activations whose size is their spread.
        Measured on raw rows, a large constant offset (residual streams often carry one)
        would shrink the spread by ‖E[x]‖/spread, and at the default λ every latent dies.
        For zero-mean data both definitions agree."""
        mode = self.hp.normalize_activations

        def scale(sample: torch.Tensor) -> float:
            if mode not in ("expected_average_only_in", "unit_mean_squared_norm"):
                return 1.0  # no copies of the sample for the modes without a scale
            sample = sample.float()
            centred = sample - _finite_rows(sample).mean(0)
            if mode == "expected_average_only_in":  # E‖x − x̄‖ = √d (SAELens, Anthropic)
                return math.sqrt(sample.shape[1]) / float(
                    _finite_rows(centred).norm(dim=1).mean().clamp_min(1e-12)
                )
            if mode == "unit_mean_squared_norm":  # E‖x − x̄‖² = 1 (Gemma Scope)
                sq = _finite_rows(centred).pow(2).sum(1).mean().clamp_min(1e-24)
                return 1.0 / math.sqrt(float(sq))
            return 1.0

        self.scale_in = scale(sample_in)
        self.scale_out = scale(sample_out) if sample_out is not None else self.scale_in
        if self.sae.init_biases_from_data:  # a resume overwrites these with the checkpoint's
            rows = {self.input_name: sample_in}
            if self.target_name and sample_out is not None:
                rows[self.target_name] = sample_out
            x, y = self.prepare(rows)
            y = x if y is None else y
            # a row whose squared norm overflows (one corrupt row in the data) must not set
            # the biases: the loss would be inf from step 1, not where the row is trained on
            ok = torch.isfinite(x.pow(2).sum(1)) & torch.isfinite(y.pow(2).sum(1))
            if bool(ok.any()):
                rows_ok = ok.nonzero().squeeze(1)  # [n_ok]: index once, no masked copies
                self.sae.init_biases_from_mean(x[rows_ok].mean(0), y[rows_ok].mean(0))
                # a [rows, d_sae] forward: a spread-out subsample keeps it small
                n = len(rows_ok)
                pick = rows_ok[torch.linspace(0, n - 1, min(n, 2048)).long()]
                self.sae.init_encoder_scale(x[pick], y[pick])

    def prepare(self, rows: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This SAE's input (and target) from a batch, normalised, on the device."""
        nb = self.device.type == "cuda"
        x = rows[self.input_name].to(self.device, non_blocking=nb)
        y = rows[self.target_name].to(self.device, non_blocking=nb) if self.target_name else None
        if self.hp.normalize_activations == "constant_norm_rescale":
            coeff = math.sqrt(x.shape[1]) / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
            return x * coeff, None if y is None else y * coeff
        if self.scale_in != 1.0:
            x = x * self.scale_in
        if y is not None and self.scale_out != 1.0:
            y = y * self.scale_out
        return x, y

    # ---- one optimiser step -----------------------------------------------------------------
    def train_step(self, step: int, x: torch.Tensor, y: torch.Tensor | None) -> StepResult:
        """Forward/backward over the micro-batches, clip, step, apply constraints."""
        cfg, hp = self.cfg, self.hp
        lr = lr_at(
            step,
            lr=hp.lr,
            total_steps=hp.steps,
            schedule=cfg.lr_schedule,
            warmup_steps=cfg.lr_warmup_steps,
            decay_steps=hp.lr_decay_steps,
            min_lr_ratio=cfg.min_lr_ratio,
        )
        lam = sparsity_at(
            step, coefficient=hp.sparsity_coefficient, warmup_steps=hp.sparsity_warmup_steps
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        settings = LossSettings(
            sparsity_coefficient=lam,
            l0_target=cfg.l0_target,
            dead_mask=self.since_fired >= hp.dead_after_tokens,
            aux_k=hp.aux_k,
            aux_coefficient=cfg.aux_k_coefficient,
            batch_mean=self.dist.batch_mean,
        )
        self.optimizer.zero_grad(set_to_none=True)
        n_micro = cfg.grad_accum_steps
        counts = torch.zeros_like(self.since_fired)  # [d_sae] rows each latent fired on
        ys = y.chunk(n_micro) if y is not None else (None,) * n_micro
        for xm, ym in zip(x.chunk(n_micro), ys, strict=True):
            with torch.autocast(
                self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None
            ):
                out = self.loss_fn(xm, ym, settings)
            self.scaler.scale(out.loss / n_micro).backward()
            counts += fire_counts(out.out.z.detach(), self.sae.d_sae)  # sparse z: no dense pass
        self.nonfinite |= ~torch.isfinite(out.loss.detach())
        counts, self.nonfinite = self.dist.reduce_step(counts, self.nonfinite)
        fired = counts > 0
        self.fire_window += counts
        self.dist.average_gradients(self.sae.parameters())
        self.scaler.unscale_(self.optimizer)
        self.sae.remove_parallel_decoder_grad()
        params = [p for p in self.sae.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm or float("inf"))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.sae.after_optimizer_step()
        rows = len(x) * self.dist.world_size  # the global batch
        self.since_fired += rows
        self.since_fired.masked_fill_(fired, 0)
        self.tokens_window += rows
        return StepResult(out, xm, xm if ym is None else ym, grad_norm, lr, lam)

    # ---- reporting ---------------------------------------------------------------------------
    def metrics_line(self, step: int, r: StepResult, elapsed: float, rows: int) -> dict[str, Any]:
        terms = self.dist.mean_terms({**r.out.terms, "loss": r.out.loss})
        m = {k: float(v.detach()) for k, v in terms.items() if k != "loss"}
        rec = self.dist.reconstruction_metrics(
            r.target, r.out.out.x_hat.detach(), r.out.out.z.detach()
        )
        m.update({k: float(v) for k, v in rec.items()})
        dead = int((self.since_fired >= self.hp.dead_after_tokens).sum())
        m.update(
            loss=float(terms["loss"].detach()),
            grad_norm=float(r.grad_norm),
            lr=r.lr,
            sparsity_coefficient=r.lam,
            dead_latents=dead,
            dead_fraction=dead / self.sae.d_sae,
            tokens_per_s=rows / max(elapsed, 1e-9),
        )
        self.last_metrics = {
            "step": step,
            "sae": self.label,
            "tokens": step * self.cfg.batch_size,
            **m,
        }
        return self.last_metrics

    @torch.no_grad()
    def evaluate(self, rows: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Held-out metrics; ``eval_loss`` uses the full λ, so it ranks checkpoints fairly."""
        if not rows or len(rows[self.input_name]) == 0:
            return {}
        x, y = self.prepare(rows)
        self.sae.eval()
        try:
            res = self.sae.loss(
                x, y, LossSettings(self.hp.sparsity_coefficient, l0_target=self.cfg.l0_target)
            )
        finally:
            self.sae.train()
        # the core metrics of saestudio.training.evaluation, from this same forward pass
        acc = MetricAccumulator(self.sae.d_sae)
        acc.add(x if y is None else y, res.out.x_hat, res.out.z)
        met = {**acc.result(), **weight_metrics(self.sae)}
        line = {f"eval_{k}": v for k, v in met.items()}
        line["eval_loss"] = float(res.loss.detach())
        return line

    def density_line(self, step: int) -> dict[str, Any]:
        hist = density_histogram(self.fire_window, self.tokens_window)
        self.fire_total += self.fire_window
        self.fire_window.zero_()
        self.tokens_window = 0
        return {"step": step, "sae": self.label, "feature_density": hist}

    # ---- checkpoints -----------------------------------------------------------------------
    def check_finite(self, step: int) -> None:
        if bool(self.nonfinite):
            last = self.last_checkpoint or "none (no checkpoint was written yet)"
            raise TrainingDiverged(
                f"loss became NaN/Inf by step {step}; stopped. Last good checkpoint: {last}. "
                "Lower lr or check the data."
            )

    def save_checkpoint(self, step: int, eval_rows: dict[str, torch.Tensor]) -> tuple[Path, bool]:
        self.check_finite(step)
        ev = self.last_eval = self.evaluate(eval_rows)
        tensors = {
            "since_fired": self.since_fired,
            "fire_window": self.fire_window,
            "fire_total": self.fire_total,
            "torch_rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            tensors["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        state = {
            "step": step,
            "label": self.label,
            "tokens_window": self.tokens_window,
            "data_position": step * self.cfg.batch_size,
            "config": self.cfg.model_dump(mode="json"),
            "resolved": self.hp.to_json(),
            "scale_in": self.scale_in,
            "scale_out": self.scale_out,
            "eval_loss": ev.get("eval_loss"),
            "eval": ev,
        }
        path = ckpt.save_checkpoint(
            self.ckpt_root,
            step,
            sae_state=self.sae.state_dict(),
            optimizer_state=self.optimizer.state_dict(),
            tensors=tensors,
            state=state,
        )
        best = ev.get("eval_loss") is not None and ckpt.update_best(
            self.ckpt_root, step, ev["eval_loss"]
        )
        ckpt.prune(self.ckpt_root, self.cfg.keep_checkpoints)
        self.last_checkpoint = path
        return path, best

    def restore(self, c: ckpt.Checkpoint) -> int:
        if c.state["resolved"]["sae"] != self.hp.sae.model_dump():
            raise ValueError(f"resume: checkpoint {c.path} holds a different architecture")
        self.sae.load_state_dict(c.sae)
        self.optimizer.load_state_dict(c.optimizer)
        self.tokens_window = int(c.state["tokens_window"])
        self.scale_in, self.scale_out = c.state["scale_in"], c.state["scale_out"]
        for name in ("since_fired", "fire_window", "fire_total"):
            getattr(self, name).copy_(c.tensors[name])
        torch.set_rng_state(c.tensors["torch_rng"])
        if "cuda_rng" in c.tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(c.tensors["cuda_rng"], self.device)
        self.last_eval = c.state.get("eval", {})
        self.last_checkpoint = c.path
        return int(c.state["step"])

    def export(self, step: int) -> Path:
        return export_sae(
            self.sae,
            self.out,
            cfg=self.cfg,
            normalize=self.hp.normalize_activations,
            scale_in=self.scale_in,
            scale_out=self.scale_out,
            fire_counts=self.fire_total + self.fire_window,
            step=step,
        )
