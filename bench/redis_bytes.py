"""Bytes Redis holds per traced value, measured with MEMORY USAGE on real runs written by the real store.

    .venv/bin/python bench/redis_bytes.py [--redis redis://127.0.0.1:6379/12]

The database given is flushed before and after.
"""

import argparse
import uuid

import redis

from shared.spec import ExperimentSpec
from shared.store import Store, trace_key
from shared.traces import ALL_METRICS
from worker.runner import StoreSink
from worker.train import train

SPECS = {
    "depth 6, 40 steps": dict(depth=6, steps=40),
    "default (depth 8, 300 steps)": dict(),
    "depth 20, 2000 steps": dict(depth=20, steps=2000, width=32),
    "depth 50, 2000 steps": dict(depth=50, steps=2000, width=32, init="kaiming_normal"),
    "rnn depth 2, seq_len 50, 500 steps": dict(arch="rnn", depth=2, width=32, seq_len=50, steps=500),
}


def measure(store: Store, spec: ExperimentSpec) -> tuple[int, int]:
    """(bytes, values) of one finished experiment's trace keys."""
    experiment_id = uuid.uuid4().hex
    store.create(experiment_id, spec.model_dump(mode="json"))
    token = "bench"
    store.claim(experiment_id, token, lease_seconds=600, max_attempts=1)
    result = train(spec, StoreSink(store, experiment_id, token))
    store.finish(experiment_id, token, "succeeded")
    # Every value of every metric: (rows,), (rows, layers) and, for an RNN, (rows, seq_len).
    values = sum(result.trace[name].size for name in ALL_METRICS)
    used = sum(store.redis.memory_usage(trace_key(experiment_id, m), samples=0) or 0 for m in ALL_METRICS)
    return used, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis)
    client.flushdb()
    store = Store(client)
    print(f"{'run':32s} {'values':>10s} {'bytes':>10s} {'bytes/value':>12s}")
    try:
        for name, fields in SPECS.items():
            used, values = measure(store, ExperimentSpec(**fields))
            print(f"{name:32s} {values:10,d} {used:10,d} {used / values:12.2f}")
    finally:
        client.flushdb()


if __name__ == "__main__":
    main()
