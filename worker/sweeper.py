"""Re-enqueues experiments whose worker died mid-run, so that nothing submitted is silently lost.

Runs as a thread in every pool process (never in the parent, which forks); a Redis
lock lets one of them sweep per period.
"""

import logging
import threading

from celery import Celery

from shared.celery_app import RUN_TASK
from shared.store import Store

log = logging.getLogger("gradtrace.sweeper")

LOCK_KEY = "gradtrace:sweeper"


def sweep(store: Store, celery: Celery) -> list[str]:
    """Send a new run message for every orphaned experiment; their ids."""
    sent = []
    for orphan in store.orphans():
        celery.send_task(RUN_TASK, args=[orphan["id"]], task_id=orphan["id"], queue=orphan["queue"])
        sent.append(orphan["id"])
        log.warning("experiment %s lost its worker; queued again", orphan["id"])
    return sent


def start(store: Store, celery: Celery, period: float) -> threading.Thread:
    """A daemon thread that sweeps every `period` seconds when it holds the lock."""

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(period):
            try:
                if store.redis.set(LOCK_KEY, "1", nx=True, px=int(period * 900)):
                    sweep(store, celery)
            except Exception:  # Redis down: the next period tries again
                log.warning("sweep failed", exc_info=True)

    thread = threading.Thread(target=loop, name="gradtrace-sweeper", daemon=True)
    thread.start()
    return thread
