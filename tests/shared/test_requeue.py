"""The store's side of delivery through faults: orphans and hand-backs go back to `queued` with a clean
trace, the queued set tells the sweeper who is waiting, and appends are safe to retry."""

import numpy as np
import pytest

from shared.spec import ExperimentSpec
from shared.store import QUEUED_KEY, RUNNING_KEY, Store, lease_key, trace_key
from shared.traces import TraceChunk


def chunk(first_step: int, rows: int, value: float) -> TraceChunk:
    return TraceChunk({"step": np.arange(first_step, first_step + rows), "loss": np.full(rows, value)})


@pytest.fixture
def store(redis_client) -> Store:
    store = Store(redis_client)
    store.create("e1", ExperimentSpec(depth=2).model_dump(mode="json"))
    return store


def claim(store: Store, token: str, max_attempts: int = 3) -> tuple:
    return store.claim("e1", token, lease_seconds=30, max_attempts=max_attempts)[:2]


def test_a_new_experiment_waits_in_the_queued_set_until_claimed(store, redis_client):
    assert redis_client.zscore(QUEUED_KEY, "e1") is not None
    assert store.stale_queued(0) == [{"id": "e1", "queue": "cpu"}]
    assert store.stale_queued(60) == []  # younger than the grace period
    claim(store, "a")
    assert redis_client.zscore(QUEUED_KEY, "e1") is None
    assert store.stale_queued(0) == []


def test_stale_queued_drops_what_is_no_longer_queued(store, redis_client):
    store.request_cancel("e1")
    assert store.stale_queued(0) == []
    assert redis_client.zcard(QUEUED_KEY) == 0


def test_an_orphan_goes_back_to_queued_with_a_clean_trace(store, redis_client):
    claim(store, "a")
    store.append_chunk("e1", "a", chunk(0, 4, 1.0), 4, rows_before=0)
    assert not store.requeue("e1")  # its lease still stands: the worker may be alive
    redis_client.delete(lease_key("e1"))
    assert store.requeue("e1")
    record = store.get("e1")
    assert (record["status"], record["rows"], record["step"], record["attempts"]) == ("queued", 0, 0, 1)
    assert not redis_client.exists(trace_key("e1", "loss"))
    assert not redis_client.sismember(RUNNING_KEY, "gradtrace:exp:e1")
    assert redis_client.zscore(QUEUED_KEY, "e1") is not None
    assert not store.requeue("e1")  # once: it is queued now
    assert claim(store, "b") == ("claimed", 2)


def test_a_hand_back_is_fenced_by_the_token_and_not_counted(store, redis_client):
    claim(store, "a")
    assert not store.requeue("e1", "intruder", handed_back=True)
    assert store.requeue("e1", "a", handed_back=True)
    assert not redis_client.exists(lease_key("e1"))  # the next delivery claims at once
    assert store.get("e1")["attempts"] == 0
    assert claim(store, "b", max_attempts=1) == ("claimed", 1)


def test_the_cap_counts_attempts_that_ran(store, redis_client):
    for attempt in (1, 2):
        assert claim(store, f"t{attempt}", max_attempts=2) == ("claimed", attempt)
        redis_client.delete(lease_key("e1"))
        assert store.requeue("e1")
    assert claim(store, "t3", max_attempts=2) == ("exhausted", 0)
    record = store.get("e1")
    assert record["status"] == "failed" and record["attempts"] == 2
    assert "2 times" in record["error"]["message"]


def test_a_retried_append_is_not_doubled_and_a_gap_ends_the_attempt(store, redis_client):
    claim(store, "a")
    assert store.append_chunk("e1", "a", chunk(0, 3, 1.0), 3, rows_before=0) == 0
    assert store.append_chunk("e1", "a", chunk(0, 3, 1.0), 3, rows_before=0) == 0  # the reply was lost; sent again
    assert store.append_chunk("e1", "a", chunk(3, 2, 1.0), 5, rows_before=3) == 0
    assert store.append_chunk("e1", "a", chunk(9, 2, 1.0), 11, rows_before=9) == -1  # rows 5..8 never arrived
    _, arrays = store.read_traces("e1", ["loss"])
    assert arrays["step"].tolist() == [0, 1, 2, 3, 4]
