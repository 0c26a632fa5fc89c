"""GRADTRACE_LOG_FORMAT=json: a real worker and `gradtrace api` under gunicorn log one JSON object a line,
the experiment's id on every line about it, and never a token."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from api.client import Client
from tests.conftest import free_port
from tests.integration.conftest import ROOT, start_worker, stop_worker

pytestmark = pytest.mark.integration

TOKEN = "tok-never-in-a-log-3141"


def json_lines(path: Path) -> list[dict]:
    """Every line of the log, each of which must be a JSON object."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert lines, f"{path} is empty"
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line in {path.name}: {line!r}")
    return parsed


def start_api(redis_url: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "from api.cli import main; main()", "api", "--port", str(port), "--processes", "1"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "REDIS_URL": redis_url, "GRADTRACE_LOG_FORMAT": "json", "GRADTRACE_API_TOKENS": TOKEN},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2)
            return process, url
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)


def test_worker_and_api_log_json_lines_with_the_experiment_id(redis_url, redis_client, tmp_path):
    worker_log, api_log = tmp_path / "worker.log", tmp_path / "api.log"
    worker = start_worker(redis_url, worker_log, GRADTRACE_LOG_FORMAT="json")
    api, url = start_api(redis_url, api_log)
    try:
        client = Client(url, token=TOKEN)
        experiment_id = client.submit({"depth": 2, "width": 8, "steps": 5})["id"]
        deadline = time.monotonic() + 120
        while client.get(experiment_id)["status"] != "succeeded":
            assert worker.poll() is None and time.monotonic() < deadline, worker_log.read_text()[-3000:]
            time.sleep(0.1)
        client.traces(experiment_id)
        with pytest.raises(Exception):
            Client(url, token="wrong-token-2718").get(experiment_id)
    finally:
        api.terminate()
        api.wait(10)
        stop_worker(worker)

    worker_lines = json_lines(worker_log)
    about = [entry for entry in worker_lines if experiment_id in entry["message"]]
    assert len(about) >= 3  # Celery's received and succeeded, the runner's attempt
    assert all(entry.get("experiment_id") == experiment_id for entry in about)
    assert any("received" in entry["message"] for entry in about)
    assert any(entry["message"].endswith("attempt 1") for entry in about)
    assert any("succeeded in" in entry["message"] for entry in about)
    assert any("ready" in entry["message"] for entry in worker_lines)  # Celery's own lines are JSON too

    api_lines = json_lines(api_log)
    requests = [entry for entry in api_lines if entry["logger"] == "gradtrace.api.request"]
    submitted = next(entry for entry in requests if entry["method"] == "POST")
    assert (submitted["path"], submitted["status"], submitted["experiment_id"]) == (
        "/api/v1/experiments", 202, experiment_id)
    assert any(entry["path"].endswith("/traces") and entry["experiment_id"] == experiment_id for entry in requests)
    assert any(entry["status"] == 401 and entry["experiment_id"] == experiment_id for entry in requests)
    assert any(entry["logger"].startswith("gunicorn") for entry in api_lines)  # gunicorn's own lines
    for text in (worker_log.read_text(), api_log.read_text()):
        assert TOKEN not in text and "wrong-token-2718" not in text


def test_text_stays_the_default(redis_url, redis_client, tmp_path):
    """Without the setting the API writes what it wrote before: gunicorn's plain lines, no request lines."""
    log = tmp_path / "api.log"
    port = free_port()
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "from api.cli import main; main()", "api", "--port", str(port), "--processes", "1"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={key: value for key, value in {**os.environ, "REDIS_URL": redis_url}.items()
                 if key != "GRADTRACE_LOG_FORMAT"},
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(10)
    text = log.read_text()
    assert "Booting worker" in text and not text.lstrip().startswith("{")


def test_an_unknown_log_format_stops_the_command(redis_url):
    done = subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", "api", "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={**os.environ, "REDIS_URL": redis_url, "GRADTRACE_LOG_FORMAT": "yaml"},
    )
    assert done.returncode == 2 and "GRADTRACE_LOG_FORMAT must be one of text, json" in done.stderr
