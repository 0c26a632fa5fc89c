"""Polling helpers of the live-worker tests, and `gradtrace api` started as a user starts it."""

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def start_api(env: dict, ready_path: str = "/readyz") -> tuple[subprocess.Popen, str]:
    """`gradtrace api` (gunicorn, one process) on a free port, once `ready_path` answers; the process and its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "api", "--port", str(port), "--processes", "1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + ready_path, timeout=2)
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError("gradtrace api did not start") from None
            time.sleep(0.1)


def wait_for(client, experiment_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 120):
    """Poll the API until the experiment reaches one of the statuses."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/v1/experiments/{experiment_id}").get_json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"experiment {experiment_id} still {body['status']} after {timeout}s: {body}")
        time.sleep(0.1)
