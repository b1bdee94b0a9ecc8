"""On-the-fly training data: activations straight from a model, no disk cache.

Text is tokenized and packed into contexts; contexts are grouped into windows of about
``shuffle_buffer_rows`` rows; each window runs through the model once (all hooks in one
pass, stopping after the last hooked layer), its rows are shuffled with a seeded
permutation and cut into batches. The first contexts are held out for evaluation.

Because the row count of a window follows from its token ids alone (special tokens
dropped or not), a resumed run can skip whole windows by tokenizing only, and re-enter
the stream at exactly the batch it stopped at: resume is exact here too.

Under torchrun each rank runs the model on its contiguous 1/W of every window's contexts
and the ranks all-gather the activations (a gloo group of their own, used only by the
reading thread), so every rank holds the window a single process would, and the model's
work is split W ways.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import islice

import numpy as np
import torch
import torch.distributed as tdist

from saestudio.activations.buffer import PrefetchIterator, RowStream
from saestudio.activations.hookpoints import capture, resolve_hook, run_captured
from saestudio.activations.text_data import (
    TextSource,
    iter_contexts,
    load_tokenizer,
    special_token_ids,
)
from saestudio.training.config import TrainConfig
from saestudio.training.distributed import SINGLE, Dist


class OnTheFlySource:
    """Rows for the named hooks, computed by the model as training consumes them."""

    def __init__(
        self,
        job: TrainConfig,
        names: list[str],
        device: torch.device | None = None,
        dist: Dist = SINGLE,
    ):
        from saestudio.activations.models import load_model

        assert job.model is not None and job.dataset is not None
        self.job = job
        if device is None:
            name = "cuda" if job.device == "auto" and torch.cuda.is_available() else job.device
            device = torch.device("cpu" if name == "auto" else name)
        self.device = device
        self.dist = dist
        # the window gathers run in the prefetch thread: a group apart from the trainer's
        self._group = tdist.new_group(backend="gloo") if dist.active else None
        self.model = load_model(job.model, job.model_dtype, str(self.device))
        self.tokenizer = load_tokenizer(job.model)
        self.hooks = [resolve_hook(self.model, n) for n in names]
        self.names = names
        self.special = special_token_ids(self.tokenizer) if job.exclude_special_tokens else []
        self.text = TextSource(job.dataset, text_column=job.text_column)
        self.n_eval_contexts = max(1, math.ceil(job.eval_tokens / job.context_length))
        self.window_contexts = max(1, job.shuffle_buffer_rows // job.context_length)
        held_out = list(islice(self._contexts(), self.n_eval_contexts))
        if not held_out:
            raise ValueError(f"dataset: {job.dataset} yields no {job.context_length}-token context")
        self._eval = self.activations(held_out)
        self.n_eval = len(next(iter(self._eval.values())))
        self.widths = {k: v.shape[1] for k, v in self._eval.items()}
        self._iters: list[PrefetchIterator] = []

    # ---- model → rows --------------------------------------------------------------------
    def _contexts(self) -> Iterator[list[int]]:
        return iter_contexts(self.text, self.tokenizer, self.job.context_length)

    def _keep(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.special:
            return torch.ones_like(ids, dtype=torch.bool)
        return ~torch.isin(ids, torch.tensor(self.special))

    @torch.inference_mode()
    def activations(self, contexts: list[list[int]]) -> dict[str, torch.Tensor]:
        """Float32 CPU rows ``[kept tokens, d]`` per hook, for these contexts."""
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in self.names}
        for i in range(0, len(contexts), self.job.model_batch_size):
            ids = torch.tensor(contexts[i : i + self.job.model_batch_size], dtype=torch.long)
            keep = self._keep(ids)
            with capture(self.model, self.hooks) as acts:
                run_captured(self.model, input_ids=ids.to(self.device))
            for n in self.names:
                parts[n].append(acts[n].float().cpu()[keep])
        return {n: torch.cat(p) for n, p in parts.items()}

    @torch.no_grad()
    def window_activations(self, window: list[list[int]]) -> dict[str, torch.Tensor]:
        """:meth:`activations` of a window; under torchrun computed 1/W per rank, gathered."""
        if not self.dist.active:
            return self.activations(window)
        world, per = self.dist.world_size, -(-len(window) // self.dist.world_size)
        mine = window[self.dist.rank * per : (self.dist.rank + 1) * per]
        length, step = self.job.context_length, self.job.model_batch_size
        local = {n: torch.zeros(per, length, w) for n, w in self.widths.items()}
        for i in range(0, len(mine), step):
            ids = torch.tensor(mine[i : i + step], dtype=torch.long)
            with torch.inference_mode(), capture(self.model, self.hooks) as acts:
                run_captured(self.model, input_ids=ids.to(self.device))
            for n in self.names:
                local[n][i : i + len(ids)] = acts[n].float().cpu()
        keep = self._keep(torch.tensor(window))
        out = {}
        for n in self.names:
            parts = [torch.empty_like(local[n]) for _ in range(world)]
            tdist.all_gather(parts, local[n], group=self._group)
            out[n] = torch.cat(parts)[: len(window)][keep]  # contiguous shares: window order
        return out

    # ---- the stream ---------------------------------------------------------------------------
    def _windows(self) -> Iterator[tuple[int, int, list[list[int]]]]:
        """(epoch, window index, contexts) forever, after the held-out contexts."""
        epoch = 0
        while True:
            ctxs = islice(self._contexts(), self.n_eval_contexts, None)
            w = 0
            while window := list(islice(ctxs, self.window_contexts)):
                yield epoch, w, window
                w += 1
            if w == 0:
                raise ValueError(
                    f"dataset: {self.job.dataset} has no text beyond the held-out part"
                )
            epoch += 1

    def _chunks(self, position: int) -> Iterator[tuple[torch.Tensor, ...]]:
        offset = position
        for epoch, w, window in self._windows():
            rows = int(self._keep(torch.tensor(window)).sum())
            if offset >= rows:  # skipped on resume without running the model
                offset -= rows
                continue
            acts = self.window_activations(window)
            perm = torch.from_numpy(
                np.random.default_rng([self.job.seed, epoch, w]).permutation(rows)
            )
            yield tuple(acts[n][perm][offset:] for n in self.names)
            offset = 0

    def batches(self, start_batch: int) -> Iterator[dict[str, torch.Tensor]]:
        stream = _ModelStream(self, self.job.batch_size)
        it = PrefetchIterator(stream._batches(start_batch), 2)
        self._iters.append(it)
        for cols in it:
            yield dict(zip(self.names, cols, strict=True))

    def eval_rows(self) -> dict[str, torch.Tensor]:
        return self._eval

    def sample_rows(self, name: str) -> torch.Tensor:
        return self._eval[name]

    def close(self) -> None:
        for it in self._iters:
            it.close()


class _ModelStream(RowStream):
    """RowStream's batching over the model's windows instead of on-disk blocks."""

    def __init__(self, source: OnTheFlySource, batch_size: int):
        self.source = source
        self.batch_size = batch_size

    def _chunks(self, position: int) -> Iterator[tuple[torch.Tensor, ...]]:
        return self.source._chunks(position)
