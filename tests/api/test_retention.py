"""Retention with a short TTL: finished experiments, their traces, cache entries and finished sweeps expire.

The worker's writes are made with a real Store configured as a worker's is (the same retention).
"""

import time
from collections.abc import Iterator

import pytest
from flask import Flask

from api.app import create_app
from api.resources import EXTENSION
from shared.cache import CACHE_PREFIX
from shared.store import Store, exp_key, index_key, packed_key
from shared.sweeps import sweep_index_key, sweep_key
from tests.api.test_cache import SPEC, run_as_worker

URL = "/api/v1/experiments"
SWEEPS = "/api/v1/sweeps"
SMALL = {"depth": 2, "width": 8, "steps": 3}
TTL = 0.3


@pytest.fixture
def app(redis_url, redis_client) -> Iterator[Flask]:
    app = create_app({"REDIS_URL": redis_url, "TESTING": True, "RETENTION_SECONDS": TTL})
    yield app
    app.extensions[EXTENSION].close()


@pytest.fixture
def store(redis_client) -> Store:
    """The Store as a worker builds it: with the service's retention."""
    return Store(redis_client, retention_seconds=TTL)


def expire() -> None:
    time.sleep(TTL + 0.1)


def finish(store: Store, experiment_id: str, status: str = "succeeded") -> None:
    assert store.claim(experiment_id, "lease", lease_seconds=30, max_attempts=3)[0] == "claimed"
    assert store.finish(experiment_id, "lease", status, summary={"final_loss": 1.0})


def test_a_finished_experiment_and_its_trace_expire_and_answer_404(client, store, redis_client):
    done = run_as_worker(client, store, SPEC)
    waiting = client.post(URL, json=SMALL).get_json()["id"]
    assert 0 < redis_client.pttl(exp_key(done)) <= TTL * 1000
    assert 0 < redis_client.pttl(packed_key(done)) <= TTL * 1000
    assert redis_client.pttl(exp_key(waiting)) == -1  # a queued run never expires
    expire()
    assert not redis_client.exists(exp_key(done), packed_key(done))
    for method, path in [("GET", ""), ("GET", "/traces"), ("GET", "/traces?format=npz"),
                         ("GET", "/traces?format=csv"), ("POST", "/cancel"), ("DELETE", "")]:
        response = client.open(f"{URL}/{done}{path}", method=method)
        assert response.status_code == 404, (method, path)
        assert response.get_json()["error"]["code"] == "not_found"
    assert [item["id"] for item in client.get(URL).get_json()["experiments"]] == [waiting]
    assert redis_client.zrange(index_key(""), 0, -1) == [waiting.encode()]  # the list cleaned the index
    assert client.get(f"{URL}/{waiting}").get_json()["status"] == "queued"


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_failed_and_cancelled_runs_expire_too(client, store, status):
    experiment_id = client.post(URL, json=SMALL).get_json()["id"]
    finish(store, experiment_id, status)
    cancelled = client.post(URL, json=SMALL).get_json()["id"]
    assert client.post(f"{URL}/{cancelled}/cancel").status_code == 202
    assert client.get(f"{URL}/{experiment_id}").status_code == 200
    expire()
    assert client.get(f"{URL}/{experiment_id}").status_code == 404
    assert client.get(f"{URL}/{cancelled}").status_code == 404


def test_a_finished_record_that_missed_its_ttl_reads_as_expired_and_is_removed(client, store, redis_client):
    experiment_id = run_as_worker(client, store, SPEC)
    redis_client.persist(exp_key(experiment_id))  # as if the worker died between its finish and the TTL
    redis_client.persist(packed_key(experiment_id))
    expire()
    assert client.get(f"{URL}/{experiment_id}").status_code == 404
    assert not redis_client.exists(exp_key(experiment_id), packed_key(experiment_id))
    assert redis_client.zcard(index_key("")) == 0


def test_lists_skip_expired_records_that_missed_their_ttl(client, store, redis_client):
    stale = run_as_worker(client, store, SPEC)
    redis_client.persist(exp_key(stale))
    fresh = client.post(URL, json=SMALL).get_json()["id"]
    expire()
    assert [item["id"] for item in client.get(f"{URL}?limit=1").get_json()["experiments"]] == [fresh]
    assert client.get(f"{URL}?status=succeeded").get_json() == {"experiments": [], "next_cursor": None}
    assert not redis_client.exists(exp_key(stale)) and redis_client.zcard(index_key("")) == 1


