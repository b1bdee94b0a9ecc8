"""A studio training with ``num_devices`` > 1: a torchrun job on this worker.

The worker's job process (:func:`saestudio.jobs.runner.run_training`) keeps everything
that talks to the database — claim, heartbeat, :class:`~saestudio.jobs.adapter.StoreCallback`
— and starts ``torchrun --standalone --nproc_per_node N -m saestudio.jobs.torchrun_job``.
Rank 0 of that job connects back over a Unix socket (authenticated) and relays every
trainer callback to the worker *synchronously*: a metrics line is stored before rank 0
writes the checkpoint that follows it, exactly as in a single-process job, and the
user's pause/stop (or a worker shutdown) comes back as ``should_pause``/``should_stop``,
which the trainer applies on every rank at the same step. The other ranks only train.

The torchrun processes die with the worker (``PR_SET_PDEATHSIG``: a worker killed with
SIGKILL leaves no orphan writing into a run folder another worker is resuming).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from saestudio.training.callbacks import TrainerCallback
from saestudio.training.config import TrainConfig
from saestudio.training.distributed import check_devices, shutdown, torchrun_command
from saestudio.training.trainer import Trainer, TrainResult

log = logging.getLogger(__name__)

ADDRESS_ENV = "SAESTUDIO_RELAY_ADDRESS"
KEY_ENV = "SAESTUDIO_RELAY_KEY"
LOG_FILE = "torchrun.log"
"""torchrun's output, in the run folder (the reason when a job fails)."""

_PR_SET_PDEATHSIG = 1
_PRCTL = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


class RelayError(RuntimeError):
    """A callback raised in the worker (e.g. the job was lost): the training stops."""


# ---- the worker side ----------------------------------------------------------------------


class _Relay:
    """Serves rank 0's callback calls on the worker's callbacks, one at a time."""

    def __init__(self, listener: Listener, key: bytes, callbacks: list[TrainerCallback]):
        self.listener, self._key, self.callbacks = listener, key, callbacks
        self.error: BaseException | None = None  # raised by one of our callbacks
        self.failure: str | None = None  # the training's own error, from rank 0
        self.result: dict[str, Any] | None = None
        self.connected = threading.Event()

    def _call(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        if name in ("should_pause", "should_stop"):  # as Trainer._control: any callback
            return any(getattr(cb, name)() for cb in self.callbacks)
        for cb in self.callbacks:
            getattr(cb, name)(*args, **kwargs)
        return None

    def serve(self) -> None:
        try:
            conn = self.listener.accept()
        except OSError:  # closed: the job ended before rank 0 connected
            return
        self.connected.set()
        with conn:
            while True:
                try:
                    kind, name, args, kwargs = conn.recv()
                except (EOFError, OSError):
                    return
                reply: tuple[str, Any] = ("ok", None)
                if kind == "call":
                    try:
                        reply = ("ok", self._call(name, args, kwargs))
                    except BaseException as e:  # handed to rank 0, raised here afterwards
                        self.error = e
                        reply = ("error", f"{type(e).__name__}: {e}")
                elif kind == "result":
                    self.result = kwargs
                elif kind == "failed":
                    self.failure = name
                conn.send(reply)

    def close(self) -> None:
        if not self.connected.is_set():  # unblock accept()
            with contextlib.suppress(Exception):
                Client(self.listener.address, authkey=self._key).close()
        self.listener.close()


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    errors = [ln for ln in text if "Error" in ln or "error:" in ln]
    return (errors[-1] if errors else " | ".join(text[-lines:]))[-800:]


def run_torchrun(
    cfg: TrainConfig,
    callbacks: list[TrainerCallback],
    resume: str | Path | None = None,
) -> TrainResult:
    """Train ``cfg`` with ``cfg.num_devices`` torchrun processes on this machine, with
    ``callbacks`` called here as if the trainer ran in this process. Raises ValueError
    (naming ``num_devices``) when the machine has fewer devices, what a callback raised
    (e.g. ``JobLost``), or RuntimeError with the training's error when it failed."""
    check_devices(cfg.num_devices, cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="saestudio-ddp-") as tmp:
        key = os.urandom(16)
        listener = Listener(os.path.join(tmp, "relay.sock"), family="AF_UNIX", authkey=key)
        relay = _Relay(listener, key, callbacks)
        spec = Path(tmp) / "job.json"
        spec.write_text(
            json.dumps(
                {"config": cfg.model_dump(mode="json"), "resume": str(resume) if resume else None}
            )
        )
        env = {**os.environ, ADDRESS_ENV: str(listener.address), KEY_ENV: key.hex()}
        env.setdefault("OMP_NUM_THREADS", "1")
        cmd = torchrun_command(cfg.num_devices, ["-m", "saestudio.jobs.torchrun_job", str(spec)])
        server = threading.Thread(target=relay.serve, name="torchrun-relay", daemon=True)
        server.start()
        with open(out / LOG_FILE, "ab") as logf:
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C / group signal to the worker is not ours
                preexec_fn=_die_with_parent,
            )
            try:
                code = proc.wait()
            except BaseException:  # the worker itself is going down: take the job along
                os.killpg(proc.pid, signal.SIGKILL)
                raise
        relay.close()
        server.join(timeout=10)
    if relay.error is not None:
        raise relay.error
    if relay.failure is not None:
        raise RuntimeError(relay.failure)
    if code != 0 or relay.result is None:
        raise RuntimeError(
            f"torchrun exited with code {code}: {_log_tail(out / LOG_FILE)} (see {LOG_FILE})"
        )
    r = relay.result
    saes = {k: Path(v) if v else None for k, v in r["saes"].items()}
    path = lambda v: Path(v) if v else None  # noqa: E731
    return TrainResult(
        r["status"], r["step"], r["metrics"], r["eval"], path(r["sae_path"]),
        path(r["checkpoint"]), saes,
    )  # fmt: skip


