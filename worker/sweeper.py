"""Re-enqueues experiments that nothing would run otherwise, so that nothing submitted is silently lost.

Two kinds:

- `running` with a lapsed lease: their worker died (or froze) mid-run. They go back to
  `queued` with a clean trace, then get a new message.
- `queued` for longer than the grace period with no message in the broker: the message was
  lost (the API died between writing the record and sending, or a worker died between
  kombu's BRPOP and its unacked bookkeeping, celery#7950). An experiment merely waiting
  in a long queue has its message in the queue's list and is left alone.
- `queued` for longer than the grace period whose message was delivered longer ago than
  that and never acknowledged: the worker that took it died before it claimed the run (a
  node killed with messages it had reserved). Kombu would give such a message back only
  after the visibility timeout, hours later; it is sent again now and its unacked entry
  dropped. A live worker claims a run within moments of its delivery.

A message sent twice is harmless: the lease lets one delivery run and the other exit.
Runs as a thread in every pool process (never in the parent, which forks); a Redis
lock lets one of them look for orphans per period, and another one read the broker
for lost messages per grace period (the read is as long as the queue).
"""

import json
import logging
import math
import threading
import time

from celery import Celery
from kombu.exceptions import OperationalError
from redis import Redis, RedisError

from shared.celery_app import RUN_TASK
from shared.store import Store

log = logging.getLogger("gradtrace.sweeper")

LOCK_KEY = "gradtrace:sweeper"
LOST_CHECK_KEY = "gradtrace:sweeper:lost-check"
# Kombu's Redis transport: a queue is a list of JSON messages under the queue's name, and a
# delivered message waits for its ack in this hash (delivery tag -> [message, exchange, routing key]).
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"  # delivery tag -> when it was delivered (Unix seconds)
SCAN_CHUNK = 1000


def sweep(store: Store, celery: Celery, queued_grace: float) -> list[str]:
    """Send a new run message for every orphaned or lost experiment; their ids."""
    return requeue_orphans(store, celery) + resend_lost(store, celery, queued_grace)


def requeue_orphans(store: Store, celery: Celery) -> list[str]:
    """Put the runs whose lease lapsed back in the queue, each with a new message; their ids."""
    sent = []
    for orphan in store.orphans():
        if store.requeue(orphan["id"]):  # only while its lease stays lapsed
            _send(celery, orphan)
            sent.append(orphan["id"])
            log.warning("experiment %s lost its worker; queued again", orphan["id"],
                        extra={"experiment_id": orphan["id"]})
    return sent


def resend_lost(store: Store, celery: Celery, queued_grace: float) -> list[str]:
    """Send again the messages of experiments queued for longer than the grace period that the broker
    does not hold, or holds only as a delivery that long unacknowledged; their ids."""
    stale = store.stale_queued(queued_grace)
    if not stale:
        return []
    held, abandoned = broker_task_ids(store.redis, sorted({found["queue"] for found in stale}), queued_grace)
    lost = [found for found in stale if found["id"] not in held]
    # Read again: one claimed and finished while the broker was read has no message either.
    records = store.get_many([found["id"] for found in lost])
    lost = [found for found, record in zip(lost, records) if record and record["status"] == "queued"]
    tags = [tag for found in lost for tag in abandoned.get(found["id"], ())]
    if tags:
        with store.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(UNACKED_KEY, *tags)
            pipe.zrem(UNACKED_INDEX_KEY, *tags)
            pipe.execute()
    for found in lost:
        _send(celery, found)
        log.warning("experiment %s had no live message in the broker; sent again", found["id"],
                    extra={"experiment_id": found["id"]})
    store.mark_queued([found["id"] for found in lost])
    return [found["id"] for found in lost]


def broker_task_ids(
    client: Redis, queues: list[str], unacked_grace: float | None = None
) -> tuple[set[str], dict[str, list[str]]]:
    """The task ids of the messages the broker holds for these queues, waiting or delivered and unacked;
    and, apart, those delivered longer than `unacked_grace` seconds ago (by delivery tags), which are
    not counted as held.

    The unacked hash is read before and after the lists, and the lists from their oldest end on, so a
    message that moves during the read (delivered, or restored to its queue) is seen in one place or the other.
    """
    held, abandoned = _unacked(client, unacked_grace)
    for queue in queues:
        start = 0
        while batch := client.lrange(queue, start, start + SCAN_CHUNK - 1):
            held.update(_task_id(raw) for raw in batch)
            start += SCAN_CHUNK
    held_after, abandoned_after = _unacked(client, unacked_grace)
    held |= held_after
    abandoned = {
        task_id: sorted(set(abandoned.get(task_id, [])) | set(abandoned_after.get(task_id, [])))
        for task_id in abandoned.keys() | abandoned_after.keys()
        if task_id not in held
    }
    return held, abandoned


def _unacked(client: Redis, grace: float | None) -> tuple[set[str], dict[str, list[str]]]:
    """Task ids of the unacked deliveries: recent ones, and those older than `grace` by delivery tag."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(UNACKED_KEY)
        pipe.zrange(UNACKED_INDEX_KEY, 0, -1, withscores=True)
        entries, index = pipe.execute()
    delivered = {tag: at for tag, at in index}
    cutoff = None if grace is None else time.time() - grace
    held, abandoned = set(), {}
    for tag, raw in entries.items():
        task_id = _task_id(raw, unacked=True)
        # A delivery with no time in the index (being written, or by another kombu) counts as recent.
        if cutoff is not None and delivered.get(tag, math.inf) < cutoff:
            abandoned.setdefault(task_id, []).append(tag.decode())
        else:
            held.add(task_id)
    return held, abandoned


def _task_id(raw: bytes, *, unacked: bool = False) -> str:
    """The Celery task id (our experiment id) of a raw message; '' for anything unreadable."""
    try:
        message = json.loads(raw)
        return (message[0] if unacked else message)["headers"]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def _send(celery: Celery, experiment: dict) -> None:
    celery.send_task(RUN_TASK, args=[experiment["id"]], task_id=experiment["id"], queue=experiment["queue"])


def start(store: Store, celery: Celery, period: float, queued_grace: float) -> threading.Thread:
    """A daemon thread that looks for orphans every `period` seconds when it holds the lock, and for lost
    messages every `queued_grace` seconds."""

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(period):
            try:
                if store.redis.set(LOCK_KEY, "1", nx=True, px=int(period * 900)):
                    requeue_orphans(store, celery)
                # The broker's queues are read at most once per grace period, however long they are.
                if store.redis.set(LOST_CHECK_KEY, "1", nx=True, px=max(1, int(queued_grace * 1000))):
                    resend_lost(store, celery, queued_grace)
            except (RedisError, OperationalError) as error:  # Redis down: the next period tries again
                log.warning("sweep failed: %s", error)
            except Exception:
                log.exception("sweep failed")

    thread = threading.Thread(target=loop, name="gradtrace-sweeper", daemon=True)
    thread.start()
    return thread
