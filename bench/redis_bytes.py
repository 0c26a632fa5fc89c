"""Bytes Redis holds per traced value, measured with MEMORY USAGE, for three layouts of the same trace.

    .venv/bin/python bench/redis_bytes.py [--redis redis://127.0.0.1:6379/12] [--quick]

Each trace is written by the real store (its APPEND path, chunk by chunk, then its finish) and
measured three ways in the same run:

- appended: one string per metric as APPEND grew it while the run went on (what a running
  experiment holds: Redis leaves room to grow, up to double);
- per metric: the same strings rewritten at their exact size (COPY makes an exact copy), one
  key each, which is what a finished run held before the packed layout;
- packed: what `Store.finish` leaves, one string with every metric (shared/store.py).

`raw` is the values' own bytes (4 a value, 1 for `clipped`): the floor of any float32 layout.
The experiment's record (a hash: spec, summary, layers) is not counted: it does not grow with
the trace. The real runs train real models (worker/train.py); the size sweep writes
random values of the default spec's shape (MEMORY USAGE does not depend on the values) for 40
lengths between 50 and 5,000 traced steps, to show how the allocator's size classes move the figure.

The database given is flushed before and after.
"""

import argparse
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
}
LAYOUTS = ("appended", "per metric", "packed")
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
    assert store.finish(experiment_id, token, "succeeded")
    found["packed"] = usage(client, [packed_key(experiment_id)])
    return found


def claimed(store: Store, spec: ExperimentSpec) -> tuple[str, str]:
    experiment_id, token = uuid.uuid4().hex, "bench"
    store.create(experiment_id, spec.model_dump(mode="json"))
    store.claim(experiment_id, token, lease_seconds=600, max_attempts=1)
    return experiment_id, token


def real_run(store: Store, spec: ExperimentSpec) -> tuple[int, int, dict[str, int]]:
    """(values, raw bytes, bytes per layout) of one trained experiment."""
    experiment_id, token = claimed(store, spec)
    result = train(spec, StoreSink(store, experiment_id, token))
    arrays = {name: np.asarray(result.trace[name]) for name in ALL_METRICS}
    return values_and_raw(arrays) + (measure_layouts(store, experiment_id, token),)


def values_and_raw(arrays: dict[str, np.ndarray]) -> tuple[int, int]:
    """Every value of every metric, (rows,), (rows, layers) or (rows, seq_len), and their bytes in Redis."""
    values = sum(array.size for array in arrays.values())
    raw = sum(len(blob) for blob in TraceChunk(arrays).to_bytes().values())
    return values, raw


def synthetic_run(store: Store, rows: int, layers: int = 9) -> tuple[int, int, dict[str, int]]:
    """The default spec's trace shape with `rows` traced steps, appended CHUNK_ROWS rows at a time."""
    rng = np.random.default_rng(rows)
    experiment_id, token = claimed(store, ExperimentSpec(steps=rows))
    store.update(experiment_id, token, layers=[{"name": f"l{i}", "kind": "linear"} for i in range(layers)])
    arrays = {"step": np.arange(rows), "clipped": rng.random(rows) > 0.5}
    arrays |= {name: rng.random(rows) for name in STEP_METRICS if name != "clipped"}
    arrays |= {name: rng.random((rows, layers)) for name in LAYER_METRICS}
    for start in range(0, rows, CHUNK_ROWS):
        chunk = TraceChunk({name: array[start : start + CHUNK_ROWS] for name, array in arrays.items()})
        store.append_chunk(experiment_id, token, chunk, min(start + CHUNK_ROWS, rows))
    return values_and_raw(arrays) + (measure_layouts(store, experiment_id, token),)


def row(name: str, values: int, raw: int, found: dict[str, int]) -> str:
    per_value = "".join(f" {found[layout] / values:11.2f}" for layout in LAYOUTS)
    return (f"{name:36s} {values:10,d} {raw / values:6.2f}{per_value}"
            f" {found['packed']:11,d} {found['per metric'] / found['packed']:9.3f}")


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
          + f" {'packed B':>11s} {'pm/packed':>9s}")
    specs = {name: fields for name, fields in SPECS.items() if not args.quick or not fields}
    try:
        for name, fields in specs.items():
            print(row(name, *real_run(store, ExperimentSpec(**fields))), flush=True)
        sweep = {layout: [] for layout in LAYOUTS}
        for rows in np.unique(np.geomspace(50, 5000, 40).astype(int)):
            values, _, found = synthetic_run(store, int(rows))
            for layout in LAYOUTS:
                sweep[layout].append(found[layout] / values)
        print("\nsize sweep, the default spec's shape (9 layers), 50 to 5,000 traced steps, 40 lengths:")
        print(f"{'layout':12s} {'min':>6s} {'median':>6s} {'mean':>6s} {'max':>6s} {'share <= 4.5':>13s}")
        for layout, figures in sweep.items():
            figures = np.array(figures)
            print(f"{layout:12s} {figures.min():6.2f} {np.median(figures):6.2f} {figures.mean():6.2f}"
                  f" {figures.max():6.2f} {np.mean(figures <= 4.5):13.0%}")
    finally:
        client.flushdb()


if __name__ == "__main__":
    main()
