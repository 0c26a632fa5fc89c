"""`GET /metrics` on a real Redis with no worker: the counters the store keeps, queue depth, live workers."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.auth import tenant_id
from api.resources import EXTENSION
from shared.store import Store
from shared.sweeps import Sweeps
from worker.registry import Registry

SMALL = {"depth": 2, "width": 4, "steps": 5}


def scrape(client, **kwargs) -> dict[tuple, float]:
    """The samples of one scrape by (name, sorted labels)."""
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def submit(client, **spec) -> str:
    response = client.post("/api/v1/experiments", json={**SMALL, **spec})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def test_an_empty_service_shows_every_metric_at_zero(client):
    samples = scrape(client)
    assert value(samples, "gradtrace_experiments", status="queued") == 0
    assert value(samples, "gradtrace_experiments", status="running") == 0
    assert value(samples, "gradtrace_experiments_submitted_total") == 0
    for status in ("succeeded", "failed", "cancelled"):
        assert value(samples, "gradtrace_experiments_finished_total", status=status) == 0
    assert value(samples, "gradtrace_queue_depth", queue="cpu") == 0
    assert value(samples, "gradtrace_queue_depth", queue="gpu") == 0
    assert value(samples, "gradtrace_worker_nodes") == 0
    assert value(samples, "gradtrace_train_seconds_count", status="succeeded") == 0
    assert value(samples, "gradtrace_train_seconds_bucket", status="succeeded", le="+Inf") == 0


def test_submits_fill_the_queues_when_no_worker_takes_them(client):
    ids = [submit(client, seed=seed) for seed in range(3)]
    submit(client, device="cuda")
    samples = scrape(client)
    assert value(samples, "gradtrace_experiments_submitted_total") == 4
    assert value(samples, "gradtrace_experiments", status="queued") == 4
    assert value(samples, "gradtrace_queue_depth", queue="cpu") == 3
    assert value(samples, "gradtrace_queue_depth", queue="gpu") == 1
    assert value(samples, "gradtrace_queue_consumers", queue="cpu") == 0

    assert client.post(f"/api/v1/experiments/{ids[0]}/cancel").status_code == 202
    assert client.delete(f"/api/v1/experiments/{ids[1]}").status_code == 204
    samples = scrape(client)
    assert value(samples, "gradtrace_experiments", status="queued") == 2
    assert value(samples, "gradtrace_experiments_finished_total", status="cancelled") == 1
    # The broker still holds their messages, which a worker will take and drop.
    assert value(samples, "gradtrace_queue_depth", queue="cpu") == 3


def test_a_sweep_counts_every_point(client):
    response = client.post("/api/v1/sweeps", json={"base": SMALL, "grid": {"seed": [0, 1, 2]}})
    assert response.status_code == 202, response.get_json()
    samples = scrape(client)
    assert value(samples, "gradtrace_experiments_submitted_total") == 3
    assert value(samples, "gradtrace_experiments", status="queued") == 3


def test_runs_move_from_queued_to_running_to_the_histogram(client, store):
    """What a worker writes (claim, finish) moves the gauges, the counters and the histogram."""
    first, second, third = (submit(client, seed=seed) for seed in range(3))
    store.claim(first, "t1", lease_seconds=30, max_attempts=3)
    store.claim(second, "t2", lease_seconds=30, max_attempts=3)
    samples = scrape(client)
    assert value(samples, "gradtrace_experiments", status="queued") == 1
    assert value(samples, "gradtrace_experiments", status="running") == 2
    assert value(samples, "gradtrace_experiment_attempts_total") == 2

    store.finish(first, "t1", "succeeded", summary={"train_seconds": 0.3, "final_loss": 1.0})
    store.finish(second, "t2", "failed", error={"message": "boom"})
    assert store.requeue(third, "", handed_back=False) is False  # queued, not running: nothing to requeue
    samples = scrape(client)
    assert value(samples, "gradtrace_experiments", status="running") == 0
    assert value(samples, "gradtrace_experiments_finished_total", status="succeeded") == 1
    assert value(samples, "gradtrace_experiments_finished_total", status="failed") == 1
    assert value(samples, "gradtrace_train_seconds_count", status="succeeded") == 1
    assert value(samples, "gradtrace_train_seconds_sum", status="succeeded") == pytest.approx(0.3)
    assert value(samples, "gradtrace_train_seconds_bucket", status="succeeded", le="0.25") == 0
    assert value(samples, "gradtrace_train_seconds_bucket", status="succeeded", le="0.5") == 1
    assert value(samples, "gradtrace_train_seconds_bucket", status="succeeded", le="+Inf") == 1


def test_a_requeued_run_is_counted_and_queued_again(client, store):
    experiment_id = submit(client)
    store.claim(experiment_id, "t1", lease_seconds=30, max_attempts=3)
    assert store.requeue(experiment_id, "t1", handed_back=True)
    samples = scrape(client)
    assert value(samples, "gradtrace_experiments_requeued_total") == 1
    assert value(samples, "gradtrace_experiments", status="queued") == 1
    assert value(samples, "gradtrace_experiments", status="running") == 0


def test_live_workers_come_from_the_heartbeats(client, redis_client):
    node = {"node": "gradtrace-cpu-1@host", "hostname": "host", "pid": 1, "queues": ["cpu"],
            "concurrency": 2, "torch_threads": 1, "started_at": "2026-01-01T00:00:00Z"}
    idle, busy = Registry(redis_client, node, "cpu", [], pid=11), Registry(redis_client, node, "cpu", [], pid=12)
    idle.beat()
    busy.experiment = "e1"
    busy.beat()
    samples = scrape(client)
    assert value(samples, "gradtrace_worker_nodes") == 1
    assert value(samples, "gradtrace_worker_processes", state="busy") == 1
    assert value(samples, "gradtrace_worker_processes", state="idle") == 1
    assert value(samples, "gradtrace_queue_consumers", queue="cpu") == 2
    assert value(samples, "gradtrace_queue_consumers", queue="gpu") == 0
    busy.stop()
    assert value(scrape(client), "gradtrace_worker_nodes") == 1
    idle.stop()
    assert value(scrape(client), "gradtrace_worker_nodes") == 0


def test_every_api_process_and_a_restarted_one_read_the_same_numbers(client, redis_url):
    """The numbers live in Redis: another app (another gunicorn process, or after a restart) sees them."""
    submit(client)
    submit(client)
    other = create_app({"REDIS_URL": redis_url, "TESTING": True})
    try:
        assert scrape(other.test_client()) == scrape(client)
        assert value(scrape(other.test_client()), "gradtrace_experiments_submitted_total") == 2
    finally:
        other.extensions[EXTENSION].close()


def test_no_tenant_is_named(redis_url, redis_client):
    app = create_app({"REDIS_URL": redis_url, "TESTING": True, "API_TOKENS": "alice-token"})
    try:
        client = app.test_client()
        response = client.post("/api/v1/experiments", json=SMALL, headers={"Authorization": "Bearer alice-token"})
        assert response.status_code == 202
        text = client.get("/metrics").get_data(as_text=True)  # open without a token, like /healthz
        assert "gradtrace_experiments_submitted_total 1.0" in text
        assert tenant_id("alice-token") not in text and "alice" not in text and "tenant" not in text
    finally:
        app.extensions[EXTENSION].close()


def test_a_metrics_token_closes_it(redis_url, redis_client):
    app = create_app({"REDIS_URL": redis_url, "TESTING": True, "METRICS_TOKEN": "scraper-secret"})
    try:
        client = app.test_client()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic scraper-secret"}):
            response = client.get("/metrics", headers=headers)
            assert response.status_code == 401
            assert response.get_json()["error"]["code"] == "unauthorized"
            assert "scraper-secret" not in response.get_data(as_text=True)
        scrape(client, headers={"Authorization": "Bearer scraper-secret"})
        assert client.get("/healthz").status_code == 200
    finally:
        app.extensions[EXTENSION].close()


def test_redis_down_is_503_json(down_app):
    response = down_app.test_client().get("/metrics")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "redis_unavailable"


def test_store_counts_what_the_worker_writes_without_the_api(redis_client):
    """The counters are kept by the store itself: sweeps, cancels and cached answers included."""
    store = Store(redis_client)
    Sweeps(store).create("s1", base=SMALL, grid={"seed": [0, 1]}, name=None, tenant="",
                         experiments=[("a", {"seed": 0}, {**SMALL, "seed": 0}, "cpu"),
                                      ("b", {"seed": 1}, {**SMALL, "seed": 1}, "cpu")])
    assert store.cancel_many(["a", "b"]) == ["cancelled", "cancelled"]
    stats = {name.decode(): int(count) for name, count in redis_client.hgetall("gradtrace:stats").items()}
    assert stats == {"submitted": 2, "finished:cancelled": 2}
