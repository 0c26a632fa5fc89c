"""Dispatch latency and tiny-experiment throughput through one real worker process.

    flock /tmp/gradtrace-cpu.lock .venv/bin/python bench/dispatch.py [--submits 200] [--batch 100] [--rounds 2]
    flock /tmp/gradtrace-cpu.lock .venv/bin/python bench/dispatch.py --worker REV --worker .   # REV's worker, then this checkout's

Everything runs here: a throwaway redis-server, a real `python -m worker
--concurrency 1` node (one pool process, one torch thread) and the API as
`gradtrace api` runs it (gunicorn, gthread, one process), both from the same
source tree; this script submits over one kept-alive HTTP connection.

(a) latency: one tiny experiment (depth 1, width 8, 1 step) at a time to an idle
worker: from just before `POST /api/v1/experiments` to the record's `started_at`
(set by the claim that makes it `running`; the worker's clock, same host,
millisecond resolution), and to `succeeded` as polled every 2 ms. The next submit
comes 20 ms after the previous run ended, so the worker waits on its queue.
Every spec says `"cache": false` where the tree has the result cache
(shared/cache.py), which would otherwise answer repeats at submit without a worker.
(b) throughput: a batch of tiny experiments (depth 1, width 8, steps 1..10)
submitted back to back; the wall time from the first POST until every one has
succeeded, and the worker's own rate (first `started_at` to last `finished_at`).

Each --worker is a git revision (its source exported with git archive), a
folder holding a source tree, or `.`, this checkout (the default); the workers take turns round by round, against
the same API, Redis and load, and the last is compared with the first.
"""

import argparse
import json
import statistics
import time
from datetime import datetime
from pathlib import Path

from harness import ROOT, Api, api_server, export_tree, percentile, throwaway_redis, worker_node

TINY = {"depth": 1, "width": 8, "steps": 1}


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def tiny(tree: Path, steps: int = 1) -> dict:
    """A tiny spec that runs on the worker: where the tree has the result cache, with it turned off."""
    return {**TINY, "steps": steps, **({"cache": False} if (tree / "shared" / "cache.py").exists() else {})}


def latency(api: Api, spec: dict, submits: int) -> dict[str, list[float]]:
    """Per submit: the POST itself, submit to running, submit to succeeded (seconds)."""
    post, running, done = [], [], []
    for _ in range(submits):
        t0 = time.time()
        experiment_id = api.submit(spec)
        posted = time.time()
        api.wait_finished([experiment_id])
        ended = time.time()
        (started_at,) = api.fields([experiment_id], "started_at")[0]
        post.append(posted - t0)
        running.append(seconds(started_at) - t0)
        done.append(ended - t0)
        time.sleep(0.02)
    return {"post": post, "running": running, "succeeded": done}


def throughput(api: Api, specs: list[dict]) -> dict[str, float]:
    """Experiments per second through the worker: wall from first POST to all succeeded, and the worker's own."""
    batch = len(specs)
    t0 = time.time()
    ids = [api.submit(spec) for spec in specs]
    submitted = time.time()
    api.wait_finished(ids, poll=0.01)
    wall = time.time() - t0
    rows = api.fields(ids, "started_at", "finished_at", "summary")
    spans = sorted((seconds(started), seconds(finished)) for started, finished, _ in rows)
    return {
        "wall_rate": batch / wall,
        "worker_rate": batch / (spans[-1][1] - spans[0][0]),
        "submit_s": submitted - t0,
        # Where a run's time goes: claim to finish, the training loop within it, and from one finish to the next claim.
        "run_ms": statistics.median(end - start for start, end in spans) * 1e3,
        "train_ms": statistics.median(json.loads(summary)["train_seconds"] for *_, summary in rows) * 1e3,
        "gap_ms": statistics.median(spans[i + 1][0] - spans[i][1] for i in range(len(spans) - 1)) * 1e3,
    }


