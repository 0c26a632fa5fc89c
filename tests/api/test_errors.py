"""Errors are JSON everywhere: unknown routes, wrong methods, our own bugs, and Redis going away."""

import socket
import time

import pytest

from api.app import create_app
from api.resources import EXTENSION, make_sender

URL = "/api/v1/experiments"
SOME_ID = "0123456789abcdef0123456789abcdef"


def assert_json_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code and error["message"] and isinstance(error["details"], list)
    return error


@pytest.mark.parametrize("path", ["/nope", "/api/v1", "/api/v1/experiment", f"{URL}/{SOME_ID}/nope", "/api/v2/experiments"])
def test_unknown_routes_are_404_json(client, path):
    assert_json_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("put", URL, {"GET", "POST"}),
        ("delete", URL, {"GET", "POST"}),
        ("put", f"{URL}/{SOME_ID}", {"GET", "DELETE"}),
        ("get", f"{URL}/{SOME_ID}/cancel", {"POST"}),
        ("post", f"{URL}/{SOME_ID}/traces", {"GET"}),
        ("post", "/healthz", {"GET"}),
    ],
)
def test_wrong_methods_are_405_json_with_allow(client, method, path, allowed):
    response = getattr(client, method)(path)
    error = assert_json_error(response, 405, "method_not_allowed")
    assert allowed <= set(response.headers["Allow"].replace(" ", "").split(","))
    assert method.upper() in error["message"]


def test_an_unexpected_exception_is_500_json_without_a_trace(app, client, caplog):
    @app.get("/boom")
    def boom():
        raise ZeroDivisionError("secret internals")

    error = assert_json_error(client.get("/boom"), 500, "internal_error")
    assert "secret" not in error["message"] and "Traceback" not in error["message"]
    assert "ZeroDivisionError" in caplog.text  # logged for us, not shown to the client


def test_healthz_and_readyz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ok", "redis": "ok"}


DOWN_REQUESTS = [
    ("post", URL, {"json": {"depth": 2}}),
    ("get", URL, {}),
    ("get", f"{URL}/{SOME_ID}", {}),
    ("post", f"{URL}/{SOME_ID}/cancel", {}),
    ("delete", f"{URL}/{SOME_ID}", {}),
    ("get", f"{URL}/{SOME_ID}/traces", {}),
    ("get", "/readyz", {}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), DOWN_REQUESTS, ids=[f"{m} {p}" for m, p, _ in DOWN_REQUESTS])
def test_redis_unreachable_is_503_json_quickly(down_app, method, path, kwargs):
    client = down_app.test_client()
    started = time.monotonic()
    error = assert_json_error(getattr(client, method)(path, **kwargs), 503, "redis_unavailable")
    assert time.monotonic() - started < 3
    assert error["message"].startswith("Redis unreachable")


def test_without_redis_the_process_is_still_alive(down_app):
    assert down_app.test_client().get("/healthz").get_json() == {"status": "ok"}


def test_validation_comes_before_redis(down_app):
    """A bad spec is the client's problem whatever the state of Redis."""
    response = down_app.test_client().post(URL, json={"depth": 0})
    assert_json_error(response, 422, "validation_error")


def test_a_failed_send_takes_the_record_back_and_is_503(app, client, redis_client, unreachable_url):
    resources = app.extensions[EXTENSION]
    resources.celery.close()
    # The store's Redis answers, the broker does not: the run could never start.
    resources.celery = make_sender(unreachable_url, 1.0)
    started = time.monotonic()
    error = assert_json_error(client.post(URL, json={}), 503, "redis_unavailable")
    assert time.monotonic() - started < 3
    assert "Redis unreachable" in error["message"]
    assert client.get(URL).get_json()["experiments"] == []
    assert not redis_client.keys("gradtrace:exp:*")


def test_a_redis_that_accepts_but_never_answers_is_503_within_the_timeout():
    # A listening socket nobody reads from: connections succeed, replies never come.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        app = create_app({"REDIS_URL": f"redis://127.0.0.1:{silent.getsockname()[1]}/0", "REDIS_TIMEOUT": 0.25})
        try:
            client = app.test_client()
            for method, path, kwargs in DOWN_REQUESTS:
                started = time.monotonic()
                assert_json_error(getattr(client, method)(path, **kwargs), 503, "redis_unavailable")
                assert time.monotonic() - started < 1.5, (method, path)
        finally:
            app.extensions[EXTENSION].close()
