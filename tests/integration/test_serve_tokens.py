"""`gradtrace serve` with API tokens, as a user runs it: it gets ready (its readiness check sends a token),
binds to 127.0.0.1 only, the CLI takes --token and GRADTRACE_TOKEN, and no log holds a token."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from api.client import ApiError, Client
from api.serve import free_port, gunicorn_argv
from tests.integration.test_serve import embedded_redis_port, stop, wait_ready

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKENS = ("serve-token-7f3a9c2e41d8", "other-token-0b5e6d7c8a9f")


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on a TCP port, from /proc/net/tcp and tcp6 (hex)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {key: value for key, value in os.environ.items() if key not in ("GRADTRACE_TOKEN", "GRADTRACE_API_TOKENS")}
    return subprocess.run([sys.executable, "-c", "from api.cli import main; main()", *args], cwd=ROOT,
                          env={**base, **env}, capture_output=True, text=True, timeout=120)


def test_serve_with_tokens(tmp_path):
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update(GRADTRACE_FLUSH_SECONDS="0.2", GRADTRACE_API_TOKENS=",".join(TOKENS))
    process = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "serve", "--port", str(port),
         "--data-dir", str(tmp_path), "--workers", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process)  # only once /api/v1/workers, which needs a token, listed the worker
        assert listening_addresses(port) == {"0100007F"}
        assert listening_addresses(embedded_redis_port(tmp_path)) == {"0100007F"}

        with pytest.raises(ApiError) as refused:
            Client(url).request("GET", "/api/v1/workers")
        assert refused.value.status == 401
        assert Client(url, token=TOKENS[0]).request("GET", "/api/v1/workers")["workers"]

        submitted = cli("--token", TOKENS[0], "submit", "--depth", "2", "--steps", "10", "--wait", GRADTRACE_URL=url)
        assert submitted.returncode == 0, submitted.stderr
        experiment_id = submitted.stdout.split()[0]
        mine = cli("status", experiment_id, "--token", TOKENS[0], GRADTRACE_URL=url)
        assert mine.returncode == 0 and "succeeded" in mine.stdout, mine.stderr
        by_env = cli("status", experiment_id, GRADTRACE_URL=url, GRADTRACE_TOKEN=TOKENS[0])
        assert by_env.returncode == 0 and "succeeded" in by_env.stdout, by_env.stderr
        others = cli("status", experiment_id, GRADTRACE_URL=url, GRADTRACE_TOKEN=TOKENS[1])
        assert others.returncode == 1 and f"no experiment {experiment_id}" in others.stderr
        anonymous = cli("status", experiment_id, GRADTRACE_URL=url)
        assert anonymous.returncode == 1 and "needs a token" in anonymous.stderr
    finally:
        assert stop(process) == 0
    logs = "".join(path.read_text(errors="replace") for path in tmp_path.glob("*.log"))
    assert "Booting worker" in logs  # the API's log is there, and was read
    for token in TOKENS:
        assert token not in logs


def test_gunicorns_access_log_holds_no_token(redis_url, redis_client, tmp_path):
    """Even with the access log on, which `serve` and `gradtrace api` leave off, a token never shows."""
    port, log = free_port(), tmp_path / "access.log"
    env = {**os.environ, "REDIS_URL": redis_url, "GRADTRACE_API_TOKENS": TOKENS[0]}
    argv = gunicorn_argv("127.0.0.1", port, 1, "--access-logfile", str(log), "--error-logfile", str(log))
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "gunicorn did not start"
                time.sleep(0.1)
        for token in (TOKENS[0], TOKENS[0] + "-wrong"):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/experiments",
                                             headers={"Authorization": f"Bearer {token}"})
            try:
                urllib.request.urlopen(request, timeout=5).read()
            except urllib.error.HTTPError as error:
                assert error.code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    text = log.read_text()
    assert text.count("GET /api/v1/experiments") == 2
    assert TOKENS[0] not in text and "Bearer" not in text
