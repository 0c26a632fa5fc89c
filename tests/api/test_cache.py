"""The result cache at submit: results written as a worker writes them, then the same inputs submitted again.

No worker runs here: a hit must be answered by the API alone, and a miss must leave a run message.
"""

import io
import json

import numpy as np
import pytest
from flask import g, request

from shared.cache import ResultCache
from shared.spec import ExperimentSpec
from shared.traces import LAYER_METRICS, STEP_METRICS, TraceChunk

URL = "/api/v1/experiments"
SPEC = {"depth": 2, "width": 8, "steps": 3, "seed": 7}
LAYERS = [{"name": "hidden.0", "kind": "linear"}, {"name": "hidden.1", "kind": "linear"},
          {"name": "output", "kind": "linear"}]


def trace_chunk(rows: int) -> TraceChunk:
    rng = np.random.default_rng(0)
    arrays = {"step": np.arange(rows, dtype=np.int32), "clipped": np.zeros(rows, dtype=np.uint8)}
    arrays.update({name: rng.random(rows, dtype=np.float32) for name in STEP_METRICS if name != "clipped"})
    arrays.update({name: rng.random((rows, len(LAYERS)), dtype=np.float32) for name in LAYER_METRICS})
    arrays["loss"][-1] = np.nan  # kept as null in JSON, as NaN in a copy
    return TraceChunk(arrays)


def run_as_worker(client, store, spec: dict, headers: dict | None = None) -> str:
    """Submit, then claim, trace, finish and name the result as the worker's runner does."""
    experiment_id = client.post(URL, json=spec, headers=headers).get_json()["id"]
    assert store.claim(experiment_id, "token", lease_seconds=30, max_attempts=3)[0] == "claimed"
    assert store.update(experiment_id, "token", layers=LAYERS, device="cpu")
    steps = ExperimentSpec.model_validate(spec).steps
    assert store.append_chunk(experiment_id, "token", trace_chunk(steps), steps) == 0
    summary = {"final_loss": 0.25, "train_seconds": 1.5, "device": "cpu", "attempts": 1,
               "diagnosis": {"verdict": "healthy", "reasons": [], "advice": []}, "cached": False, "cached_from": None}
    assert store.finish(experiment_id, "token", "succeeded", summary=summary, device="cpu")
    ResultCache(store).remember(experiment_id, ExperimentSpec.model_validate(spec), "cpu")
    return experiment_id


def messages(redis_client, queue: str = "cpu") -> list[str]:
    """The ids of the run messages waiting on a queue, oldest first."""
    return [json.loads(raw)["headers"]["id"] for raw in reversed(redis_client.lrange(queue, 0, -1))]


def test_the_same_inputs_are_answered_at_once_with_a_copy_of_the_traces(client, store, redis_client):
    source = run_as_worker(client, store, SPEC)
    response = client.post(URL, json=SPEC)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "succeeded" and body["id"] != source
    assert body["started_at"] and body["finished_at"]
    assert body["progress"] == {"step": 3, "steps": 3}
    assert body["summary"]["cached"] is True and body["summary"]["cached_from"] == source
    assert body["summary"]["final_loss"] == 0.25 and body["summary"]["diagnosis"]["verdict"] == "healthy"
    assert body["device"] == "cpu"
    assert client.get(f"{URL}/{body['id']}").get_json() == body
    assert body["id"] not in messages(redis_client)  # nothing for a worker to do

    assert client.get(f"{URL}/{body['id']}/traces").get_json() == client.get(f"{URL}/{source}/traces").get_json()
    first, copy = (np.load(io.BytesIO(client.get(f"{URL}/{experiment_id}/traces?format=npz").data))
                   for experiment_id in (source, body["id"]))
    assert sorted(copy.files) == sorted(first.files)
    for name in first.files:
        np.testing.assert_array_equal(copy[name], first[name])  # NaN where NaN: the bytes, not their JSON


