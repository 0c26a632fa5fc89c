"""One attempt at one experiment: claim it, train it while streaming traces, record the outcome.

No Celery here: the task in worker/tasks.py is a thin shell around `run`.
"""

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from shared.cache import ResultCache
from shared.diagnosis import diagnose
from shared.settings import Settings
from shared.spec import ExperimentSpec
from shared.store import Store
from shared.theory import compare as compare_theory
from shared.traces import TraceChunk

log = logging.getLogger("gradtrace.worker")


class StoreSink:
    """The training loop's trace sink: appends each chunk to Redis under the lease."""

    def __init__(self, store: Store, experiment_id: str, token: str):
        self.store = store
        self.experiment_id = experiment_id
        self.token = token
        self.lost = False
        self.cancelled = False
        # Rows this attempt has written: each append says where it goes, so a retried one is not doubled.
        self.rows = 0

    def start(self, layers: list[dict], device: str) -> None:
        if not self.store.update(self.experiment_id, self.token, layers=layers, device=device):
            self.lost = True

    def chunk(self, chunk: TraceChunk, steps_done: int) -> bool:
        if self.lost:
            return False
        outcome = self.store.append_chunk(self.experiment_id, self.token, chunk, steps_done, rows_before=self.rows)
        if outcome >= 0:
            self.rows += chunk.rows
        self.lost = outcome < 0
        self.cancelled = outcome > 0
        return outcome == 0


class DyingSink(StoreSink):
    """Fault injection (Settings.fault_kill_name, off unless set): writes the first chunk, then kills its own
    process, as a run that crashes its worker would. Only the fault tests start a worker with it."""

    def chunk(self, chunk: TraceChunk, steps_done: int) -> bool:
        super().chunk(chunk, steps_done)
        log.warning("experiment %s: fault injection kills this process", self.experiment_id)
        os.kill(os.getpid(), signal.SIGKILL)
        return False


class LeaseKeeper:
    """Renews the lease of the attempt that this process is running, from one thread for the process's life.

    One thread rather than one per run: starting and joining a thread cost a tiny run
    about a millisecond, more on a loaded machine, for a lease that a run of a few
    seconds never needs to renew. The thread is started by the first run, in the
    pool process, never in the parent that forks it (DESIGN.md). It renews every
    lease_seconds / 3 whatever is held at that moment, so a claim is renewed within
    a third of its lease. A renewal that reads a lease just released is refused by
    its token, so the keeper never revives an attempt that has ended.
    """

    def __init__(self, store: Store, lease_seconds: float):
        self.store = store
        self.lease_seconds = lease_seconds
        self._held: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(self, experiment_id: str, token: str) -> Iterator[None]:
        """Keep this attempt's lease alive while the block runs."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="gradtrace-lease", daemon=True)
                self._thread.start()
            self._held = (experiment_id, token)
        try:
            yield
        finally:
            with self._lock:
                self._held = None

    def _beat(self) -> None:
        while True:
            time.sleep(self.lease_seconds / 3)
            with self._lock:
                held = self._held
            if held is None:
                continue
            try:
                if not self.store.renew(held[0], held[1], lease_seconds=self.lease_seconds):
                    log.info("experiment %s: lease gone (deleted or taken over)", held[0],
                             extra={"experiment_id": held[0]})
            except Exception:  # Redis hiccup: the next beat tries again before the lease lapses
                log.warning("lease renewal of %s failed", held[0], exc_info=True, extra={"experiment_id": held[0]})


def run(store: Store, settings: Settings, lease: LeaseKeeper, experiment_id: str) -> str:
    """Run one attempt of the experiment; returns what happened ('succeeded', 'busy', 'handed back', ...).

    A worker that is told to stop (billiard turns the signal into SystemExit) or loses Redis in the
    middle hands the experiment back: `queued` again, lease released, the attempt not counted, so
    another worker starts it over at once. When even that write fails, the lease lapses and the
    sweeper does the same.
    """
    from worker.train import train  # torch is imported in the pool process, never in the parent

    token = uuid.uuid4().hex
    claim = store.claim(
        experiment_id, token, lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts
    )
    if claim.outcome != "claimed":
        log.info("experiment %s not run: %s", experiment_id, claim.outcome)
        return claim.outcome
    log.info("experiment %s: attempt %d", experiment_id, claim.attempt)
    try:
        with lease.hold(experiment_id, token):
            spec = ExperimentSpec.model_validate(claim.spec)
            dying = settings.fault_kill_name and spec.name == settings.fault_kill_name
            sink = (DyingSink if dying else StoreSink)(store, experiment_id, token)
            result = train(spec, sink, flush_seconds=settings.flush_seconds)
            if sink.lost:
                log.info("experiment %s: lease lost (deleted or taken over); nothing recorded", experiment_id)
                return "lost"
            summary = {
                "final_loss": result.final_loss,
                "final_accuracy": result.final_accuracy,
                "train_seconds": round(result.train_seconds, 4),
                "steps_run": result.steps_run,
                "diverged_step": result.diverged_step,
                "device": result.device,
                "attempts": claim.attempt,
                "diagnosis": diagnose(spec, result.trace, result.diverged_step),
                "theory": compare_theory(spec, result.trace),
                "cached": False,
                "cached_from": None,
            }
            status = "cancelled" if result.cancelled else "succeeded"
            recorded = store.finish(experiment_id, token, status, summary=summary, device=result.device)
            if recorded and status == "succeeded":
                ResultCache(store).remember(experiment_id, spec, result.device)
            return status
    except SystemExit:
        _hand_back(store, experiment_id, token, settings.lease_seconds)
        raise
    except (redis.ConnectionError, redis.TimeoutError):
        log.warning("experiment %s: Redis went away mid-run", experiment_id, exc_info=True)
        _hand_back(store, experiment_id, token, settings.lease_seconds)
        return "handed back"
    except Exception as exc:
        store.finish(experiment_id, token, "failed", error={"message": f"{type(exc).__name__}: {exc}"})
        raise


def _hand_back(store: Store, experiment_id: str, token: str, patience: float) -> None:
    """Give the attempt back to the queue, fenced by its token, so that it does not count toward the cap.

    Tried until the lease would have lapsed (after that the token fences it out anyway): a worker cut
    off by a short Redis outage hands back once Redis returns; after a long one the sweeper requeues it.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            if store.requeue(experiment_id, token, handed_back=True):
                log.warning("experiment %s handed back to the queue", experiment_id)
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                log.warning("experiment %s: Redis away, left to the sweeper", experiment_id)
                return
            time.sleep(0.2)
