"""Bytes Redis holds per traced value, measured with MEMORY USAGE, for four layouts of the same trace.

    .venv/bin/python bench/redis_bytes.py [--redis redis://127.0.0.1:6379/12] [--quick]

Each trace is written by the real store (its APPEND path, chunk by chunk, then its finish) and
measured four ways in the same run:

- appended: one string per metric as APPEND grew it while the run went on (what a running
  experiment holds: Redis leaves room to grow, up to double);
- per metric: the same strings rewritten at their exact size (COPY makes an exact copy), one
  key each, which is what a finished run held first;
- packed raw: one string with every metric as it is (what a finished run held next);
- packed: what `Store.finish` leaves now, the same string with each metric encoded
  (shared/traces.py `encode`: regrouped by byte, then deflated).

`raw` is the values' own bytes (4 a value, 1 for `clipped`): the floor of any unencoded float32
layout. The experiment's record (a hash: spec, summary, layers) is not counted: it does not grow
with the trace. The runs train real models (worker/train.py). The size sweep writes the first 50
to 5,000 rows of one real run of the default spec (40 lengths), to show how the allocator's size
classes and the length move the figure; the noise line writes uniform random values of the same
shape, which deflate less than any real trace.

The database given is flushed before and after.
"""

import argparse
import struct
import uuid

import numpy as np
import redis

from shared.spec import ExperimentSpec
from shared.store import Store, packed_key, trace_key
from shared.traces import ALL_METRICS, LAYER_METRICS, STEP_METRICS, TraceChunk
from worker.runner import StoreSink
from worker.train import train

SPECS = {
    "depth 6, 40 steps": dict(depth=6, steps=40),
    "default (depth 8, 300 steps)": dict(),
    "depth 20 x 32, 2000 steps": dict(depth=20, steps=2000, width=32),
    "depth 50 x 32, 500 steps": dict(depth=50, steps=500, width=32, init="kaiming_normal"),
    "rnn depth 2, seq_len 50, 500 steps": dict(arch="rnn", depth=2, width=32, seq_len=50, steps=500),
    "cnn, 300 steps": dict(arch="cnn", steps=300),
    "sigmoid depth 20, 500 steps": dict(depth=20, activation="sigmoid", steps=500),
    "diverging: sgd lr 5, 300 steps": dict(lr=5.0, steps=300),
}
LAYOUTS = ("appended", "per metric", "packed raw", "packed")
# Rows a real worker sends per chunk of a short run (a flush every 0.5 s): small chunks, many APPENDs.
CHUNK_ROWS = 64


def usage(client: redis.Redis, keys: list[str]) -> int:
    return sum(client.memory_usage(key, samples=0) or 0 for key in keys)


def measure_layouts(store: Store, experiment_id: str, token: str) -> dict[str, int]:
    """Bytes of the running run's trace as appended, as exact per-metric copies, then packed by finish."""
    client = store.redis
    keys = [trace_key(experiment_id, metric) for metric in ALL_METRICS]
    held = [key for key in keys if client.exists(key)]
    found = {"appended": usage(client, held)}
    twin = uuid.uuid4().hex  # an id of the same length: the copies' key names cost the same
    copies = [key.replace(experiment_id, twin) for key in held]
    for key, copy in zip(held, copies):
        client.copy(key, copy)
    found["per metric"] = usage(client, copies)
    client.delete(*copies)
    blobs = [client.get(key) or b"" for key in keys]
    client.set(twin, struct.pack(f"<{len(blobs)}I", *map(len, blobs)) + b"".join(blobs))
    found["packed raw"] = usage(client, [twin])
    client.delete(twin)
    assert store.finish(experiment_id, token, "succeeded")
    found["packed"] = usage(client, [packed_key(experiment_id)])
    return found


def claimed(store: Store, spec: ExperimentSpec) -> tuple[str, str]:
    experiment_id, token = uuid.uuid4().hex, "bench"
    store.create(experiment_id, spec.model_dump(mode="json"))
    store.claim(experiment_id, token, lease_seconds=600, max_attempts=1)
    return experiment_id, token


