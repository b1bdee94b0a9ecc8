"""``saestudio`` command line: train, export, info, demo.

Every ``TrainConfig`` field (and every ``SAEConfig`` field under it) gets a flag made
from the model itself, so the CLI can never drift from the library's config.
``--config FILE.yaml`` is read first and flags override it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from saestudio.sae.config import SAEConfig
from saestudio.training.config import TrainConfig

# ---- flags generated from the config models ------------------------------------------------


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for ``X | None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _add_field(group: argparse._ArgumentGroup, dest: str, name: str, info: FieldInfo) -> None:
    flag = "--" + name.replace("_", "-")
    inner, _ = _unwrap(info.annotation)
    default = info.get_default(call_default_factory=True)
    default = None if default in (None, [], {}) else default
    help_text = (info.description or "") + (f" [default: {default}]" if default is not None else "")
    help_text = help_text.replace("%", "%%")
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": help_text}
    if inner is bool:
        group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif typing.get_origin(inner) is Literal:
        group.add_argument(flag, choices=[str(c) for c in typing.get_args(inner)], **kwargs)
    elif inner in (int, float):
        group.add_argument(flag, type=inner, metavar=inner.__name__.upper(), **kwargs)
    else:
        group.add_argument(flag, type=str, metavar="VALUE", **kwargs)


def _config_flags(parser: argparse.ArgumentParser) -> None:
    arch = parser.add_argument_group("architecture (SAEConfig)")
    for name, info in SAEConfig.model_fields.items():
        _add_field(arch, f"sae.{name}", name, info)
    train = parser.add_argument_group("training (TrainConfig)")
    for name, info in TrainConfig.model_fields.items():
        if name != "sae":
            _add_field(train, name, name, info)


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


def format_validation_error(err: ValidationError) -> str:
    """One line per problem, each naming the field as its flag."""
    lines = []
    for e in err.errors():
        if e["type"] == "extra_forbidden":  # only a --config file (or a checkpoint) can do this
            key = ".".join(str(p) for p in e["loc"])
            lines.append(f"{key}: unknown field (saestudio train --help lists the fields)")
            continue
        loc = [str(p) for p in e["loc"] if p != "sae"]
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"--{'.'.join(loc).replace('_', '-')}: {msg}" if loc else msg)
    return "; ".join(lines)


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
    from saestudio.progress import ProgressCallback
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


def cmd_worker(args: argparse.Namespace) -> int:
    """Become a Celery worker (solo pool: one job at a time) on SAESTUDIO_QUEUE, with the
    database, broker and data dir from the SAESTUDIO_* environment."""
    import uuid

    from saestudio.settings import get_settings

    settings = get_settings()
    name = args.name or f"saestudio-{uuid.uuid4().hex[:8]}"
    cmd = [
        sys.executable, "-m", "celery", "-A", "saestudio.jobs.celery_app", "worker",
        "--pool=solo", "--concurrency=1", "-Q", args.queue or settings.queue,
        "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel=INFO",
    ]  # fmt: skip
    os.execv(sys.executable, cmd)  # signals (SIGTERM: warm shutdown) go straight to Celery
    return 0  # not reached


def cmd_export(args: argparse.Namespace) -> int:
    from saestudio.export import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.out)
    print(f"exported {args.checkpoint} → {path} (SAELens format)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from saestudio.export import describe

    print(json.dumps(describe(args.path), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from saestudio.demo import run_demo

    run_demo(Path(args.out), steps=args.steps)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saestudio", description="Train sparse autoencoders and transcoders on activations."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
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
    _config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "worker",
        help="run a job worker (Celery) for the studio",
        description="Run queued trainings and extractions, one at a time, from the queue in "
        "SAESTUDIO_QUEUE (default saestudio), with SAESTUDIO_DATABASE_URL, SAESTUDIO_BROKER_URL "
        "and SAESTUDIO_DATA_DIR (the data dir must be the same path on every machine). A "
        "training with num_devices N runs as torchrun with N processes on this worker. "
        "SIGTERM: the running job checkpoints and goes back to the queue.",
    )
    p.add_argument("--name", help="worker name (NAME@host); default saestudio-<random>")
    p.add_argument("--queue", help="queue to consume [default: SAESTUDIO_QUEUE or saestudio]")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("export", help="export a checkpoint in the SAELens format")
    p.add_argument("checkpoint", help="checkpoint folder, or a run folder (its latest checkpoint)")
    p.add_argument(
        "--out", required=True, help="folder to write cfg.json + sae_weights.safetensors"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="describe an SAE folder, checkpoint or run folder")
    p.add_argument("path")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "demo", help="extract MiniLM activations over the Python docs and train a TopK SAE"
    )
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--steps", type=int, default=400, help="training steps")
    p.set_defaults(func=cmd_demo)

    from saestudio.commands_eval import register as register_eval
    from saestudio.commands_extract import register as register_extract
    from saestudio.commands_serve import register as register_serve

    register_extract(sub)
    register_eval(sub)
    register_serve(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to re-run under torchrun
    from saestudio.activations.store import DataError
    from saestudio.training.trainer import TrainingDiverged

    try:
        return int(args.func(args))
    except ValidationError as e:
        print(f"saestudio: error: {format_validation_error(e)}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"saestudio: error: {e}", file=sys.stderr)
        return 1
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"saestudio: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
