"""GET /api/v1/workers from the heartbeats that worker/registry.py writes, on the tests' real Redis."""

import json

import pytest
from flask import g, request

from shared.store import WORKERS_KEY, worker_key
from worker import registry
from worker.registry import TTL_SECONDS, Registry, gpu_names, node_env

URL = "/api/v1/workers"


def node(name: str, queues=("cpu",), concurrency: int = 2) -> dict:
    return json.loads(node_env(name, list(queues), concurrency, 1))


def test_no_heartbeats_no_workers(client):
    assert client.get(URL).get_json() == {"workers": []}


def test_processes_are_grouped_by_node(client, redis_client):
    cpu, gpu = node("gradtrace-cpu-1@a"), node("gradtrace-gpu-2@b", queues=("gpu",), concurrency=1)
    Registry(redis_client, cpu, "cpu", [], pid=11).beat()
    Registry(redis_client, cpu, "cpu", [], pid=12).beat()
    Registry(redis_client, gpu, "cuda", ["NVIDIA H200"], pid=21).beat()
    workers = client.get(URL).get_json()["workers"]
    assert [worker["name"] for worker in workers] == ["gradtrace-cpu-1@a", "gradtrace-gpu-2@b"]
    first, second = workers
    assert first["queues"] == ["cpu"] and first["concurrency"] == 2 and first["torch_threads"] == 1
    assert first["device"] == "cpu" and first["gpus"] == []
    assert first["hostname"] == cpu["hostname"] and first["pid"] == cpu["pid"]
    assert first["started_at"] == cpu["started_at"] and first["last_seen"]
    assert [process["pid"] for process in first["processes"]] == [11, 12]
    assert first["busy"] == 0 and first["active_experiments"] == []
    assert second["queues"] == ["gpu"] and second["device"] == "cuda" and second["gpus"] == ["NVIDIA H200"]


def test_a_heartbeat_expires_and_its_node_drops_out(client, redis_client):
    beat = Registry(redis_client, node("gradtrace-cpu-1@a"), "cpu", [], pid=11)
    beat.beat()
    assert 0 < redis_client.ttl(beat.key) <= TTL_SECONDS
    redis_client.delete(beat.key)  # what the TTL does when the process stops beating
    assert client.get(URL).get_json() == {"workers": []}
    assert redis_client.scard(WORKERS_KEY) == 0


def test_a_clean_stop_leaves_at_once(client, redis_client):
    beat = Registry(redis_client, node("gradtrace-cpu-1@a"), "cpu", [], pid=11)
    beat.beat()
    beat.stop()
    assert client.get(URL).get_json() == {"workers": []}
    assert not redis_client.exists(worker_key("gradtrace-cpu-1@a", 11))


def test_the_thread_beats_at_once(client, redis_client):
    beat = Registry(redis_client, node("gradtrace-cpu-1@a"), "cpu", [], pid=11)
    thread = beat.start()
    try:
        for _ in range(100):
            if client.get(URL).get_json()["workers"]:
                break
            thread.join(0.02)
        assert [worker["name"] for worker in client.get(URL).get_json()["workers"]] == ["gradtrace-cpu-1@a"]
    finally:
        beat.stop()
        thread.join(5)
    assert not thread.is_alive()


def test_active_experiments_are_shown_to_their_tenant_only(app, client, redis_client):
    @app.before_request
    def set_tenant():
        g.tenant = request.headers.get("X-Test-Tenant", "")

    alice = {"headers": {"X-Test-Tenant": "alice"}}
    experiment_id = client.post("/api/v1/experiments", json={}, **alice).get_json()["id"]
    beat = Registry(redis_client, node("gradtrace-cpu-1@a"), "cpu", [], pid=11)
    idle = Registry(redis_client, node("gradtrace-cpu-1@a"), "cpu", [], pid=12)
    idle.beat()
    with beat.running(experiment_id):
        (mine,) = client.get(URL, **alice).get_json()["workers"]
        assert mine["active_experiments"] == [experiment_id] and mine["busy"] == 1
        assert [(p["pid"], p["busy"], p["experiment"]) for p in mine["processes"]] == [
            (11, True, experiment_id), (12, False, None)
        ]
        (theirs,) = client.get(URL).get_json()["workers"]
        assert theirs["active_experiments"] == [] and theirs["busy"] == 1
        assert theirs["processes"][0] == {**theirs["processes"][0], "busy": True, "experiment": None}
    (after,) = client.get(URL, **alice).get_json()["workers"]
    assert after["active_experiments"] == [] and after["busy"] == 0


def test_a_finished_experiment_is_not_active(client, redis_client, store):
    experiment_id = client.post("/api/v1/experiments", json={}).get_json()["id"]
    assert store.claim(experiment_id, "token", lease_seconds=30, max_attempts=3)[0] == "claimed"
    beat = Registry(redis_client, node("gradtrace-cpu-1@a"), "cpu", [], pid=11)
    with beat.running(experiment_id):
        assert client.get(URL).get_json()["workers"][0]["active_experiments"] == [experiment_id]
        store.finish(experiment_id, "token", "succeeded")
        assert client.get(URL).get_json()["workers"][0]["active_experiments"] == []


def test_running_without_a_registry_does_nothing():
    assert registry._current is None
    with registry.running("some-id"):
        pass


def test_node_env_holds_the_node_facts():
    facts = node("gradtrace-cpu-7@host", queues=("cpu", "gpu"), concurrency=3)
    assert facts["node"] == "gradtrace-cpu-7@host" and facts["queues"] == ["cpu", "gpu"]
    assert facts["concurrency"] == 3 and facts["torch_threads"] == 1
    assert isinstance(facts["pid"], int) and facts["started_at"].endswith("Z")


@pytest.fixture
def fake_gpus(tmp_path):
    """The layout of /proc/driver/nvidia/gpus: one folder per PCI bus id, an `information` file each."""
    for bus, model in [("0000:1b:00.0", "NVIDIA H200"), ("0000:0a:00.0", "NVIDIA A100-SXM4-80GB")]:
        (tmp_path / bus).mkdir()
        (tmp_path / bus / "information").write_text(f"Model: \t\t {model}\nIRQ:   \t\t 140\nBus Location: \t {bus}\n")
    return tmp_path


@pytest.mark.parametrize(
    ("visible", "names"),
    [
        (None, ["NVIDIA A100-SXM4-80GB", "NVIDIA H200"]),
        ("1", ["NVIDIA H200"]),
        ("1,0", ["NVIDIA H200", "NVIDIA A100-SXM4-80GB"]),
        ("", []),
        ("-1", []),
        ("0,-1,1", ["NVIDIA A100-SXM4-80GB"]),
        ("GPU-5f3c8f3e-aaaa", ["NVIDIA A100-SXM4-80GB"]),
    ],
)
def test_gpu_names_from_proc_without_cuda(fake_gpus, visible, names):
    assert gpu_names(fake_gpus, visible) == names


def test_no_driver_no_gpus(tmp_path):
    assert gpu_names(tmp_path / "absent") == []


def test_no_beat_after_a_stop(client, redis_client):
    beat = Registry(redis_client, node("gradtrace-cpu-1@a"), "cpu", [], pid=11)
    beat.beat()
    beat.stop()
    beat.beat()  # a beat of the thread that was already on its way
    assert client.get(URL).get_json() == {"workers": []}
