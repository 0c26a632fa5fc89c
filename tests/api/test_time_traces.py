"""time_grad_norm (arch rnn) through the store and the API: json, npz, csv; specs of the new archs."""

import csv
import io

import numpy as np

from shared.traces import LAYER_METRICS, STEP_METRICS, TIME_METRICS
from tests.api.test_traces import concat, make_chunk, strict_json

URL = "/api/v1/experiments"
LAYERS = [{"name": "rnn.0", "kind": "lstm"}, {"name": "output", "kind": "linear"}]
SEQ_LEN = 5


def rnn_chunk(steps: list[int], seed: int = 0):
    chunk = make_chunk(steps, layers=len(LAYERS), seed=seed)
    rng = np.random.default_rng(seed + 100)
    chunk.arrays["time_grad_norm"] = rng.random((len(steps), SEQ_LEN), dtype=np.float32)
    chunk.arrays["time_grad_norm"][0, 0] = np.nan
    return chunk


def start_rnn_run(client, store) -> str:
    spec = {"arch": "rnn", "cell": "lstm", "depth": 1, "seq_len": SEQ_LEN, "steps": 10}
    experiment_id = client.post(URL, json=spec).get_json()["id"]
    assert store.claim(experiment_id, "token", lease_seconds=30, max_attempts=3)[0] == "claimed"
    assert store.update(experiment_id, "token", layers=LAYERS, device="cpu")
    return experiment_id


def test_defaults_per_arch(client):
    cnn = client.post(URL, json={"arch": "cnn"}).get_json()["spec"]
    rnn = client.post(URL, json={"arch": "rnn"}).get_json()["spec"]
    assert cnn["dataset"] == "digits" and rnn["dataset"] == "adding"
    assert rnn["cell"] == "rnn" and rnn["seq_len"] == 20
    for spec in ({"arch": "cnn", "dataset": "shapes", "norm": "batchnorm", "residual": True},
                 {"arch": "rnn", "cell": "gru", "dataset": "copy_first", "seq_len": 200}):
        assert client.post(URL, json=spec).status_code == 202


def test_json_has_one_list_of_seq_len_values_per_traced_step(client, store):
    experiment_id = start_rnn_run(client, store)
    first, second = rnn_chunk([0, 1], seed=1), rnn_chunk([2], seed=2)
    store.append_chunk(experiment_id, "token", first, 2)
    store.append_chunk(experiment_id, "token", second, 3)
    body = strict_json(client.get(f"{URL}/{experiment_id}/traces"))
    expected = concat(first, second)["time_grad_norm"]
    assert len(body["time_grad_norm"]) == 3 and all(len(row) == SEQ_LEN for row in body["time_grad_norm"])
    assert body["time_grad_norm"][0][0] is None
    np.testing.assert_array_equal(np.array(body["time_grad_norm"], dtype=float)[:, 1:].astype(np.float32), expected[:, 1:])
    only = client.get(f"{URL}/{experiment_id}/traces?metrics=time_grad_norm").get_json()
    assert list(only) == ["layers", "steps", "time_grad_norm"]


def test_npz_keeps_it_2d_and_csv_adds_one_line_per_time_step(client, store):
    experiment_id = start_rnn_run(client, store)
    chunk = rnn_chunk([0, 4])
    store.append_chunk(experiment_id, "token", chunk, 5)
    arrays = np.load(io.BytesIO(client.get(f"{URL}/{experiment_id}/traces?format=npz").data))
    assert arrays["time_grad_norm"].shape == (2, SEQ_LEN) and arrays["time_grad_norm"].dtype == np.float32
    np.testing.assert_array_equal(arrays["time_grad_norm"], chunk.arrays["time_grad_norm"])

    text = client.get(f"{URL}/{experiment_id}/traces?format=csv").get_data(as_text=True)
    header = text.splitlines()[0].split(",")
    assert header == ["step", "layer", *LAYER_METRICS, *STEP_METRICS, "time", *TIME_METRICS]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2 * (len(LAYERS) + SEQ_LEN)
    per_step = len(LAYERS) + SEQ_LEN
    for index, step in enumerate([0, 4]):
        block = rows[index * per_step : (index + 1) * per_step]
        assert [row["layer"] for row in block[: len(LAYERS)]] == ["rnn.0", "output"]
        assert all(row["time"] == "" and row["time_grad_norm"] == "" for row in block[: len(LAYERS)])
        times = block[len(LAYERS) :]
        assert all(row["step"] == str(step) and row["layer"] == "" and row["loss"] == "" for row in times)
        assert [row["time"] for row in times] == [str(t) for t in range(SEQ_LEN)]
        values = np.array([float(row["time_grad_norm"]) for row in times], dtype=np.float32)
        np.testing.assert_array_equal(values, chunk.arrays["time_grad_norm"][index])

    lines = client.get(f"{URL}/{experiment_id}/traces?format=csv&metrics=time_grad_norm").get_data(as_text=True)
    lines = lines.splitlines()
    assert lines[0] == "step,time,time_grad_norm" and len(lines) == 1 + 2 * SEQ_LEN
    assert lines[1].startswith("0,0,nan")


def test_a_queued_rnn_has_an_empty_time_trace_and_an_mlp_none(client, store):
    queued = client.post(URL, json={"arch": "rnn", "seq_len": 7}).get_json()["id"]
    body = client.get(f"{URL}/{queued}/traces").get_json()
    assert body["time_grad_norm"] == []
    arrays = np.load(io.BytesIO(client.get(f"{URL}/{queued}/traces?format=npz").data))
    assert arrays["time_grad_norm"].shape == (0, 7)
    mlp = client.post(URL, json={}).get_json()["id"]
    assert "time_grad_norm" not in client.get(f"{URL}/{mlp}/traces").get_json()
    assert "time_grad_norm" not in client.get(f"{URL}/{mlp}/traces?metrics=time_grad_norm").get_json()
