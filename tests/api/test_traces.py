"""GET /api/v1/experiments/{id}/traces on traces written as a worker writes them: claim, layers, chunks."""

import csv
import io
import json

import numpy as np
import pytest

from api import trace_formats
from shared.traces import LAYER_METRICS, STEP_METRICS, TraceChunk

URL = "/api/v1/experiments"
LAYERS = [{"name": "hidden.0", "kind": "linear"}, {"name": "hidden.1", "kind": "linear"},
          {"name": "output", "kind": "linear"}]


def make_chunk(steps: list[int], layers: int = len(LAYERS), seed: int = 0) -> TraceChunk:
    """Rows as the tracer produces them, with the non-finite values a real run can have."""
    rng = np.random.default_rng(seed)
    rows = len(steps)
    arrays = {"step": np.array(steps, dtype=np.int32)}
    for name in STEP_METRICS:
        arrays[name] = rng.random(rows, dtype=np.float32)
    arrays["clipped"] = (np.arange(rows) % 2).astype(np.uint8)
    for name in LAYER_METRICS:
        arrays[name] = rng.standard_normal((rows, layers), dtype=np.float32)
    arrays["dead_fraction"][:, -1] = np.nan  # the output layer has no activation
    arrays["loss"][-1] = np.inf
    arrays["grad_norm"][0, 0] = -np.inf
    return TraceChunk(arrays)


def concat(*chunks: TraceChunk) -> dict[str, np.ndarray]:
    return {name: np.concatenate([chunk.arrays[name] for chunk in chunks]) for name in chunks[0].arrays}


def start_run(client, store, layers=LAYERS) -> str:
    experiment_id = client.post(URL, json={"steps": 10}).get_json()["id"]
    assert store.claim(experiment_id, "token", lease_seconds=30, max_attempts=3)[0] == "claimed"
    assert store.update(experiment_id, "token", layers=layers, device="cpu")
    return experiment_id


def strict_json(response) -> dict:
    """The body parsed as RFC 8259 JSON: a NaN or Infinity literal fails the test."""

    def refuse(literal):
        raise AssertionError(f"{literal} in a JSON answer")

    return json.loads(response.data, parse_constant=refuse)


def assert_json_matches(body: dict, expected: dict[str, np.ndarray]) -> None:
    assert body["steps"] == expected["step"].tolist()
    for name, array in expected.items():
        if name == "clipped":
            assert body[name] == array.astype(bool).tolist()
        elif name != "step":
            # null where NaN or infinite (numpy reads None as NaN); finite values are the stored float32 exactly
            got = np.array(body[name], dtype=np.float64).astype(np.float32)
            np.testing.assert_array_equal(got, np.where(np.isfinite(array), array, np.nan), err_msg=name)


def test_json_has_every_metric_and_grows_while_running(client, store):
    experiment_id = start_run(client, store)
    first, second = make_chunk([0, 1, 2], seed=1), make_chunk([3, 4], seed=2)
    assert store.append_chunk(experiment_id, "token", first, 3) == 0
    response = client.get(f"{URL}/{experiment_id}/traces")
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = strict_json(response)
    assert list(body) == ["layers", "steps", *STEP_METRICS, *LAYER_METRICS]
    assert body["layers"] == LAYERS
    assert_json_matches(body, first.arrays)
    assert all(row[-1] is None for row in body["dead_fraction"])
    assert body["loss"][-1] is None and body["grad_norm"][0][0] is None
    assert body["clipped"] == [False, True, False]

    assert store.append_chunk(experiment_id, "token", second, 5) == 0
    body = strict_json(client.get(f"{URL}/{experiment_id}/traces"))
    assert_json_matches(body, concat(first, second))
    assert client.get(f"{URL}/{experiment_id}").get_json()["progress"] == {"step": 5, "steps": 10}


def test_json_is_the_same_across_block_boundaries(client, store, monkeypatch):
    experiment_id = start_run(client, store)
    chunk = make_chunk(list(range(50)))
    store.append_chunk(experiment_id, "token", chunk, 50)
    whole = client.get(f"{URL}/{experiment_id}/traces").get_json()
    monkeypatch.setattr(trace_formats, "BLOCK_VALUES", 4)
    assert client.get(f"{URL}/{experiment_id}/traces").get_json() == whole
    assert_json_matches(whole, chunk.arrays)


@pytest.mark.parametrize("query", ["", "?metrics=act_std,clipped", "?format=npz", "?format=csv&metrics=loss"])
def test_a_finished_run_answers_what_it_answered_while_running(client, store, query):
    experiment_id = start_run(client, store)
    for start in range(0, 40, 8):  # the finish packs five chunks into one key
        store.append_chunk(experiment_id, "token", make_chunk(list(range(start, start + 8)), seed=start), start + 8)
    running = client.get(f"{URL}/{experiment_id}/traces{query}").data
    assert store.finish(experiment_id, "token", "succeeded")
    ended = client.get(f"{URL}/{experiment_id}/traces{query}").data
    if "npz" in query:  # a zip's entries carry the time they were written: compare the arrays
        running, ended = np.load(io.BytesIO(running)), np.load(io.BytesIO(ended))
        assert running.files == ended.files and len(running["steps"]) == 40
        for name in running.files:
            np.testing.assert_array_equal(running[name], ended[name], err_msg=name)
    else:
        assert ended == running and len(running) > 300


