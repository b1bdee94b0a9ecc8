"""A8 Matryoshka BatchTopK SAE (Bussmann et al. 2025, "Learning Multi-Level Features with
Matryoshka SAEs"; Nabeshima 2024).

BatchTopK whose loss adds the reconstruction error of every nested prefix of the latents:
with widths w_1 < … < w_L = d_sae, x̂_m = b_dec + Σ_{i < w_m} z_i·W_dec,i and
loss = Σ_m ‖x − x̂_m‖² (batch mean) — the same sum SAELens's
``MatryoshkaBatchTopKTrainingSAE`` minimises (outer level once, each inner level once).
The first latents must reconstruct on their own, so general features settle there and
specific ones in the later levels instead of absorbing the general ones.

Inference is BatchTopK's (one global threshold θ) and exports as SAELens ``jumprelu``,
as SAELens saves its own Matryoshka SAEs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saestudio.sae import sparse_ops
from saestudio.sae.base import LossOutput, LossSettings, mse_sum
from saestudio.sae.batchtopk import BatchTopKSAE
from saestudio.sae.config import SAEConfig, default_matryoshka_widths
from saestudio.sae.sparse_ops import Active, ColumnPlan
from saestudio.sae.topk import auxk_term, sparse_output


class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    """BatchTopK + nested prefix losses over ``cfg.matryoshka_widths``.

    The loss terms are ``mse`` (the full reconstruction, as every architecture) and
    ``mse_<w>`` for each inner prefix of width w; with ``matryoshka_aux_per_level`` the
    AuxK term is computed per level: the dead latents of level m reconstruct the residual
    of prefix m (SAELens ``use_matryoshka_aux_loss``), else it is BatchTopK's AuxK.

    The sparse training path (BatchTopK's) decodes all levels in one pass: its entries
    are row-major with ascending latent ids inside each row, so each row's entries of one
    level are contiguous and form one bag; the bag sums are the per-level increments, and
    their running sum over levels is every prefix reconstruction.
    """

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        widths = cfg.matryoshka_widths or default_matryoshka_widths(self.d_sae)
        self.widths: tuple[int, ...] = tuple(widths)
        self.level_of: Tensor  # [d_sae] the level of each latent (0 … L−1)
        bounds = torch.tensor(self.widths[:-1], dtype=torch.long)
        level = torch.bucketize(torch.arange(self.d_sae), bounds, right=True)
        self.register_buffer("level_of", level, persistent=False)

    # ---- the dense path (eval, compile, reference for the sparse one) ------------------------
    def prefix_reconstructions(self, z: Tensor) -> list[Tensor]:
        """x̂ of each inner prefix (all but the last level) ``[batch, d_out]`` each, dense z."""
        out: list[Tensor] = []
        acc: Tensor = self.b_dec
        prev = 0
        for w in self.widths[:-1]:
            acc = acc + z[:, prev:w] @ self.W_dec[prev:w]
            out.append(acc)
            prev = w
        return out

    def loss(self, x: Tensor, target: Tensor | None, settings: LossSettings) -> LossOutput:
        if not (self.training and torch.is_grad_enabled()) or torch.compiler.is_compiling():
            return self._dense_loss(x, x if target is None else target, settings)
        return self._sparse_loss(x, x if target is None else target, settings)

    def _dense_loss(self, x: Tensor, target: Tensor, settings: LossSettings) -> LossOutput:
        out = self(x)
        skip = self.skip_path(x)
        mse = mse_sum(target, out.x_hat)
        terms: dict[str, Tensor] = {"mse": mse}
        loss = mse
        for w, rec in zip(self.widths, self.prefix_reconstructions(out.z), strict=False):
            inner = mse_sum(target, rec if skip is None else rec + skip)
            terms[f"mse_{w}"] = inner
            loss = loss + inner
        if self._use_aux(settings):
            assert settings.dead_mask is not None
            if self.cfg.matryoshka_aux_per_level:
                outer = out.x_hat if skip is None else out.x_hat - skip
                prefixes = [*self.prefix_reconstructions(out.z), outer]
                auxk = self._dense_level_aux(target, out.pre_acts, prefixes, skip, settings)
            else:
                from saestudio.sae.topk import auxk_loss

                auxk = auxk_loss(self, target, out, settings)
            loss = loss + settings.aux_coefficient * auxk
            terms["auxk"] = auxk
        return LossOutput(loss, terms, out)

    def _dense_level_aux(
        self,
        target: Tensor,
        pre: Tensor,
        prefixes: list[Tensor],
        skip: Tensor | None,
        settings: LossSettings,
    ) -> Tensor:
        assert settings.dead_mask is not None
        total, prev = pre.new_zeros(()), 0
        for w, rec in zip(self.widths, prefixes, strict=True):
            dead = settings.dead_mask[prev:w]
            residual = (target - (rec if skip is None else rec + skip)).detach()
            masked = pre[:, prev:w].masked_fill(~dead, float("-inf"))
            k_aux = min(settings.aux_k, w - prev)
            values, idx = masked.topk(k_aux, dim=-1, sorted=False)
            recon = torch.zeros_like(masked).scatter_(-1, idx, values.relu()) @ self.W_dec[prev:w]
            total = total + self._aux_term(recon, residual, dead, settings)
            prev = w
        return total

    @staticmethod
    def _aux_term(recon: Tensor, residual: Tensor, dead: Tensor, settings: LossSettings) -> Tensor:
        """AuxK of one level, scale-free as BatchTopK's (error / residual variance) and
        weighted by min(dead / k_aux, 1) as SAELens weights its levels."""
        err = (recon.to(residual.dtype) - residual).pow(2).sum(dim=-1).mean()
        mean = settings.batch_mean or (lambda t: t.mean(0))
        var = mean((residual - mean(residual)).pow(2).sum(dim=-1)).clamp_min(1e-12)
        n_dead = dead.sum().to(err.dtype)
        scale = (n_dead / max(settings.aux_k, 1)).clamp(max=1.0)
        return torch.nan_to_num(err / var, nan=0.0) * scale

    def _use_aux(self, settings: LossSettings) -> bool:
        return (
            settings.dead_mask is not None and settings.aux_k > 0 and settings.aux_coefficient > 0
        )

    # ---- the sparse training path ------------------------------------------------------------
    def _sparse_loss(self, x: Tensor, target: Tensor, settings: LossSettings) -> LossOutput:
        """Same value and gradients as :meth:`_dense_loss` (tests/unit/test_matryoshka.py)."""
        n_levels = len(self.widths)
        per_level_aux = self._use_aux(settings) and self.cfg.matryoshka_aux_per_level
        plain_aux = self._use_aux(settings) and not per_level_aux
        enc_in = self.encoder_input(x)
        with torch.no_grad():
            if x.device.type == "cpu":  # reuse the buffer, as TopK does
                enc = enc_in.detach()
                pre = self.workspace("pre", (x.shape[0], self.d_sae), x)
                torch.addmm(self.b_enc.to(x.dtype), enc, self.W_enc.to(x.dtype), out=pre)
            else:
                pre = self.pre_activations(x)
            main, main_raw = self._select(pre)
            aux = None
            if plain_aux:
                from saestudio.sae.topk import _aux_selection

                assert settings.dead_mask is not None
                aux = _aux_selection(pre, settings.dead_mask, settings.aux_k)
            level_aux = self._level_aux_selection(pre, settings) if per_level_aux else []
            del pre
            main_plan = sparse_ops.column_plan(main, self.d_sae)
            # bags = (row, level): entry e goes to bag row_e·L + level(col_e)
            bag_of = main.rows * n_levels + self.level_of[main.cols]
            counts = torch.bincount(bag_of, minlength=main.batch * n_levels)
            bags = Active(bag_of, main.cols, counts.cumsum(0).sub_(counts), main.batch * n_levels)
            bag_plan = ColumnPlan(main_plan.order, bag_of[main_plan.order], main_plan.offsets)
        main_pre = sparse_ops.gather_preacts(
            enc_in, self.W_enc, self.b_enc, main, main_plan, main_raw
        )
        values = main_pre.relu()
        parts = sparse_ops.coo_decode(bags, bag_plan, values, self.W_dec).to(x.dtype)
        prefixes = parts.view(main.batch, n_levels, -1).cumsum(dim=1) + self.b_dec
        skip = self.skip_path(x)
        if skip is not None:
            prefixes = prefixes + skip.unsqueeze(1)
        x_hat = prefixes[:, -1]
        mse = mse_sum(target, x_hat)
        terms: dict[str, Tensor] = {"mse": mse}
        loss = mse
        for m, w in enumerate(self.widths[:-1]):
            inner = mse_sum(target, prefixes[:, m])
            terms[f"mse_{w}"] = inner
            loss = loss + inner
        if plain_aux or per_level_aux:
            auxk = x_hat.new_zeros(())
            selections = [(aux, None)] if plain_aux else level_aux
            for sel, dead in selections:
                if sel is None:
                    continue
                # per level: the residual of that level's prefix; else of the whole SAE
                rec = x_hat if dead is None else prefixes[:, dead[0]]
                active, raw = sel
                plan = sparse_ops.column_plan(active, self.d_sae)
                a_pre = sparse_ops.gather_preacts(enc_in, self.W_enc, self.b_enc, active, plan, raw)
                recon = sparse_ops.coo_decode(active, plan, a_pre.relu(), self.W_dec)
                residual = (target - rec).detach()
                if dead is None:  # BatchTopK's AuxK
                    term = auxk_term(recon, residual, settings)
                else:
                    term = self._aux_term(recon, residual, dead[1], settings)
                auxk = auxk + term
            loss = loss + settings.aux_coefficient * auxk
            terms["auxk"] = auxk
        return LossOutput(loss, terms, sparse_output(x_hat, main, values, main_pre, self.d_sae))

    def _level_aux_selection(
        self, pre: Tensor, settings: LossSettings
    ) -> list[tuple[tuple[Active, Tensor] | None, tuple[int, Tensor] | None]]:
        """Per level: the per-row top-k_aux dead latents of that level (masked top-k, no
        host sync), with the level index and its dead mask."""
        assert settings.dead_mask is not None
        out: list[tuple[tuple[Active, Tensor] | None, tuple[int, Tensor] | None]] = []
        prev = 0
        for m, w in enumerate(self.widths):
            dead = settings.dead_mask[prev:w]
            masked = pre[:, prev:w].masked_fill(~dead, float("-inf"))
            raw, idx = masked.topk(min(settings.aux_k, w - prev), dim=-1, sorted=False)
            sel = (sparse_ops.per_row(idx + prev), raw.reshape(-1))
            out.append((sel, (m, dead)))
            prev = w
        return out
