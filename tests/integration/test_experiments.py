"""Submit, poll, fetch: the API and a real Celery worker process over a real Redis."""

import io
import time

import numpy as np
import pytest

from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

SMALL = {"depth": 4, "width": 16, "steps": 30, "batch_size": 32}


def submit(client, **spec) -> str:
    response = client.post("/api/v1/experiments", json=spec)
    assert response.status_code == 202, response.get_json()
    assert response.headers["Location"].endswith(response.get_json()["id"])
    return response.get_json()["id"]


@pytest.mark.parametrize(
    "spec",
    [
        SMALL,
        {**SMALL, "activation": "sigmoid", "init": "xavier_uniform", "clipping": {"mode": "norm", "threshold": 1.0}},
        {**SMALL, "norm": "batchnorm", "optimizer": "adam", "lr": 0.01, "dataset": "digits"},
        {**SMALL, "activation": "tanh", "norm": "layernorm", "residual": True, "trace_every": 7,
         "clipping": {"mode": "value", "threshold": 0.01}, "dataset": "random", "optimizer": "momentum"},
    ],
    ids=["relu", "sigmoid-xavier-clip", "batchnorm-adam-digits", "tanh-layernorm-residual-every7"],
)
def test_submit_poll_traces(client, spec):
    experiment_id = submit(client, **spec)
    body = wait_for(client, experiment_id)
    assert body["status"] == "succeeded", body
    summary = body["summary"]
    assert summary["train_seconds"] > 0
    assert np.isfinite(summary["final_loss"])
    assert 0 <= summary["final_accuracy"] <= 1
    assert summary["diagnosis"]["verdict"] in ("healthy", "vanishing", "exploding", "dead_units", "saturated")
    assert body["progress"] == {"step": spec["steps"], "steps": spec["steps"]}
    assert body["started_at"] and body["finished_at"]

    traces = client.get(f"/api/v1/experiments/{experiment_id}/traces").get_json()
    every = spec.get("trace_every", 1)
    expected_steps = sorted(set(range(0, spec["steps"], every)) | {spec["steps"] - 1})
    assert traces["steps"] == expected_steps
    assert [layer["name"] for layer in traces["layers"]] == [f"hidden.{i}" for i in range(4)] + ["output"]
    grad = np.array(traces["grad_norm"], dtype=float)
    assert grad.shape == (len(expected_steps), 5)
    assert np.all(grad > 0)
    assert all(row[-1] is None for row in traces["dead_fraction"])  # the output layer has no activation
    assert len(traces["loss"]) == len(expected_steps)
    if spec.get("clipping", {}).get("mode") == "value":
        assert any(traces["clipped"])


def test_traces_download_npz_and_csv(client):
    experiment_id = submit(client, **SMALL)
    wait_for(client, experiment_id)
    npz = client.get(f"/api/v1/experiments/{experiment_id}/traces?format=npz")
    assert npz.status_code == 200
    arrays = np.load(io.BytesIO(npz.data))
    assert arrays["grad_norm"].shape == (SMALL["steps"], SMALL["depth"] + 1)
    csv = client.get(f"/api/v1/experiments/{experiment_id}/traces?format=csv&metrics=grad_norm,loss")
    assert csv.status_code == 200
    assert len(csv.data.decode().strip().splitlines()) > SMALL["steps"]


def test_traces_readable_while_running_and_cancel(client):
    experiment_id = submit(client, depth=2, width=8, steps=100_000, batch_size=8)
    wait_for(client, experiment_id, statuses=("running",), timeout=60)
    seen = []
    deadline = time.monotonic() + 30
    while len(set(seen)) < 2 and time.monotonic() < deadline:
        traces = client.get(f"/api/v1/experiments/{experiment_id}/traces?metrics=loss").get_json()
        seen.append(len(traces["steps"]))
        time.sleep(0.3)
    assert len(set(seen)) >= 2 and max(seen) > 0, seen  # the trace grows while the run goes
    progress = client.get(f"/api/v1/experiments/{experiment_id}").get_json()["progress"]
    assert 0 < progress["step"] < 100_000

    response = client.post(f"/api/v1/experiments/{experiment_id}/cancel")
    assert response.status_code == 202
    body = wait_for(client, experiment_id, timeout=30)
    assert body["status"] == "cancelled"
    assert client.post(f"/api/v1/experiments/{experiment_id}/cancel").status_code == 409
    traces = client.get(f"/api/v1/experiments/{experiment_id}/traces?metrics=loss").get_json()
    assert 0 < len(traces["steps"]) < 100_000


def test_delete_while_running(client):
    experiment_id = submit(client, depth=2, width=8, steps=100_000, batch_size=8)
    wait_for(client, experiment_id, statuses=("running",), timeout=60)
    assert client.delete(f"/api/v1/experiments/{experiment_id}").status_code in (200, 204)
    assert client.get(f"/api/v1/experiments/{experiment_id}").status_code == 404
    assert client.get(f"/api/v1/experiments/{experiment_id}/traces").status_code == 404
    # The worker notices at its next write and takes the next experiment.
    follow_up = submit(client, **SMALL, cache=False)  # a run, not an answer from the result cache
    assert wait_for(client, follow_up, timeout=60)["status"] == "succeeded"


def test_divergence_is_a_verdict_not_a_failure(client):
    experiment_id = submit(client, depth=6, width=32, steps=200, lr=1e5, init="normal", init_std=1.0)
    body = wait_for(client, experiment_id)
    assert body["status"] == "succeeded", body
    diagnosis = body["summary"]["diagnosis"]
    assert diagnosis["verdict"] == "diverged"
    step = body["summary"]["diverged_step"]
    assert isinstance(step, int) and 0 <= step < 200
    assert str(step) in diagnosis["reasons"][0]
    traces = client.get(f"/api/v1/experiments/{experiment_id}/traces?metrics=loss").get_json()
    assert traces["steps"][-1] <= step


def test_literature_verdicts(client):
    """Deep sigmoid nets vanish (Glorot & Bengio 2010); ReLU with He init does not (He et al. 2015)."""
    sigmoid = submit(client, depth=20, width=64, steps=20, activation="sigmoid")
    relu_he = submit(client, depth=20, width=64, steps=20, activation="relu", init="kaiming_normal")
    sigmoid_body, relu_body = wait_for(client, sigmoid), wait_for(client, relu_he)
    assert sigmoid_body["summary"]["diagnosis"]["verdict"] == "vanishing", sigmoid_body["summary"]
    assert relu_body["summary"]["diagnosis"]["verdict"] == "healthy", relu_body["summary"]
    ratio = sigmoid_body["summary"]["diagnosis"]["evidence"]["step0_grad_ratio"]
    assert ratio < 1e-3
