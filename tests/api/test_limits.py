"""Per-tenant limits in Redis: the rate limit (429 with Retry-After) and the cap of unfinished experiments (409)."""

import time
from collections.abc import Iterator

import pytest
from flask import Flask

from api.auth import tenant_id
from api.resources import EXTENSION
from shared.quotas import active_key
from shared.store import index_key
from tests.api.test_cache import messages
from tests.api.test_tenants import ALICE, AS_ALICE, AS_BOB, SMALL, token_app

URL = "/api/v1/experiments"
SWEEPS = "/api/v1/sweeps"


@pytest.fixture
def apps(redis_url, redis_client) -> Iterator[list[Flask]]:
    """Make apps on the tests' Redis, closed at the end: two of them stand for two gunicorn processes."""
    made = []

    def make(**config) -> Flask:
        made.append(token_app(redis_url, **config))
        return made[-1]

    yield make
    for app in made:
        app.extensions[EXTENSION].close()


def test_a_burst_over_the_limit_gets_429_with_retry_after(apps):
    client = apps(RATE_LIMIT=0.5, RATE_BURST=3).test_client()
    statuses = [client.get(URL, headers=AS_ALICE).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    refused = client.get(URL, headers=AS_ALICE)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "2"  # one request's worth at 0.5 a second
    error = refused.get_json()["error"]
    assert error["code"] == "rate_limited" and "0.5 requests a second" in error["message"]
    assert error["details"] == [] and ALICE not in refused.get_data(as_text=True)
    # Another token has a bucket of its own; the probes are not limited.
    assert client.get(URL, headers=AS_BOB).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_the_limit_holds_across_processes_and_refills(apps):
    first = apps(RATE_LIMIT=2, RATE_BURST=4).test_client()
    second = apps(RATE_LIMIT=2, RATE_BURST=4).test_client()
    assert [first.get(URL, headers=AS_ALICE).status_code for _ in range(4)] == [200] * 4
    assert second.get(URL, headers=AS_ALICE).status_code == 429  # the same bucket, in Redis
    time.sleep(0.6)  # 2 a second: one request's worth, and some
    assert second.get(URL, headers=AS_ALICE).status_code == 200


def test_a_refused_request_does_nothing(apps, redis_client):
    client = apps(RATE_LIMIT=0.1, RATE_BURST=1).test_client()
    assert client.post(URL, json=SMALL, headers=AS_ALICE).status_code == 202
    assert client.post(URL, json=SMALL, headers=AS_ALICE).status_code == 429
    assert client.post(SWEEPS, json={"base": SMALL, "grid": {"seed": [1, 2]}}, headers=AS_ALICE).status_code == 429
    assert len(messages(redis_client)) == 1 and redis_client.keys("gradtrace:sweep:*") == []


def test_the_limit_can_be_turned_off(apps):
    client = apps(RATE_LIMIT=0, RATE_BURST=1).test_client()
    assert {client.get(URL, headers=AS_ALICE).status_code for _ in range(30)} == {200}


def test_a_submit_over_the_cap_is_refused_and_nothing_is_queued(apps, store, redis_client):
    client = apps(MAX_QUEUED=3).test_client()
    first = [client.post(URL, json=SMALL, headers=AS_ALICE).get_json()["id"] for _ in range(2)]
    sweep = client.post(SWEEPS, json={"base": SMALL, "grid": {"seed": [1, 2]}}, headers=AS_ALICE)
    assert sweep.status_code == 409
    error = sweep.get_json()["error"]
    assert error["code"] == "queue_full" and "cap is 3" in error["message"] and "would add 2" in error["message"]
    assert redis_client.keys("gradtrace:sweep:*") == [] and messages(redis_client) == first
    assert client.get(URL, headers=AS_ALICE).get_json()["experiments"].__len__() == 2

    third = client.post(URL, json=SMALL, headers=AS_ALICE)
    assert third.status_code == 202
    refused = client.post(URL, json=SMALL, headers=AS_ALICE)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "queue_full"
    assert len(messages(redis_client)) == 3
    # Another token has its own cap.
    assert client.post(URL, json=SMALL, headers=AS_BOB).status_code == 202

    # A finished run and a cancelled one free their places; a running one keeps its own.
    assert store.claim(first[0], "lease", lease_seconds=30, max_attempts=3)[0] == "claimed"
    assert client.post(URL, json=SMALL, headers=AS_ALICE).status_code == 409
    assert store.finish(first[0], "lease", "succeeded", summary={})
    assert client.post(f"{URL}/{first[1]}/cancel", headers=AS_ALICE).status_code == 202
    assert client.post(SWEEPS, json={"base": SMALL, "grid": {"seed": [1, 2]}}, headers=AS_ALICE).status_code == 202
    assert client.post(URL, json=SMALL, headers=AS_ALICE).status_code == 409


def test_deleted_experiments_free_their_places_once_the_grace_is_over(apps, redis_client, monkeypatch):
    app = apps(MAX_QUEUED=2)
    client = app.test_client()
    ids = [client.post(URL, json=SMALL, headers=AS_ALICE).get_json()["id"] for _ in range(2)]
    for experiment_id in ids:
        assert client.delete(f"{URL}/{experiment_id}", headers=AS_ALICE).status_code == 204
    # A reservation without a record is a submit on its way, for a grace period.
    assert client.post(URL, json=SMALL, headers=AS_ALICE).status_code == 409
    monkeypatch.setattr(app.extensions[EXTENSION].queue_cap, "GRACE_SECONDS", 0)
    assert client.post(URL, json=SMALL, headers=AS_ALICE).status_code == 202
    assert redis_client.zcard(active_key(tenant_id(ALICE))) == 1  # the deleted ones' places were dropped


def test_the_cap_holds_without_tokens_too(redis_url, redis_client):
    from api.app import create_app

    app = create_app({"REDIS_URL": redis_url, "TESTING": True, "MAX_QUEUED": 1})
    try:
        client = app.test_client()
        assert client.post(URL, json=SMALL).status_code == 202
        assert client.post(URL, json=SMALL).status_code == 409
        assert redis_client.zcard(index_key("")) == 1
    finally:
        app.extensions[EXTENSION].close()
