"""The runner on a real Redis: one round trip claims the run and brings its spec, the lease is kept by one
thread per process, and an attempt that lost its lease still writes nothing."""

import threading
import time

import numpy as np
import pytest

from shared.settings import Settings
from shared.spec import ExperimentSpec
from shared.store import Store, lease_key
from shared.traces import TraceChunk
from worker.runner import LeaseKeeper, run

TINY = ExperimentSpec(depth=2, width=8, steps=3, batch_size=16)


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


@pytest.fixture
def settings() -> Settings:
    return Settings(lease_seconds=30, max_attempts=3, flush_seconds=0.5)


def lease_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "gradtrace-lease"]


def test_a_run_claims_trains_and_finishes(store, settings, one_thread, redis_client):
    store.create("e1", TINY.model_dump(mode="json"))
    assert run(store, settings, LeaseKeeper(store, 30), "e1") == "succeeded"
    record = store.get("e1")
    assert record["status"] == "succeeded" and record["summary"]["attempts"] == 1
    assert record["summary"]["steps_run"] == 3 and record["summary"]["diagnosis"]["verdict"]
    assert record["layers"][-1]["name"] == "output"
    _, arrays = store.read_traces("e1", ["loss"])
    assert arrays["step"].tolist() == [0, 1, 2]
    assert not redis_client.exists(lease_key("e1"))


def test_a_stale_attempt_is_fenced_out_of_the_new_one(store, settings, one_thread, redis_client):
    store.create("e1", TINY.model_dump(mode="json"))
    assert store.claim("e1", "dead", lease_seconds=30, max_attempts=3).outcome == "claimed"
    assert run(store, settings, LeaseKeeper(store, 30), "e1") == "busy"  # the lease still stands
    redis_client.delete(lease_key("e1"))  # the first worker died and its lease lapsed
    assert run(store, settings, LeaseKeeper(store, 30), "e1") == "succeeded"
    stale = TraceChunk({"step": np.array([7]), "loss": np.array([9.0])})
    assert store.append_chunk("e1", "dead", stale, 8) == -1
    assert not store.finish("e1", "dead", "failed", error={"message": "zombie"})
    record = store.get("e1")
    assert record["status"] == "succeeded" and record["summary"]["attempts"] == 2 and record["attempts"] == 2
    _, arrays = store.read_traces("e1", ["loss"])
    assert arrays["step"].tolist() == [0, 1, 2] and 9.0 not in arrays["loss"].tolist()


def test_the_keeper_renews_what_it_holds_and_nothing_after(store, redis_client):
    store.create("e1", TINY.model_dump(mode="json"))
    lease = 0.3
    keeper = LeaseKeeper(store, lease)
    assert store.claim("e1", "a", lease_seconds=lease, max_attempts=3).outcome == "claimed"
    with keeper.hold("e1", "a"):
        time.sleep(3 * lease)  # three leases long: alive only if renewed
        assert redis_client.get(lease_key("e1")) == b"a"
    time.sleep(2 * lease)
    assert not redis_client.exists(lease_key("e1"))  # released by the keeper: it lapsed


def test_the_keeper_never_revives_another_attempts_lease(store, redis_client):
    store.create("e1", TINY.model_dump(mode="json"))
    keeper = LeaseKeeper(store, 0.3)
    store.claim("e1", "a", lease_seconds=0.3, max_attempts=3)
    with keeper.hold("e1", "a"):
        redis_client.set(lease_key("e1"), "b", px=200)  # a new attempt took over
        time.sleep(0.5)
        assert not redis_client.exists(lease_key("e1"))  # b's lease lapsed on its own; a's keeper left it be


def test_one_keeper_thread_serves_every_run(store, settings, one_thread):
    before = len(lease_threads())
    keeper = LeaseKeeper(store, 30)
    for experiment_id in ("e1", "e2", "e3"):
        store.create(experiment_id, TINY.model_dump(mode="json"))
        assert run(store, settings, keeper, experiment_id) == "succeeded"
    assert len(lease_threads()) == before + 1