def test_sampling_cleans_the_index_of_a_tenant_that_never_lists(client, store, redis_client):
    ids = [client.post(URL, json=SMALL).get_json()["id"] for _ in range(6)]
    for experiment_id in ids[:5]:
        finish(store, experiment_id)
    redis_client.persist(exp_key(ids[0]))
    expire()
    store.prune("")
    assert redis_client.zrange(index_key(""), 0, -1) == [ids[5].encode()]
    assert not redis_client.exists(exp_key(ids[0]))


def test_the_result_cache_never_points_at_an_expired_run(client, store, redis_client):
    source = run_as_worker(client, store, SPEC)
    (entry,) = redis_client.keys(f"{CACHE_PREFIX}*")
    assert 0 < redis_client.pttl(entry) <= TTL * 1000
    copy = client.post(URL, json=SPEC).get_json()
    assert copy["summary"]["cached_from"] == source
    # The copy keeps its own retention, on its record and its trace alike.
    assert redis_client.pttl(exp_key(copy["id"])) > 0 and redis_client.pttl(packed_key(copy["id"])) > 0
    redis_client.persist(entry)
    redis_client.persist(exp_key(source))  # the source past its retention, its TTL not fired yet
    expire()
    again = client.post(URL, json=SPEC).get_json()
    assert again["status"] == "queued" and again["summary"] is None
    assert client.get(f"{URL}/{copy['id']}").status_code == 404


def test_a_finished_sweep_expires_with_its_last_experiment(client, store, redis_client):
    done = client.post(SWEEPS, json={"base": SMALL, "grid": {"seed": [0, 1]}}).get_json()
    half = client.post(SWEEPS, json={"base": SMALL, "grid": {"seed": [2, 3]}}).get_json()
    for experiment_id in [*done["experiments"], half["experiments"][0]]:
        finish(store, experiment_id)
    assert client.get(f"{SWEEPS}/{done['id']}").get_json()["status"] == "finished"
    assert 0 < redis_client.pttl(sweep_key(done["id"])) <= TTL * 1000  # told to Redis once it was read finished
    expire()
    assert client.get(f"{SWEEPS}/{done['id']}").status_code == 404
    for method in ("POST", "DELETE"):
        assert client.open(f"{SWEEPS}/{done['id']}{'/cancel' if method == 'POST' else ''}", method=method).status_code == 404
    listed = client.get(SWEEPS).get_json()["sweeps"]
    assert [sweep["id"] for sweep in listed] == [half["id"]]
    assert listed[0]["counts"]["queued"] == 1 and listed[0]["counts"]["succeeded"] == 0
    assert [row["id"] for row in client.get(f"{SWEEPS}/{half['id']}").get_json()["experiments"]] == [half["experiments"][1]]
    assert redis_client.zrange(sweep_index_key(""), 0, -1) == [half["id"].encode()]


def test_an_unread_finished_sweep_is_removed_by_a_later_sweep(client, store, redis_client):
    old = client.post(SWEEPS, json={"base": SMALL, "grid": {"seed": [0]}}).get_json()
    finish(store, old["experiments"][0])
    redis_client.persist(exp_key(old["experiments"][0]))
    expire()
    client.post(SWEEPS, json={"base": SMALL, "grid": {"seed": [1]}})
    assert not redis_client.exists(sweep_key(old["id"]), exp_key(old["experiments"][0]))


def test_nothing_expires_with_retention_off(redis_url, redis_client):
    app = create_app({"REDIS_URL": redis_url, "TESTING": True, "RETENTION_SECONDS": 0})
    try:
        client, store = app.test_client(), Store(redis_client)
        experiment_id = client.post(URL, json=SMALL).get_json()["id"]
        finish(store, experiment_id)
        assert redis_client.pttl(exp_key(experiment_id)) == -1
        assert client.get(f"{URL}/{experiment_id}").status_code == 200
    finally:
        app.extensions[EXTENSION].close()
