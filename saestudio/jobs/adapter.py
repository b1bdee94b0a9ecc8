"""From trainer hooks to store calls: batching, control polling, heartbeats.

The trainer calls its hooks every step; the database must not see every step (erratum 9).
:class:`StoreCallback` buffers metrics and reads the user's control request on a clock,
and :class:`Heartbeat` marks the job alive from its own thread, so a long step or a slow
data read never makes a live job look dead.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from saestudio.jobs.events import EventSink
from saestudio.training import checkpoint as ckpt
from saestudio.training.callbacks import TrainerCallback
from saestudio.training.config import TrainConfig

if TYPE_CHECKING:
    from saestudio.jobs.contracts import JobTiming, RunStore

log = logging.getLogger(__name__)


def one_line(e: BaseException, limit: int = 500) -> str:
    """``Type: first line of the message`` — what the UI shows for a failed job."""
    text = str(e).strip().splitlines()
    msg = f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def merge_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (sae, step), in order: the trainer emits the training, density and
    evaluation lines of a step separately, and the table is unique on (training, sae,
    step)."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for line in lines:
        merged.setdefault((str(line.get("sae", "sae")), int(line["step"])), {}).update(line)
    return list(merged.values())


class ControlPoller:
    """The pending control request, read from the store at most every ``every`` seconds
    (``get``) or on demand (``refresh``); ``value`` is the last one read."""

    def __init__(self, read: Callable[[], str | None], every: float):
        self._read, self._every = read, every
        self._last = -float("inf")
        self.value: str | None = None

    def refresh(self) -> str | None:
        self._last = time.monotonic()
        try:
            self.value = self._read()
        except Exception as e:  # a store hiccup must not fail the job: ask again later
            log.warning("control request not read: %s", e)
        return self.value

    def get(self) -> str | None:
        if time.monotonic() - self._last >= self._every:
            return self.refresh()
        return self.value


class JobLost(RuntimeError):
    """This worker no longer owns the job: the store handed it to another worker (or
    stopped answering for as long as the watchdog waits). Stop without writing more."""


class Heartbeat:
    """Calls ``beat`` now and then every ``every`` seconds on a daemon thread, until the
    ``with`` block ends. A failing beat is logged, not raised: the store may be briefly
    unreachable, and the watchdog tolerates several missed beats. ``beat`` returning
    False means the job is no longer ours (:meth:`check` then raises :class:`JobLost`).
    """

    def __init__(self, beat: Callable[[], bool | None], every: float, stale_after_s: float):
        self._beat, self._every, self._stale_after_s = beat, every, stale_after_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-heartbeat", daemon=True)
        self.last_ok = time.monotonic()
        self.lost = False

    def check(self) -> None:
        """Raise :class:`JobLost` when the job is no longer safely ours."""
        silent = time.monotonic() - self.last_ok
        if self.lost:
            raise JobLost("the store gave this job to another worker")
        if silent > 0.75 * self._stale_after_s:
            # the watchdog is about to hand the job to another worker: stop before two
            # processes write one run folder
            self.lost = True
            raise JobLost(f"no heartbeat reached the store for {silent:.0f} s")

    def _once(self) -> None:
        try:
            owned = self._beat()
        except Exception as e:
            log.warning("heartbeat failed: %s", e)
            return
        if owned is False:
            self.lost = True
        else:
            self.last_ok = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self._once()

    def __enter__(self) -> Heartbeat:
        self._once()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class StoreCallback(TrainerCallback):
    """Reports a training to a :class:`~saestudio.jobs.contracts.RunStore` and applies the
    user's control requests (and a worker shutdown, ``interrupt``) to the trainer.

    ``progress`` (step, total_steps, eta_seconds, latest_metrics) is what the heartbeat
    carries to the store between metric flushes.
    """

    def __init__(
        self,
        training_id: int,
        store: RunStore,
        events: EventSink,
        channel: str,
        timing: JobTiming,
        cfg: TrainConfig,
        interrupt: threading.Event | None = None,
        heartbeat: Heartbeat | None = None,
    ):
        self.training_id, self.store, self.events, self.channel = (
            training_id,
            store,
            events,
            channel,
        )
        self.timing, self.interrupt, self.heartbeat = timing, interrupt, heartbeat
        self.checkpoint_every = cfg.checkpoint_every
        self.control = ControlPoller(lambda: store.get_control(training_id), timing.poll_s)
        self.buffer: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()
        self.step = self.total_steps = self.flushes = 0
        # a heartbeat can come before on_start (the trainer sets up): never report less
        self.progress: dict[str, Any] = {"total_steps": cfg.total_steps}
        self._started: tuple[float, int] = (time.monotonic(), 0)
        self._failing_since: float | None = None
        self.acted_on: str | None = None
        """The request the trainer stopped or paused for (``interrupt`` for a shutdown)."""

    @property
    def interrupted(self) -> bool:
        return self.interrupt is not None and self.interrupt.is_set()

    @property
    def lost(self) -> bool:
        return self.heartbeat is not None and self.heartbeat.lost

    def _event(self, kind: str, **fields: Any) -> None:
        self.events.publish(self.channel, {"type": kind, "training_id": self.training_id, **fields})

    def on_start(self, *, step: int, total_steps: int, resolved: dict[str, Any]) -> None:
        self.step, self.total_steps = step, total_steps
        self._started = (time.monotonic(), step)
        self.progress = {"step": step, "total_steps": total_steps}
        d_sae = (resolved.get("sae") or {}).get("d_sae")
        if d_sae:  # an expansion factor becomes a width only now: job lists show it
            self.progress["d_sae"] = int(d_sae)
        self.control.refresh()  # a stop asked while the job was queued applies at once
        self._event("start", step=step, total_steps=total_steps)

    def on_step(self, step: int) -> None:
        self.step = step
        t0, s0 = self._started
        rate = (step - s0) / max(time.monotonic() - t0, 1e-9)
        eta = (self.total_steps - step) / rate if rate > 0 else None
        self.progress = {**self.progress, "step": step, "eta_seconds": eta}
        if self.heartbeat is not None:
            self.heartbeat.check()
        self.control.get()
        if self.buffer and time.monotonic() - self.last_flush >= self.timing.flush_s:
            self.flush()

    def _checkpoint_follows(self, step: int) -> bool:
        every = self.checkpoint_every
        return step == self.total_steps or (every > 0 and step % every == 0)

    def on_metrics(self, step: int, metrics: dict[str, Any]) -> None:
        self.buffer.append(dict(metrics))
        if "loss" in metrics:
            self.progress = {**self.progress, "latest_metrics": dict(metrics)}
        if self._checkpoint_follows(step):
            # the checkpoint of this step is written next: its lines must be stored
            # first, or a kill right after it would lose them (a resume starts after it)
            self.flush()

    def on_checkpoint(self, step: int, path: Path, is_best: bool) -> None:
        self.flush()
        state = json.loads((path / ckpt.STATE_FILE).read_text())
        label, eval_loss = str(state.get("label", "sae")), state.get("eval_loss")
        try:
            self.store.add_checkpoint(self.training_id, label, step, str(path), is_best, eval_loss)
        except Exception as e:  # a resume records the checkpoint it starts from again
            log.warning("checkpoint %s not recorded: %s", path, e)
        self._event(
            "checkpoint", sae=label, step=step, path=str(path), is_best=is_best, eval_loss=eval_loss
        )

    def should_stop(self) -> bool:
        if self.control.value in ("stop", "stop_and_finalize"):
            self.acted_on = self.control.value
            self.flush()  # a checkpoint of this step follows
            return True
        return False

    def should_pause(self) -> bool:
        if self.control.value == "pause" or self.interrupted:
            self.acted_on = "pause" if self.control.value == "pause" else "interrupt"
            self.flush()
            return True
        return False

    def on_end(self, status: str, step: int) -> None:
        self.step = step
        self.flush()

    def flush(self, strict: bool = False) -> None:
        """Store the buffered lines in one call, then publish them. A failed write keeps
        the lines for the next flush; it raises when ``strict`` or when the store has
        been failing for longer than the watchdog waits. A lost job writes nothing."""
        now = self.last_flush = time.monotonic()
        if not self.buffer or self.lost:
            return
        lines = merge_lines(self.buffer)
        try:
            self.store.add_metrics(self.training_id, lines)
        except Exception as e:
            self.buffer = lines
            since = self._failing_since = self._failing_since or now
            if strict or now - since > self.timing.stale_after_s:
                raise
            log.warning("metrics not stored yet (will retry): %s", e)
            return
        self.buffer, self._failing_since = [], None
        self.flushes += 1
        self._event("metrics", step=self.step, total_steps=self.total_steps, lines=lines)