def test_metrics_selects_and_keeps_layers_and_steps(client, store):
    experiment_id = start_run(client, store)
    store.append_chunk(experiment_id, "token", make_chunk([0, 1]), 2)
    body = client.get(f"{URL}/{experiment_id}/traces?metrics=grad_norm,loss").get_json()
    assert list(body) == ["layers", "steps", "grad_norm", "loss"]
    assert body["steps"] == [0, 1]
    only = client.get(f"{URL}/{experiment_id}/traces?metrics=steps,layers").get_json()
    assert list(only) == ["layers", "steps"]
    spaced = client.get(f"{URL}/{experiment_id}/traces?metrics= clipped , clipped").get_json()
    assert list(spaced) == ["layers", "steps", "clipped"]


@pytest.mark.parametrize(
    ("query", "name"),
    [("metrics=grad_norm,gradnorm", "metrics"), ("metrics=time_grad_norms", "metrics"),
     ("format=parquet", "format"), ("format=JSON", "format")],
)
def test_unknown_metric_or_format_is_422(client, store, query, name):
    experiment_id = start_run(client, store)
    response = client.get(f"{URL}/{experiment_id}/traces?{query}")
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error" and error["details"][0]["loc"] == ["query", name]


def test_a_queued_experiment_has_empty_traces_in_every_format(client):
    experiment_id = client.post(URL, json={}).get_json()["id"]
    body = client.get(f"{URL}/{experiment_id}/traces").get_json()
    assert body["layers"] == [] and body["steps"] == []
    assert all(body[name] == [] for name in STEP_METRICS + LAYER_METRICS)
    arrays = np.load(io.BytesIO(client.get(f"{URL}/{experiment_id}/traces?format=npz").data))
    assert arrays["grad_norm"].shape == (0, 0) and arrays["steps"].shape == (0,)
    lines = client.get(f"{URL}/{experiment_id}/traces?format=csv").get_data(as_text=True).splitlines()
    assert lines == [",".join(["step", "layer", *LAYER_METRICS, *STEP_METRICS])]


def test_npz_keeps_nan_inf_and_dtypes(client, store):
    experiment_id = start_run(client, store)
    chunk = make_chunk([0, 1, 2, 3])
    store.append_chunk(experiment_id, "token", chunk, 4)
    response = client.get(f"{URL}/{experiment_id}/traces?format=npz")
    assert response.status_code == 200 and response.mimetype == "application/octet-stream"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{experiment_id}-traces.npz"'
    arrays = np.load(io.BytesIO(response.data))  # allow_pickle=False: names are plain unicode arrays
    assert set(arrays.files) == {"steps", "layers", "layer_kinds", *STEP_METRICS, *LAYER_METRICS}
    assert arrays["layers"].tolist() == [layer["name"] for layer in LAYERS]
    assert arrays["layer_kinds"].tolist() == ["linear"] * 3
    np.testing.assert_array_equal(arrays["steps"], chunk.arrays["step"])
    for name in STEP_METRICS + LAYER_METRICS:
        expected = chunk.arrays[name].astype(bool) if name == "clipped" else chunk.arrays[name]
        assert arrays[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(arrays[name], expected, err_msg=name)  # NaN equal to NaN
    assert np.isnan(arrays["dead_fraction"][:, -1]).all() and np.isinf(arrays["loss"][-1])

    selected = np.load(io.BytesIO(client.get(f"{URL}/{experiment_id}/traces?format=npz&metrics=loss").data))
    assert set(selected.files) == {"steps", "layers", "layer_kinds", "loss"}


def test_csv_is_long_format_one_line_per_step_and_layer(client, store):
    layers = [*LAYERS[:2], {"name": 'odd, "quoted"', "kind": "linear"}]
    experiment_id = start_run(client, store, layers=layers)
    chunk = make_chunk([0, 5, 9])
    store.append_chunk(experiment_id, "token", chunk, 10)
    response = client.get(f"{URL}/{experiment_id}/traces?format=csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{experiment_id}-traces.csv"'
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 3 * 3
    assert [(row["step"], row["layer"]) for row in rows[:4]] == [
        ("0", "hidden.0"), ("0", "hidden.1"), ("0", 'odd, "quoted"'), ("5", "hidden.0")]
    for index, row in enumerate(rows):
        step, layer = divmod(index, 3)
        for name in LAYER_METRICS:
            value = np.float32(float(row[name]))
            np.testing.assert_array_equal(value, chunk.arrays[name][step, layer], err_msg=name)
        for name in STEP_METRICS:  # repeated on each layer's line
            np.testing.assert_array_equal(np.float32(float(row[name])), chunk.arrays[name][step], err_msg=name)
    assert rows[2]["dead_fraction"] == "nan" and rows[-1]["loss"] == "inf" and rows[0]["grad_norm"] == "-inf"
    assert [row["clipped"] for row in rows[::3]] == ["0", "1", "0"]


def test_csv_of_step_metrics_only_has_one_line_per_step(client, store):
    experiment_id = start_run(client, store)
    chunk = make_chunk([0, 1, 2, 3])
    store.append_chunk(experiment_id, "token", chunk, 4)
    text = client.get(f"{URL}/{experiment_id}/traces?format=csv&metrics=loss,accuracy").get_data(as_text=True)
    lines = text.splitlines()
    assert lines[0] == "step,loss,accuracy"
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2", "3"]
    assert lines[-1].split(",")[1] == "inf"


def test_csv_is_the_same_across_block_boundaries(client, store, monkeypatch):
    experiment_id = start_run(client, store)
    store.append_chunk(experiment_id, "token", make_chunk(list(range(40))), 40)
    whole = client.get(f"{URL}/{experiment_id}/traces?format=csv").data
    monkeypatch.setattr(trace_formats, "BLOCK_VALUES", 30)
    assert client.get(f"{URL}/{experiment_id}/traces?format=csv").data == whole
