"""One attempt at one experiment: claim it, train it while streaming traces, record the outcome.

No Celery here: the task in worker/tasks.py is a thin shell around `run`.
"""

import logging
import threading
import uuid

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

    def start(self, layers: list[dict], device: str) -> None:
        if not self.store.update(self.experiment_id, self.token, layers=layers, device=device):
            self.lost = True

    def chunk(self, chunk: TraceChunk, steps_done: int) -> bool:
        if self.lost:
            return False
        outcome = self.store.append_chunk(self.experiment_id, self.token, chunk, steps_done)
        self.lost = outcome < 0
        self.cancelled = outcome > 0
        return outcome == 0


class Heartbeat:
    """Renews the lease in a thread, so that a long step never lets it lapse."""

    def __init__(self, store: Store, experiment_id: str, token: str, lease_seconds: float):
        self.store = store
        self.experiment_id = experiment_id
        self.token = token
        self.lease_seconds = lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{experiment_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                if not self.store.renew(self.experiment_id, self.token, lease_seconds=self.lease_seconds):
                    return
            except Exception:  # Redis hiccup: the next beat tries again before the lease lapses
                log.warning("lease renewal of %s failed", self.experiment_id, exc_info=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def run(store: Store, settings: Settings, experiment_id: str) -> str:
    """Run one attempt of the experiment; returns what happened ('succeeded', 'busy', ...)."""
    from worker.train import train  # torch is imported in the pool process, never in the parent

    token = uuid.uuid4().hex
    outcome, attempt = store.claim(
        experiment_id, token, lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts
    )
    if outcome != "claimed":
        log.info("experiment %s not run: %s", experiment_id, outcome)
        return outcome
    log.info("experiment %s: attempt %d", experiment_id, attempt)
    try:
        with Heartbeat(store, experiment_id, token, settings.lease_seconds):
            spec = ExperimentSpec.model_validate(store.get(experiment_id)["spec"])
            sink = StoreSink(store, experiment_id, token)
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
                "attempts": attempt,
                "diagnosis": diagnose(spec, result.trace, result.diverged_step),
                "theory": compare_theory(spec, result.trace),
            }
            status = "cancelled" if result.cancelled else "succeeded"
            store.finish(experiment_id, token, status, summary=summary, device=result.device)
            return status
    except Exception as exc:
        store.finish(experiment_id, token, "failed", error={"message": f"{type(exc).__name__}: {exc}"})
        raise