def real_run(store: Store, spec: ExperimentSpec) -> tuple[tuple[int, int, dict[str, int]], dict[str, np.ndarray]]:
    """(values, raw bytes, bytes per layout) of one trained experiment, and its trace."""
    experiment_id, token = claimed(store, spec)
    result = train(spec, StoreSink(store, experiment_id, token))
    arrays = {name: np.asarray(result.trace[name]) for name in ALL_METRICS}
    return values_and_raw(arrays) + (measure_layouts(store, experiment_id, token),), arrays


def values_and_raw(arrays: dict[str, np.ndarray]) -> tuple[int, int]:
    """Every value of every metric, (rows,), (rows, layers) or (rows, seq_len), and their bytes in Redis."""
    values = sum(array.size for array in arrays.values())
    raw = sum(len(blob) for blob in TraceChunk(arrays).to_bytes().values())
    return values, raw


def written_run(store: Store, arrays: dict[str, np.ndarray]) -> tuple[int, int, dict[str, int]]:
    """A trace of the default spec's shape written CHUNK_ROWS rows at a time, as a worker writes it."""
    rows, layers = arrays["grad_norm"].shape
    experiment_id, token = claimed(store, ExperimentSpec(steps=rows))
    store.update(experiment_id, token, layers=[{"name": f"l{i}", "kind": "linear"} for i in range(layers)])
    for start in range(0, rows, CHUNK_ROWS):
        chunk = TraceChunk({name: array[start : start + CHUNK_ROWS] for name, array in arrays.items()})
        store.append_chunk(experiment_id, token, chunk, min(start + CHUNK_ROWS, rows))
    return values_and_raw(arrays) + (measure_layouts(store, experiment_id, token),)


def noise(rows: int, layers: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {"step": np.arange(rows), "clipped": rng.random(rows) > 0.5}
    arrays |= {name: rng.random(rows) for name in STEP_METRICS if name != "clipped"}
    return arrays | {name: rng.random((rows, layers)) for name in LAYER_METRICS}


def row(name: str, values: int, raw: int, found: dict[str, int]) -> str:
    per_value = "".join(f" {found[layout] / values:11.2f}" for layout in LAYOUTS)
    return (f"{name:36s} {values:10,d} {raw / values:6.2f}{per_value}"
            f" {found['packed']:11,d} {found['packed raw'] / found['packed']:9.2f}")


def sweep_table(title: str, figures_by_length: list[dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"{'layout':12s} {'min':>6s} {'median':>6s} {'mean':>6s} {'max':>6s} {'share <= 4.5':>13s}")
    for layout in LAYOUTS:
        figures = np.array([found[layout] for found in figures_by_length])
        print(f"{layout:12s} {figures.min():6.2f} {np.median(figures):6.2f} {figures.mean():6.2f}"
              f" {figures.max():6.2f} {np.mean(figures <= 4.5):13.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--quick", action="store_true", help="only the default spec's real run and the sweep")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis)
    client.flushdb()
    store = Store(client)
    print(f"allocator: {client.info('memory')['mem_allocator']}, Redis {client.info('server')['redis_version']}")
    print("bytes per value, by layout:")
    print(f"{'run':36s} {'values':>10s} {'raw':>6s}" + "".join(f" {layout:>11s}" for layout in LAYOUTS)
          + f" {'packed B':>11s} {'raw/packed':>9s}")
    specs = {name: fields for name, fields in SPECS.items() if not args.quick or not fields}
    try:
        for name, fields in specs.items():
            print(row(name, *real_run(store, ExperimentSpec(**fields))[0]), flush=True)
        _, long_run = real_run(store, ExperimentSpec(steps=5000))
        lengths = [int(rows) for rows in np.unique(np.geomspace(50, 5000, 40).astype(int))]
        layers = long_run["grad_norm"].shape[1]
        sweeps = {
            f"size sweep: the first 50 to 5,000 rows of a real run of the default spec, {len(lengths)} lengths:":
                lambda rows: {name: array[:rows] for name, array in long_run.items()},
            "the same lengths, uniform random values (noise, not a trace):":
                lambda rows: noise(rows, layers, rows),
        }
        for title, trace in sweeps.items():
            figures = []
            for rows in lengths:
                values, _, found = written_run(store, trace(rows))
                figures.append({layout: found[layout] / values for layout in LAYOUTS})
            sweep_table(title, figures)
    finally:
        client.flushdb()


if __name__ == "__main__":
    main()
