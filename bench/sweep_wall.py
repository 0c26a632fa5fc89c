"""Wall time of a sweep run end to end through a running service, and what each point came to.

    .venv/bin/gradtrace serve --workers 2 &        # or any deployment; GRADTRACE_URL names it
    .venv/bin/python bench/sweep_wall.py [--url http://127.0.0.1:8000] [--base JSON] [--grid JSON] [--delete]

The default grid is activation x init x seed, 3 x 3 x 3 = 27 points, over a depth-10,
width-32 MLP of 200 steps. The clock runs from the POST until no point is queued or
running; the figure is that wall time, with the sum of the points' own training time
beside it to show how much of it the workers ran in parallel.
"""

import argparse
import json
import os
import time

from api.client import Client

# cache false: a second run of the benchmark times training, not answers from the result cache.
BASE = {"depth": 10, "width": 32, "steps": 200, "cache": False}
GRID = {
    "activation": ["relu", "tanh", "sigmoid"],
    "init": ["default", "xavier_uniform", "kaiming_normal"],
    "seed": [0, 1, 2],
}
# Seconds to wait for a worker node to be listed before giving up.
WORKER_WAIT = 60.0


def wait_for_workers(client: Client) -> list[dict]:
    """The live worker nodes, once there are any: a node just started is listed when its pool has imported torch."""
    deadline = time.monotonic() + WORKER_WAIT
    while not (workers := client.request("GET", "/api/v1/workers")["workers"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    return workers


def run(client: Client, base: dict, grid: dict, timeout: float) -> tuple[dict, float]:
    """Submit the sweep and poll it until it has finished; the sweep and the wall seconds."""
    started = time.perf_counter()
    created = client.request("POST", "/api/v1/sweeps", {"base": base, "grid": grid, "name": "bench/sweep_wall.py"})
    while True:
        sweep = client.request("GET", f"/api/v1/sweeps/{created['id']}")
        if sweep["status"] == "finished":
            return sweep, time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"sweep {created['id']} not finished after {timeout}s: {sweep['counts']}")
        time.sleep(0.2)


def _number(value: float | None, form: str) -> str:
    return "-" if value is None else format(value, form)


def report(sweep: dict, wall: float, workers: list[dict]) -> None:
    processes = sum(worker["concurrency"] for worker in workers)
    print(f"sweep {sweep['id']}: {sweep['size']} points, base {json.dumps(sweep['base'])}")
    print(f"workers: {len(workers)} node(s), {processes} process(es): "
          + ", ".join(f"{w['name']} ({w['device']}, {w['concurrency']})" for w in workers))
    print(f"{'point':64} {'status':10} {'verdict':11} {'final_loss':>10} {'step0 ratio':>11} {'train s':>8}")
    train = 0.0
    for row in sweep["experiments"]:
        seconds = (row["summary"] or {}).get("train_seconds") or 0.0
        train += seconds
        print(f"{json.dumps(row['point']):64} {row['status']:10} {row['verdict'] or '-':11} "
              f"{_number(row['final_loss'], '10.4f')} {_number(row['step0_grad_ratio'], '11.2e')} {seconds:8.2f}")
    print("\nover seeds (final_loss mean ± std; log10 step-0 ratio mean ± std; verdicts):")
    for group in sweep["aggregate"]:
        loss, ratio = group["final_loss"], group["step0_grad_ratio_log10"]
        print(f"  {json.dumps(group['point']):56} {_number(loss['mean'], '.4f')} ± {_number(loss['std'], '.4f')}   "
              f"{_number(ratio['mean'], '.2f')} ± {_number(ratio['std'], '.2f')}   {json.dumps(group['verdicts'])}")
    print(f"\ncounts: {json.dumps(sweep['counts'])}")
    print(f"wall time: {wall:.2f} s for {sweep['size']} points ({wall / sweep['size']:.3f} s a point); "
          f"training time summed over points: {train:.2f} s ({train / wall:.2f}x the wall time)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("GRADTRACE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--base", type=json.loads, default=BASE, help="the base spec, as JSON")
    parser.add_argument("--grid", type=json.loads, default=GRID, help="the grid, as JSON")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--delete", action="store_true", help="delete the sweep and its experiments afterwards")
    args = parser.parse_args()
    client = Client(args.url)
    workers = wait_for_workers(client)
    if not workers:
        raise SystemExit(f"no live worker node at {args.url} after {WORKER_WAIT:.0f} s: the sweep would never finish")
    sweep, wall = run(client, args.base, args.grid, args.timeout)
    report(sweep, wall, workers)
    if args.delete:
        client.request("DELETE", f"/api/v1/sweeps/{sweep['id']}")


if __name__ == "__main__":
    main()
