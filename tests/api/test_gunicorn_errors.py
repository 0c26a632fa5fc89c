"""Over real HTTP, under gunicorn as `gradtrace api` and `serve` run it: the requests that gunicorn
refuses before Flask sees them are JSON errors too, and a chunked body is read (or refused) whole."""

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.serve import free_port, gunicorn_argv

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api_port(redis_url) -> Iterator[int]:
    """The API under gunicorn, one process, on a free port."""
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url}
    process = subprocess.Popen(gunicorn_argv("127.0.0.1", port, 1), cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not answers(port):
            assert process.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def answers(port: int) -> bool:
    try:
        return exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 200
    except OSError:
        return False


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole answer (the server closes): status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def chunked(body: bytes, size: int = 65536) -> bytes:
    pieces = [body[start:start + size] for start in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


POST = b"POST /api/v1/experiments HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
CASES = [
    ("request line too long", b"GET /" + b"x" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("too many headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
     + b"\r\n", 431),
    ("a header too large", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 10_000 + b"\r\n\r\n", 431),
    ("not HTTP", b"HELLO\r\n\r\n", 400),
    ("a header without a colon", b"GET /healthz HTTP/1.1\r\nHost: x\r\nnonsense\r\n\r\n", 400),
    ("an unknown transfer coding", POST + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    ("a bad chunk size", POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400),
    ("chunked, over the limit", POST + b"Transfer-Encoding: chunked\r\n\r\n"
     + chunked(b'{"name": "' + b"x" * (2 << 20) + b'"}'), 413),
    ("chunked, read whole", POST + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b'{"depth": 0}', 3), 422),
]


@pytest.mark.parametrize(("request_bytes", "status"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_every_error_over_http_is_json(api_port, request_bytes, status):
    found, headers, body = exchange(api_port, request_bytes)
    assert found == status, body[:300]
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert isinstance(error["code"], str) and error["message"] and isinstance(error["details"], list)
    assert "<html" not in error["message"]
