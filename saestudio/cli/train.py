"""``saestudio train``: train an SAE or transcoder (``--num-devices N``: under torchrun).

Every ``TrainConfig`` field (and every ``SAEConfig`` field under it) gets a flag made
from the model itself (:mod:`saestudio.cli.flags`), so the CLI can never drift from the
library's config. ``--config FILE.yaml`` is read first and flags override it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from saestudio.cli.flags import add_config_flags
from saestudio.sae.config import SAEConfig
from saestudio.training.config import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand to ``saestudio``'s subparsers."""
    p = subparsers.add_parser(
        "train",
        help="train an SAE or transcoder",
        description="Train an SAE on a .npy/.safetensors file or folder. Writes the SAELens-format "
        "SAE into --out, checkpoints under --out/checkpoints, metrics into --out/metrics.jsonl. "
        "Ctrl-C checkpoints and stops; --resume continues exactly. Data parallel: "
        "--num-devices N runs N processes under torchrun (one per GPU with NCCL, or CPU "
        "processes with gloo), or start it yourself: torchrun --nproc_per_node N -m "
        "saestudio.cli train ...; N processes with --batch-size B equal one process with B.",
    )
    p.add_argument(
        "--config", metavar="FILE.yaml", help="YAML file of config fields; flags override it"
    )
    p.add_argument(
        "--resume", metavar="DIR", help="continue from a run folder or checkpoint folder"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    # require=False: a --config file or --resume can supply any field
    arch = p.add_argument_group("architecture (SAEConfig)")
    add_config_flags(arch, SAEConfig, prefix="sae.", require=False)
    train = p.add_argument_group("training (TrainConfig)")
    add_config_flags(train, TrainConfig, skip=("sae",), require=False)
    p.set_defaults(func=cmd_train)


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith("sae."):
            out.setdefault("sae", {})[key[4:]] = value
        else:
            out[key] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def load_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> TrainConfig:
    data: dict[str, Any] = dict(base or {})
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"--config: no such file: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"--config: {path} must hold a mapping of field: value")
        data = _merge(data, loaded)
    flags = {
        k: v
        for k, v in vars(args).items()
        if k == "sae" or "." in k or k in TrainConfig.model_fields
    }
    data = _merge(data, _nested(flags))
    return TrainConfig.model_validate(data)


# ---- commands ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _stop_on_signals(progress: Any) -> Iterator[None]:
    """Ctrl-C / SIGTERM checkpoint and stop; the previous handlers come back afterwards, so
    ``main()`` called in-process (tests, notebooks) leaves the caller's handlers alone.
    Signal handlers can only be set from the main thread; elsewhere none are installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: progress.request_stop())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, handler)


def cmd_train(args: argparse.Namespace) -> int:
    from saestudio.cli.progress import ProgressCallback
    from saestudio.training import checkpoint as ckpt
    from saestudio.training.trainer import JOB_FILE, Trainer

    base = None
    if args.resume:
        job = Path(args.resume) / JOB_FILE
        base = (
            json.loads(job.read_text())
            if job.is_file()
            else ckpt.load_checkpoint(args.resume).state["config"]
        )
    cfg = load_config(args, base)
    from saestudio.training import distributed

    if cfg.num_devices > 1 and not distributed.in_torchrun():
        return _launch_torchrun(cfg, args)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    progress = ProgressCallback(quiet=args.quiet or not main_rank)
    try:
        with _stop_on_signals(progress):
            result = Trainer(cfg, [progress], resume=args.resume).fit()
    finally:
        distributed.shutdown()
    if not main_rank:  # rank 0 reports for the whole torchrun job
        return 0
    ev = result.eval or {}
    if result.status == "completed":
        print(
            f"done: step {result.step}  FVU {ev.get('eval_fvu', float('nan')):.4f}  "
            f"L0 {ev.get('eval_l0', float('nan')):.1f}  (held-out)"
        )
        if len(result.saes) > 1:
            print(f"{len(result.saes)} SAEs (SAELens format), checkpoints and metrics.jsonl:")
            for label, path in result.saes.items():
                print(f"  {label}: {path}")
        else:
            out = Path(cfg.out)
            print(
                f"SAE (SAELens format): {result.sae_path}\n"
                f"checkpoints: {out / 'checkpoints'}  metrics: {out / 'metrics.jsonl'}"
            )
    else:
        print(
            f"{result.status} at step {result.step}; checkpoint {result.checkpoint}\n"
            f"continue with: saestudio train --resume {cfg.out}"
        )
    return 0


def _launch_torchrun(cfg: TrainConfig, args: argparse.Namespace) -> int:
    """``num_devices`` > 1 outside torchrun: run this same command under
    ``torchrun --standalone --nproc_per_node num_devices``. torchrun gets its own process
    group, so a Ctrl-C reaches the ranks once, as a SIGTERM: they checkpoint at the same
    step and stop; a second Ctrl-C kills them all."""
    import subprocess

    from saestudio.training import distributed

    distributed.check_devices(cfg.num_devices, cfg.device)
    cmd = distributed.torchrun_command(cfg.num_devices, ["-m", "saestudio.cli", *args.argv])
    proc = subprocess.Popen(cmd, start_new_session=True)
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    asked = []

    def forward(*_: Any) -> None:
        asked.append(1)
        with contextlib.suppress(ProcessLookupError):
            if len(asked) > 1:
                os.killpg(proc.pid, signal.SIGKILL)
                return
            # the ranks themselves: they checkpoint, stop and exit 0, and torchrun with them
            for pid in _children(proc.pid) or [proc.pid]:
                os.kill(pid, signal.SIGTERM)

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        for sig in signals:
            signal.signal(sig, forward)
    try:
        return proc.wait()
    finally:
        if in_main:
            for sig, handler in previous.items():
                if handler is not None:
                    signal.signal(sig, handler)


def _children(pid: int) -> list[int]:
    """Child process ids (Linux /proc; empty elsewhere)."""
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []
