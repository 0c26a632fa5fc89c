"""The sweeper on a real Redis and a real Celery sender (no worker): what it sends, and what it leaves alone."""

import json
import time

import pytest

from shared.celery_app import RUN_TASK, make_celery
from shared.spec import ExperimentSpec
from shared.store import QUEUED_KEY, Store, lease_key
from worker.sweeper import broker_task_ids, sweep

SPEC = ExperimentSpec(depth=1, width=2, steps=2).model_dump(mode="json")


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


@pytest.fixture
def celery(redis_url):
    app = make_celery(redis_url)
    yield app
    app.close()


def messages(redis_client, queue: str) -> list[str]:
    return sorted(json.loads(raw)["headers"]["id"] for raw in redis_client.lrange(queue, 0, -1))


def test_the_broker_is_read_in_the_queue_and_in_unacked(redis_client, celery):
    celery.send_task(RUN_TASK, args=["a"], task_id="a", queue="cpu")
    raw = redis_client.rpop("cpu")  # delivered to a worker, not yet acknowledged
    redis_client.hset("unacked", "tag-1", json.dumps([json.loads(raw), "", "cpu"]))
    celery.send_task(RUN_TASK, args=["b"], task_id="b", queue="cpu")
    redis_client.lpush("cpu", b"not a message")
    assert broker_task_ids(redis_client, ["cpu"]) == ({"a", "b", ""}, {})


def deliver(redis_client, queue: str, tag: str, at: float) -> None:
    """What kombu does when a worker takes a message: off the queue, into unacked with the delivery's time."""
    raw = redis_client.rpop(queue)
    redis_client.hset("unacked", tag, json.dumps([json.loads(raw), "", queue]))
    redis_client.zadd("unacked_index", {tag: at})


def test_a_delivery_left_unacked_by_a_dead_worker_is_sent_again(store, celery, redis_client):
    store.create("taken", SPEC)
    store.create("abandoned", SPEC)
    for experiment_id in ("taken", "abandoned"):
        celery.send_task(RUN_TASK, args=[experiment_id], task_id=experiment_id, queue="cpu")
    deliver(redis_client, "cpu", "tag-taken", time.time())  # a live worker took it a moment ago
    deliver(redis_client, "cpu", "tag-abandoned", time.time() - 120)  # its worker died two minutes ago
    assert sweep(store, celery, queued_grace=60) == []  # both were (re)queued within the grace period
    redis_client.zadd(QUEUED_KEY, {"taken": 0, "abandoned": 0})  # queued long ago
    assert sweep(store, celery, queued_grace=60) == ["abandoned"]
    assert messages(redis_client, "cpu") == ["abandoned"]
    assert redis_client.hkeys("unacked") == [b"tag-taken"]
    assert redis_client.zrange("unacked_index", 0, -1) == [b"tag-taken"]
    assert sweep(store, celery, queued_grace=60) == []  # sent once


def test_a_queued_experiment_without_a_message_is_sent_once(store, celery, redis_client):
    store.create("lost", SPEC)
    store.create("waiting", SPEC)
    celery.send_task(RUN_TASK, args=["waiting"], task_id="waiting", queue="cpu")
    assert sweep(store, celery, queued_grace=60) == []  # both are within the grace period
    assert sweep(store, celery, queued_grace=0) == ["lost"]
    assert sweep(store, celery, queued_grace=0) == []  # its message is in the queue now
    assert messages(redis_client, "cpu") == ["lost", "waiting"]


def test_an_orphan_is_requeued_then_sent_once(store, celery, redis_client):
    store.create("orphan", SPEC)
    store.claim("orphan", "dead", lease_seconds=30, max_attempts=3)
    assert sweep(store, celery, queued_grace=0) == []  # leased: its worker may be alive
    redis_client.delete(lease_key("orphan"))
    assert sweep(store, celery, queued_grace=0) == ["orphan"]
    assert store.get("orphan")["status"] == "queued"
    assert sweep(store, celery, queued_grace=0) == []
    assert messages(redis_client, "cpu") == ["orphan"]