# ---- the torchrun side ----------------------------------------------------------------------


class RelayCallback(TrainerCallback):
    """Rank 0's callbacks, forwarded to the worker and answered before training goes on."""

    def __init__(self, conn: Connection):
        self.conn = conn

    @classmethod
    def connect(cls) -> RelayCallback:
        key = bytes.fromhex(os.environ[KEY_ENV])
        return cls(Client(os.environ[ADDRESS_ENV], family="AF_UNIX", authkey=key))

    def _send(self, kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
        self.conn.send((kind, name, args, kwargs))
        status, value = self.conn.recv()
        if status == "error":
            raise RelayError(value)
        return value

    def on_start(self, *, step: int, total_steps: int, resolved: dict[str, Any]) -> None:
        self._send("call", "on_start", step=step, total_steps=total_steps, resolved=resolved)

    def on_step(self, step: int) -> None:
        self._send("call", "on_step", step)

    def on_metrics(self, step: int, metrics: dict[str, Any]) -> None:
        self._send("call", "on_metrics", step, metrics)

    def on_checkpoint(self, step: int, path: Path, is_best: bool) -> None:
        self._send("call", "on_checkpoint", step, path, is_best)

    def should_pause(self) -> bool:
        return bool(self._send("call", "should_pause"))

    def should_stop(self) -> bool:
        return bool(self._send("call", "should_stop"))

    def on_end(self, status: str, step: int) -> None:
        self._send("call", "on_end", status, step)

    def send_result(self, r: TrainResult) -> None:
        text = lambda p: str(p) if p else None  # noqa: E731
        self._send(
            "result",
            "",
            status=r.status,
            step=r.step,
            metrics=r.metrics,
            eval=r.eval,
            sae_path=text(r.sae_path),
            checkpoint=text(r.checkpoint),
            saes={k: text(v) for k, v in r.saes.items()},
        )

    def send_failure(self, e: BaseException) -> None:
        with contextlib.suppress(Exception):  # the worker is gone: nothing to tell
            self._send("failed", f"{type(e).__name__}: {e}")


def main(spec_path: str) -> int:
    """One rank of a studio torchrun job (``python -m saestudio.jobs.torchrun_job SPEC``)."""
    _die_with_parent()  # torchrun's agent gone (its worker killed): stop at once
    spec = json.loads(Path(spec_path).read_text())
    cfg = TrainConfig.model_validate(spec["config"])
    relay = RelayCallback.connect() if int(os.environ.get("RANK", "0")) == 0 else None
    try:
        result = Trainer(cfg, [relay] if relay else [], resume=spec["resume"]).fit()
    except BaseException as e:
        if relay is not None and not isinstance(e, RelayError):
            relay.send_failure(e)
        raise
    finally:
        shutdown()
    if relay is not None:
        relay.send_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
