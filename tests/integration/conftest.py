"""A real Celery worker process on the tests' Redis, and the API in front of it."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from api.app import create_app

ROOT = Path(__file__).resolve().parents[2]


def worker_env(redis_url: str, **extra: str) -> dict[str, str]:
    # Short trace flushes so that tests see progress quickly; one torch thread per process.
    return {**os.environ, "REDIS_URL": redis_url, "GRADTRACE_FLUSH_SECONDS": "0.2",
            "GRADTRACE_TORCH_THREADS": "1", **extra}


def start_worker(redis_url: str, log_path: Path, concurrency: int = 1, **env: str) -> subprocess.Popen:
    """`gradtrace worker` as a real process (the same module the CLI runs)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "--concurrency", str(concurrency), "--loglevel", "INFO"],
            cwd=ROOT, env=worker_env(redis_url, **env), stdout=log, stderr=subprocess.STDOUT,
        )


def stop_worker(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def live_redis_url(redis_url) -> Iterator[str]:
    """The tests' Redis on a database of the live-worker tests' own.

    Flushed only before and after the session: a flush under a running worker would
    also drop the queue bindings that Celery's Redis transport keeps there.
    """
    base, _, db = redis_url.rpartition("/")
    url = f"{base}/{int(db) + 1}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def worker_process(live_redis_url, tmp_path_factory) -> Iterator[subprocess.Popen]:
    process = start_worker(live_redis_url, tmp_path_factory.mktemp("worker") / "worker.log")
    yield process
    stop_worker(process)


@pytest.fixture
def app(live_redis_url, worker_process):
    assert worker_process.poll() is None, "the test worker died"
    return create_app({"REDIS_URL": live_redis_url, "TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()
