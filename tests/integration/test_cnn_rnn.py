"""arch cnn and arch rnn end to end: submitted to the API, trained by a real worker, traces read back."""

import io

import numpy as np
import pytest

from tests.integration.helpers import wait_for
from tests.integration.test_experiments import submit

pytestmark = pytest.mark.integration


def test_a_cnn_runs_and_traces_its_conv_blocks(client):
    spec = {"arch": "cnn", "dataset": "shapes", "depth": 3, "width": 8, "steps": 20, "batch_size": 16,
            "norm": "batchnorm", "residual": True}
    experiment_id = submit(client, **spec)
    body = wait_for(client, experiment_id)
    assert body["status"] == "succeeded", body
    assert 0 <= body["summary"]["final_accuracy"] <= 1
    traces = client.get(f"/api/v1/experiments/{experiment_id}/traces").get_json()
    assert traces["layers"] == [{"name": f"conv.{i}", "kind": "conv"} for i in range(3)] + [
        {"name": "output", "kind": "linear"}]
    assert np.array(traces["grad_norm"], dtype=float).shape == (20, 4)
    assert all(row[-1] is None and 0 <= row[0] <= 1 for row in traces["dead_fraction"])
    assert "time_grad_norm" not in traces


def test_an_rnn_runs_and_traces_the_gradient_through_time(client):
    spec = {"arch": "rnn", "cell": "rnn", "depth": 2, "width": 16, "seq_len": 12, "steps": 15, "batch_size": 16,
            "trace_every": 7, "clipping": {"mode": "norm", "threshold": 0.01}}
    experiment_id = submit(client, **spec)
    body = wait_for(client, experiment_id)
    assert body["status"] == "succeeded", body
    assert body["spec"]["dataset"] == "adding"
    assert body["summary"]["final_accuracy"] is None and body["summary"]["final_loss"] > 0
    traces = client.get(f"/api/v1/experiments/{experiment_id}/traces").get_json()
    assert traces["steps"] == [0, 7, 14]
    assert [layer["name"] for layer in traces["layers"]] == ["rnn.0", "rnn.1", "output"]
    assert traces["accuracy"] == [None, None, None]  # a regression
    assert traces["clipped"] == [True, True, True]
    time_norms = np.array(traces["time_grad_norm"], dtype=float)
    assert time_norms.shape == (3, 12) and (time_norms > 0).all()
    assert time_norms[0, 0] < time_norms[0, -1]  # the loss is at the end: the gradient fades going back
    npz = np.load(io.BytesIO(client.get(f"/api/v1/experiments/{experiment_id}/traces?format=npz").data))
    np.testing.assert_allclose(npz["time_grad_norm"], time_norms, rtol=1e-6)


def test_an_lstm_on_copy_first(client):
    experiment_id = submit(client, arch="rnn", cell="lstm", dataset="copy_first", depth=1, width=8, seq_len=6,
                           steps=10, batch_size=8)
    body = wait_for(client, experiment_id)
    assert body["status"] == "succeeded", body
    assert 0 <= body["summary"]["final_accuracy"] <= 1
    traces = client.get(f"/api/v1/experiments/{experiment_id}/traces?metrics=time_grad_norm,grad_norm").get_json()
    assert np.array(traces["time_grad_norm"], dtype=float).shape == (10, 6)
    assert traces["layers"][0] == {"name": "rnn.0", "kind": "lstm"}
