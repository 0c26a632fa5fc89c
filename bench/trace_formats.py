"""Seconds to serve a 1,000,000-value trace through the API as JSON, npz and csv, and JSON's two writers.

    .venv/bin/python bench/trace_formats.py [--redis redis://127.0.0.1:6379/12] [--repeats 7]

A finished experiment's trace (1,000 traced steps x 125 layers x 8 layer metrics, plus the
step metrics) is written by the real store, chunk by chunk, then packed by its finish; then
`GET /api/v1/experiments/{id}/traces` (JSON), `?format=npz` and `?format=csv` are asked of the
app (`create_app`, in process through Flask's test client: routing, the Redis read, the
rendering and the whole streamed body, no socket), in turns, `--repeats` times each; the
table gives the median (p50) and the fastest. Then the JSON writer that the API uses (orjson)
and the one it replaced (numpy's text, kept below as the reference) render the same arrays in
turns; their answers are checked to hold the same values.

The database given is flushed before and after.
"""

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import redis
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from api.resources import EXTENSION
from api.trace_formats import as_json
from shared.spec import ExperimentSpec
from shared.store import Store
from shared.traces import LAYER_METRICS, STEP_METRICS, TraceChunk

ROWS, LAYERS = 1000, 125
VALUES = ROWS * LAYERS * len(LAYER_METRICS)  # 1,000,000 layer values (and 5,000 step values)
CHUNK_ROWS = 100


def trace() -> tuple[list[dict], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    arrays = {"step": np.arange(ROWS, dtype=np.int32)}
    arrays |= {name: rng.random(ROWS, dtype=np.float32) for name in STEP_METRICS}
    arrays["clipped"] = (arrays["clipped"] > 0.5).astype(np.uint8)
    arrays |= {name: rng.standard_normal((ROWS, LAYERS), dtype=np.float32) for name in LAYER_METRICS}
    for name in ("act_mean", "act_std", "dead_fraction", "saturated_fraction"):
        arrays[name][:, -1] = np.nan  # the output layer has no activation
    return [{"name": f"hidden.{i}", "kind": "linear"} for i in range(LAYERS - 1)] + [
        {"name": "output", "kind": "linear"}
    ], arrays


def write_finished(store: Store, layers: list[dict], arrays: dict[str, np.ndarray]) -> str:
    """A succeeded experiment holding the trace, written as a worker writes one."""
    experiment_id = uuid.uuid4().hex  # the API answers 404 for an id it cannot have made
    store.create(experiment_id, ExperimentSpec(steps=ROWS).model_dump(mode="json"))
    store.claim(experiment_id, "token", lease_seconds=600, max_attempts=1)
    store.update(experiment_id, "token", layers=layers)
    for start in range(0, ROWS, CHUNK_ROWS):
        part = {name: array[start : start + CHUNK_ROWS] for name, array in arrays.items()}
        store.append_chunk(experiment_id, "token", TraceChunk(part), start + CHUNK_ROWS)
    assert store.finish(experiment_id, "token", "succeeded")
    return experiment_id


def numpy_text_json(layers: list[dict], arrays: dict[str, np.ndarray]) -> Iterator[str]:
    """The JSON writer that the API used before orjson: numpy's shortest float32 text, a block at a time."""
    yield '{"layers":' + json.dumps(layers) + ',"steps":' + json.dumps(arrays["step"].tolist())
    for name, array in arrays.items():
        if name == "step":
            continue
        yield f',"{name}":'
        if array.dtype == np.uint8:
            yield json.dumps(array.astype(bool).tolist())
            continue
        yield "["
        size = max(1, (1 << 16) // (array.shape[1] if array.ndim == 2 else 1))
        for start in range(0, len(array), size):
            values = array[start : start + size]
            text = values.astype(str)
            text[~np.isfinite(values)] = "null"
            items = text.tolist() if values.ndim == 1 else ["[" + ",".join(row) + "]" for row in text.tolist()]
            yield ("," if start else "") + ",".join(items)
        yield "]"
    yield "}"


def timed(action: Callable[[], bytes]) -> tuple[float, bytes]:
    started = time.perf_counter()
    body = action()
    return time.perf_counter() - started, body


def fetched(http: FlaskClient, query: str) -> bytes:
    """The whole body of a GET, which must succeed."""
    answer = http.get(query)
    body = answer.get_data()
    assert answer.status_code == 200, body[:200]
    return body


def table(title: str, seconds: dict[str, list[float]], sizes: dict[str, int], base: str) -> None:
    print(f"\n{title}")
    print(f"{'':10s} {'p50 s':>7s} {'min s':>7s} {'MB':>6s} {'us/value':>9s} {'p50 / ' + base:>11s}")
    reference = statistics.median(seconds[base])
    for name, runs in seconds.items():
        p50 = statistics.median(runs)
        print(f"{name:10s} {p50:7.3f} {min(runs):7.3f} {sizes[name] / 1e6:6.1f} {p50 * 1e6 / VALUES:9.3f}"
              f" {p50 / reference:11.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis)
    client.flushdb()
    app = create_app({"REDIS_URL": args.redis})
    layers, arrays = trace()
    try:
        url = f"/api/v1/experiments/{write_finished(Store(client), layers, arrays)}/traces"
        http = app.test_client()
        queries = {"json": url, "npz": url + "?format=npz", "csv": url + "?format=csv"}
        seconds = {name: [] for name in queries}
        sizes = {}
        for _ in range(args.repeats):
            for name, query in queries.items():
                took, body = timed(lambda: fetched(http, query))
                seconds[name].append(took)
                sizes[name] = len(body)
        table(f"GET a {VALUES:,d}-value trace through the API, {args.repeats} requests each",
              seconds, sizes, "json")

        writers = {"orjson": lambda: as_json("bench", layers, arrays).get_data(),
                   "numpy text": lambda: "".join(numpy_text_json(layers, arrays)).encode()}
        seconds = {name: [] for name in writers}
        bodies = {}
        with Flask(__name__).test_request_context():
            for _ in range(args.repeats):
                for name, write in writers.items():
                    took, bodies[name] = timed(write)
                    seconds[name].append(took)
        assert json.loads(bodies["orjson"]) == json.loads(bodies["numpy text"]), "the writers disagree"
        table("JSON writers on the same arrays (the same values: checked)", seconds,
              {name: len(body) for name, body in bodies.items()}, "numpy text")
    finally:
        app.extensions[EXTENSION].close()
        client.flushdb()


if __name__ == "__main__":
    main()
