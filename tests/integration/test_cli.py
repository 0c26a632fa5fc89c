"""The production path from the command line: `gradtrace api` under gunicorn, a worker, the client commands."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import start_api

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def gradtrace(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def api_url(live_redis_url, worker_process) -> Iterator[str]:
    process, url = start_api({**os.environ, "REDIS_URL": live_redis_url})
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
def env(api_url) -> dict[str, str]:
    return {**os.environ, "GRADTRACE_URL": api_url}


def test_submit_wait_status_watch(env, tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"depth": 20, "activation": "sigmoid", "steps": 10}))
    # Flags override the file: width comes from the flag, the rest from the file.
    done = gradtrace("submit", str(spec_file), "--width", "32", "--clipping", "norm:1.0", "--wait", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    experiment_id = done.stdout.splitlines()[0].strip()
    assert "verdict: vanishing" in done.stdout
    assert "10/10" in done.stderr  # the progress bar reached the end

    status = gradtrace("status", experiment_id, "--json", env=env)
    record = json.loads(status.stdout)
    assert record["status"] == "succeeded"
    assert record["spec"]["width"] == 32 and record["spec"]["depth"] == 20
    assert record["spec"]["clipping"] == {"mode": "norm", "threshold": 1.0}

    watched = gradtrace("watch", experiment_id, env=env)
    assert watched.returncode == 0 and "succeeded" in watched.stdout


def test_submit_shows_validation_errors(env):
    bad = gradtrace("submit", "--depth", "0", "--activaton", "tanh", env=env)
    assert bad.returncode != 0
    bad = gradtrace("submit", "--depth", "0", env=env)
    assert bad.returncode == 1
    assert "depth" in bad.stderr and "greater than or equal to 1" in bad.stderr


def test_status_of_unknown_id(env):
    missing = gradtrace("status", "nope", env=env)
    assert missing.returncode == 1 and "no experiment nope" in missing.stderr