def test_a_copy_outlives_its_source_and_a_deleted_source_is_not_served(client, store, redis_client):
    source = run_as_worker(client, store, SPEC)
    copy = client.post(URL, json=SPEC).get_json()["id"]
    expected = client.get(f"{URL}/{source}/traces").get_json()
    assert client.delete(f"{URL}/{source}").status_code == 204
    assert client.get(f"{URL}/{copy}/traces").get_json() == expected

    again = client.post(URL, json=SPEC).get_json()
    assert again["status"] == "queued" and again["id"] in messages(redis_client)


def test_cache_false_runs_afresh(client, store, redis_client):
    run_as_worker(client, store, SPEC)
    body = client.post(URL, json={**SPEC, "cache": False}).get_json()
    assert body["status"] == "queued" and body["summary"] is None
    assert body["spec"]["cache"] is False
    assert body["id"] in messages(redis_client)


@pytest.mark.parametrize("change", [{"seed": 8}, {"depth": 3}, {"lr": 0.01}, {"device": "cuda"}])
def test_other_inputs_miss(client, store, redis_client, change):
    run_as_worker(client, store, SPEC)
    body = client.post(URL, json={**SPEC, **change}).get_json()
    assert body["status"] == "queued"
    assert body["id"] in messages(redis_client, body["queue"])


@pytest.mark.parametrize(
    "same",
    [{"name": "another label"}, {"device": "cpu"}, {"activation": "relu", "init": "default"}, {"cache": True}],
    ids=["name", "auto-ran-on-cpu-serves-cpu", "defaults-spelled-out", "cache-true"],
)
def test_inputs_that_do_not_change_the_result_hit(client, store, same):
    source = run_as_worker(client, store, {**SPEC, "name": "first"})
    body = client.post(URL, json={**SPEC, **same}).get_json()
    assert body["status"] == "succeeded" and body["summary"]["cached_from"] == source
    assert body["spec"] == ExperimentSpec.model_validate({**SPEC, **same}).model_dump(mode="json")  # its own spec


def test_aliases_hit_the_result_of_their_name(client, store):
    source = run_as_worker(client, store, {**SPEC, "activation": "swish", "init": "he_normal"})
    body = client.post(URL, json={**SPEC, "activation": "silu", "init": "kaiming_normal"}).get_json()
    assert body["summary"]["cached_from"] == source


def test_the_cache_is_each_tenants_own(app, client, store, redis_client):
    """A tenant sees only its own experiments: another's result, even of the same spec, is not served."""

    @app.before_request
    def set_tenant():
        g.tenant = request.headers.get("X-Test-Tenant", "")

    alice, bob = {"X-Test-Tenant": "alice"}, {"X-Test-Tenant": "bob"}
    source = run_as_worker(client, store, SPEC, headers=alice)
    assert client.post(URL, json=SPEC, headers=bob).get_json()["status"] == "queued"
    hit = client.post(URL, json=SPEC, headers=alice).get_json()
    assert hit["status"] == "succeeded" and hit["summary"]["cached_from"] == source


def test_a_sweep_answers_its_cached_points_and_sends_the_others(client, store, redis_client):
    source = run_as_worker(client, store, SPEC)
    base = {key: value for key, value in SPEC.items() if key != "seed"}
    waiting = messages(redis_client)
    response = client.post("/api/v1/sweeps", json={"base": base, "grid": {"seed": [6, 7, 8]}})
    assert response.status_code == 202
    ids = response.get_json()["experiments"]
    sweep = client.get(response.headers["Location"]).get_json()
    assert [row["status"] for row in sweep["experiments"]] == ["queued", "succeeded", "queued"]
    assert sweep["experiments"][1]["summary"]["cached_from"] == source
    assert sweep["experiments"][1]["final_loss"] == 0.25
    assert messages(redis_client)[len(waiting):] == [ids[0], ids[2]]
