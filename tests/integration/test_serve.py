"""`gradtrace serve` as a user starts it: embedded Redis, a worker, the API; Ctrl-C stops all."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from api.client import Client
from tests.conftest import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def start_serve(data_dir: Path, port: int) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env["GRADTRACE_FLUSH_SECONDS"] = "0.2"
    return subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "serve", "--port", str(port),
         "--data-dir", str(data_dir), "--workers", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_ready(process: subprocess.Popen, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if "is ready at" in line:
            return line
    process.kill()
    raise AssertionError("serve did not get ready:\n" + "".join(lines))


def embedded_redis_port(data_dir: Path) -> int:
    """The port of the Redis that serve started, read from its command line."""
    pid = int((data_dir / "redis" / "redis.pid").read_text())
    title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]  # "redis-server 127.0.0.1:PORT"
    return int(title.rsplit(b":", 1)[1])


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    status = process.wait(60)
    process.stdout.close()
    return status


def test_serve_round_trip_and_restart(tmp_path):
    port = free_port()
    process = start_serve(tmp_path, port)
    try:
        wait_ready(process)
        redis_port_first = embedded_redis_port(tmp_path)
        client = Client(f"http://127.0.0.1:{port}")
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").status == 200
        started = time.monotonic()
        experiment = client.submit({"depth": 6, "steps": 40})
        finished = client.wait(experiment["id"], timeout=120, interval=0.05)
        round_trip = time.monotonic() - started
        assert finished["status"] == "succeeded", finished
        traces = client.traces(experiment["id"], ["grad_norm"])
        assert len(traces["steps"]) == 40 and len(traces["grad_norm"][0]) == 7
        print(f"round trip of depth 6, 40 steps through gradtrace serve: {round_trip:.2f} s")
    finally:
        assert stop(process) == 0
    # Everything it started is gone: the Redis port no longer answers.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=redis_port_first, socket_connect_timeout=1).ping()

    process = start_serve(tmp_path, port)
    try:
        wait_ready(process)
        again = Client(f"http://127.0.0.1:{port}").get(experiment["id"])
        assert again["status"] == "succeeded"
        assert again["summary"] == finished["summary"]
    finally:
        assert stop(process) == 0
