"""Throughput of worker processes and torch threads on CPU-bound experiments: do 2 processes do twice the work of 1?

    flock /tmp/gradtrace-cpu.lock .venv/bin/python bench/scale.py [--experiments 8] [--depth 16] [--width 128]
        [--steps 200] [--rounds 2] [--layouts 1x2,2x1,2x2,1x1,1x2p]

A layout PxT is one real `python -m worker --concurrency P` node with
GRADTRACE_TORCH_THREADS=T (T torch threads in each pool process). For each
layout in turn, round after round (interleaved, so that a change in the
machine's load reaches every layout alike), the same batch of experiments
(MLPs of the given depth and width, batch size 64, full tracing, distinct seeds,
`"cache": false`) is submitted at once through the API (`gradtrace api`'s
gunicorn, from this checkout) to a throwaway Redis, and timed from the first
POST until every one has succeeded. The table gives the median wall time over
the rounds, experiments per second, the ratio to the first layout, and the
mean of the runs' own `train_seconds` (a process slowed by a neighbour shows
there). On a 2-core machine: 1x2 is one process using both cores through
threads, 2x1 is what `gradtrace worker` chooses by default (one process per core,
cores // processes threads each), 2x2 oversubscribes the cores, 1x1 is the
one-process reference of 2x1, and 1x2p is 1x2 with OMP_WAIT_POLICY=PASSIVE
(OpenMP threads sleep when idle rather than spin, which matters when other
processes want the cores too).
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from harness import Api, api_server, throwaway_redis, worker_node


def layout(text: str) -> tuple[int, int, bool]:
    """PxT, or PxTp for OpenMP threads that sleep at once when idle (OMP_WAIT_POLICY=PASSIVE) instead of spinning."""
    processes, threads = text.lower().split("x")
    return int(processes), int(threads.rstrip("p")), threads.endswith("p")


def layout_name(processes: int, threads: int, passive: bool) -> str:
    return f"{processes} x {threads}" + (" passive" if passive else "")


def batch(args: argparse.Namespace, round_: int) -> list[dict]:
    return [
        {"depth": args.depth, "width": args.width, "steps": args.steps, "batch_size": 64,
         "seed": round_ * 1000 + i, "cache": False}
        for i in range(args.experiments)
    ]


def measure(api: Api, specs: list[dict]) -> dict[str, float]:
    t0 = time.perf_counter()
    ids = [api.submit(spec) for spec in specs]
    api.wait_finished(ids, poll=0.1, timeout=1800)
    wall = time.perf_counter() - t0
    summaries = [json.loads(row[0]) for row in api.fields(ids, "summary")]
    return {"wall": wall, "train": statistics.mean(s["train_seconds"] for s in summaries)}


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    print(f"\n{args.experiments} experiments of MLP depth {args.depth} x width {args.width}, batch 64, "
          f"{args.steps} steps, full tracing; {args.rounds} rounds, interleaved; {os.cpu_count()} cores")
    print(f"{'processes x threads':20} {'wall s (median)':>16} {'exp/s':>7} {'x first':>8} "
          f"{'train s per run':>16}   rounds (wall s)")
    first = None
    for name, rounds in results.items():
        wall = statistics.median(r["wall"] for r in rounds)
        first = first or wall
        train = statistics.median(r["train"] for r in rounds)
        walls = ", ".join(f"{r['wall']:.1f}" for r in rounds)
        print(f"{name:20} {wall:16.2f} {args.experiments / wall:7.2f} {first / wall:8.2f} {train:16.2f}   {walls}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=8)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--layouts", default="1x2,2x1,2x2,1x1,1x2p",
                        help="PxT: P worker processes of T torch threads; PxTp: OpenMP threads wait passively")
    parser.add_argument("--log", type=Path, default=Path("/tmp/gradtrace-bench-scale.log"))
    args = parser.parse_args()
    layouts = [layout(text) for text in args.layouts.split(",")]
    results: dict[str, list[dict]] = {layout_name(*chosen): [] for chosen in layouts}
    with throwaway_redis() as redis_url, api_server(redis_url, log=args.log) as api_url:
        api = Api(api_url, redis_url)
        for round_ in range(args.rounds):
            for processes, threads, passive in layouts:
                name = layout_name(processes, threads, passive)
                print(f"round {round_ + 1}/{args.rounds}: {name} ...", flush=True)
                env = {"OMP_WAIT_POLICY": "PASSIVE"} if passive else {}
                with worker_node(redis_url, concurrency=processes, threads=threads, env=env, log=args.log):
                    api.wait_finished([api.submit({**batch(args, round_)[0], "steps": 1})])  # warm
                    results[name].append(measure(api, batch(args, round_)))
                api.flush()
    report(results, args)


if __name__ == "__main__":
    main()
