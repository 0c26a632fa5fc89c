"""The API under load: GET an experiment and its traces from a second process (wrk), under gunicorn.

    apt-get install -y wrk          # Debian/Ubuntu (brew install wrk on macOS)
    .venv/bin/python bench/api_load.py [--seconds 10] [--connections 1,8,32] [--before DIR]

Everything on loopback, started here and stopped at the end: a Redis of its own (the
redis-server that `gradtrace serve` uses), one real worker process that runs one experiment (the
default spec: depth 8, 300 steps, a trace of 23,100 values), and the API under gunicorn as the
project starts it (`api.serve.gunicorn_argv`: gthread, 8 threads a process), with 2 processes as
`gradtrace serve`, `gradtrace api` and docker-compose.yml run it, and with 1 (what `serve` ran
before). Once the run has succeeded
the worker is stopped, and wrk (one thread, its own process) drives
`GET /api/v1/experiments/{id}` and `GET /api/v1/experiments/{id}/traces` for `--seconds` each
at each connection count, the APIs in turns; the table gives wrk's p50 and p99 latency and the
requests per second held, with any error.

`--before DIR` adds the API of an older checkout (`git archive COMMIT | tar -x -C DIR`) as one
more 2 x 8 API, run from DIR's source and without hiredis (redis-py's pure-Python parser, as
before the project asked for hiredis). A checkout from before the packed trace layout reads the
per-metric keys, so the trace is also written there for it (the same bytes).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import redis

from api.serve import free_port, gunicorn_argv, redis_server_binary
from harness import stop
from shared.store import Store, trace_key
from shared.traces import ALL_METRICS, TraceChunk

ROOT = Path(__file__).resolve().parent.parent
# name: (source directory, gunicorn processes).
APIS = {"now 1x8": (ROOT, 1), "now 2x8": (ROOT, 2)}
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def need_wrk() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench/api_load.py needs wrk: apt-get install -y wrk (Debian/Ubuntu), brew install wrk")
    return found


class Processes:
    """Children started here, stopped in reverse order at the end whatever happens."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], **options) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **options)
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        stop(process, timeout=15)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            self.stop(process)


def wait_for(probe, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except (OSError, redis.ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"bench/api_load.py: {what} did not come up within {timeout:.0f} s")
        time.sleep(0.2)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def start_api(processes: Processes, name: str, source: Path, workers: int, env: dict) -> str:
    """gunicorn as `gradtrace api` runs it, from `source`'s code; its base URL once /readyz answers."""
    port = free_port()
    path = [str(source)]
    if source != ROOT:  # hide hiredis: redis-py falls back to its own parser when the import fails
        shim = processes.logs / "no-hiredis"
        shim.mkdir(exist_ok=True)
        (shim / "hiredis.py").write_text("raise ImportError('hidden by bench/api_load.py')\n")
        path.insert(0, str(shim))
    processes.start(f"api-{name.replace(' ', '-')}", gunicorn_argv("127.0.0.1", port, workers), cwd=source,
                    env={**env, "PYTHONPATH": os.pathsep.join(path)})
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: get_json(url + "/readyz"), f"the API {name}")
    return url


def run_experiment(processes: Processes, url: str, env: dict) -> str:
    """Submit the default spec, let one real worker process run it, stop the worker; the experiment's id."""
    worker = processes.start("worker", [sys.executable, "-m", "worker", "--concurrency", "1", "--queues", "cpu"],
                             cwd=ROOT, env=env)
    request = urllib.request.Request(url + "/api/v1/experiments", data=json.dumps({"cache": False}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        experiment_id = json.load(response)["id"]
    wait_for(lambda: get_json(f"{url}/api/v1/experiments/{experiment_id}")["status"] == "succeeded",
             "the experiment", timeout=180)
    processes.stop(worker)
    return experiment_id


def write_per_metric(client: redis.Redis, experiment_id: str) -> None:
    """The trace once more in the per-metric keys that an API from before the packed layout reads."""
    layers, arrays = Store(client).read_traces(experiment_id)
    for name, blob in TraceChunk({name: arrays[name] for name in ALL_METRICS if name in arrays}).to_bytes().items():
        client.set(trace_key(experiment_id, name), blob)


def wrk(binary: str, url: str, connections: int, seconds: int) -> dict:
    """wrk's p50 and p99 (ms), requests per second and errors for one URL."""
    out = subprocess.run([binary, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout

    def latency(percent: str) -> float:
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M).groups()
        return float(value) * UNITS[unit]

    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = sum(map(int, socket_errors.groups())) if socket_errors else 0
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return {"p50": latency("50"), "p99": latency("99"),
            "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="per endpoint, API and connection count")
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--before", type=Path, help="an older checkout whose API runs beside (2 x 8)")
    args = parser.parse_args()
    binary = need_wrk()
    apis = dict(APIS)
    if args.before:
        apis["before 2x8"] = (args.before.resolve(), 2)
    connections = [int(count) for count in args.connections.split(",")]
    with tempfile.TemporaryDirectory(prefix="gradtrace-load-") as directory:
        processes = Processes(Path(directory))
        try:
            port = free_port()
            processes.start("redis", [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                                      "--dir", directory, "--save", "", "--appendonly", "no"])
            redis_url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(redis_url)
            wait_for(client.ping, "Redis")
            env = {**os.environ, "REDIS_URL": redis_url, "GRADTRACE_DATA_DIR": directory}
            urls = {name: start_api(processes, name, source, workers, env)
                    for name, (source, workers) in apis.items()}
            experiment_id = run_experiment(processes, urls["now 2x8"], env)
            if args.before:
                write_per_metric(client, experiment_id)
            paths = {"experiment": f"/api/v1/experiments/{experiment_id}",
                     "traces": f"/api/v1/experiments/{experiment_id}/traces"}
            for url in urls.values():  # every API answers the same, and each process has served once
                bodies = [urllib.request.urlopen(url + path, timeout=30).read() for path in paths.values()]
                assert json.loads(bodies[1])["steps"][-1] == 299, "the trace is not the run's"
            print(f"wrk -t1 -cN -d{args.seconds}s --latency, loopback; experiment {experiment_id} "
                  f"({len(bodies[0]):,d} B), its traces as JSON ({len(bodies[1]):,d} B, 23,100 values)")
            print(f"{'endpoint':10s} {'api':11s} {'conns':>5s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>8s}"
                  f" {'errors':>6s}")
            for endpoint, path in paths.items():
                for count in connections:
                    for name, url in urls.items():
                        figures = wrk(binary, url + path, count, args.seconds)
                        print(f"{endpoint:10s} {name:11s} {count:5d} {figures['p50']:8.2f} {figures['p99']:8.2f}"
                              f" {figures['rate']:8.0f} {figures['errors']:6d}", flush=True)
        finally:
            processes.stop_all()


if __name__ == "__main__":
    main()