def measure(redis_url: str, tree: Path, submits: int, batch: int, log: Path) -> dict:
    with api_server(redis_url, tree=tree, log=log) as api_url, worker_node(redis_url, tree=tree, log=log):
        api = Api(api_url, redis_url)
        for _ in range(10):  # the first runs of a fresh process pay lazy imports and caches
            api.wait_finished([api.submit(tiny(tree))])
        result = {**latency(api, tiny(tree), submits), **throughput(api, [tiny(tree, 1 + i % 10) for i in range(batch)])}
    api.flush()
    return result


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1e3:8.1f}"


def report(results: dict[str, list[dict]], submits: int, batch: int) -> None:
    names = list(results)
    print(f"\n(a) submit -> status, one at a time to an idle worker, {submits} submits x "
          f"{len(results[names[0]])} rounds per worker (ms)")
    print(f"{'worker':14} {'POST p50':>9} {'POST p99':>9} {'run p50':>8} {'run p99':>8} "
          f"{'done p50':>9} {'done p99':>9}")
    pooled = {}
    for name in names:
        pooled[name] = {key: [v for r in results[name] for v in r[key]] for key in ("post", "running", "succeeded")}
        p = pooled[name]
        print(f"{name:14} {ms(p['post'], 50):>9} {ms(p['post'], 99):>9} {ms(p['running'], 50)} "
              f"{ms(p['running'], 99)} {ms(p['succeeded'], 50):>9} {ms(p['succeeded'], 99):>9}")
    print(f"\n(b) {batch} tiny experiments (depth 1, width 8, steps 1..10) through 1 worker process, per round")
    print(f"{'worker':14} {'exp/s wall (median, rounds)':>40} {'exp/s worker':>13} {'submit s':>9} "
          f"{'claim->finish ms':>17} {'train loop ms':>14} {'finish->next claim ms':>22}")
    rates = {}
    for name in names:
        walls = [r["wall_rate"] for r in results[name]]
        workers = [r["worker_rate"] for r in results[name]]
        rates[name] = (statistics.median(walls), statistics.median(workers))
        rounds = ", ".join(f"{w:.1f}" for w in walls)
        print(f"{name:14} {rates[name][0]:8.1f} ({rounds}){'':>{max(0, 29 - len(rounds))}} "
              f"{rates[name][1]:13.1f} {statistics.median(r['submit_s'] for r in results[name]):9.2f} "
              + " ".join(f"{statistics.median(r[key] for r in results[name]):{width}.1f}"
                         for key, width in (("run_ms", 17), ("train_ms", 14), ("gap_ms", 22))))
    old = names[0]
    for new in names[1:]:
        def ratio(key: str, q: float) -> float:
            return percentile(pooled[new][key], q) / percentile(pooled[old][key], q)

        print(f"\n{new} / {old}: submit->running p50 x{ratio('running', 50):.2f}, p99 x{ratio('running', 99):.2f}; "
              f"submit->succeeded p50 x{ratio('succeeded', 50):.2f}, p99 x{ratio('succeeded', 99):.2f}; "
              f"throughput x{rates[new][0] / rates[old][0]:.2f} (wall), x{rates[new][1] / rates[old][1]:.2f} (worker)")


def tree_of(name: str) -> Path:
    """`.` is this checkout, a folder is taken as it is (a patched copy), anything else is a git revision."""
    if name == ".":
        return ROOT
    return Path(name) if Path(name).is_dir() else export_tree(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submits", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", action="append", default=[],
                        help="a git revision whose worker to run, or . for this checkout (repeat to compare)")
    parser.add_argument("--log", type=Path, default=Path("/tmp/gradtrace-bench-dispatch.log"))
    args = parser.parse_args()
    trees = {("checkout" if name == "." else Path(name).name[:12]): tree_of(name) for name in args.worker or ["."]}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    with throwaway_redis() as redis_url:
        for round_ in range(args.rounds):
            for name, tree in trees.items():
                print(f"round {round_ + 1}/{args.rounds}: {name} ...", flush=True)
                results[name].append(measure(redis_url, tree, args.submits, args.batch, args.log))
    report(results, args.submits, args.batch)


if __name__ == "__main__":
    main()
