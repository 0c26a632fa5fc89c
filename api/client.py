"""A small Python client of the HTTP API (stdlib only); the CLI's client commands use it."""

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

FINISHED = ("succeeded", "failed", "cancelled")


class ApiError(Exception):
    """An error answer of the API, with its status and JSON error body."""

    def __init__(self, status: int, code: str, message: str, details: list | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []


class Client:
    """The API at `base_url`; with a `token`, every request carries `Authorization: Bearer <token>`."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        # The token stays out of reprs, and so out of tracebacks and logs.
        return f"Client({self.base_url!r}, token={'***' if self.token else None})"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON request; the decoded answer, or ApiError."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                error = json.loads(payload)["error"]
            except (ValueError, KeyError, TypeError):
                raise ApiError(exc.code, "http_error", payload.decode(errors="replace")[:200]) from None
            raise ApiError(exc.code, error.get("code", ""), error.get("message", ""), error.get("details")) from None
        except urllib.error.URLError as exc:
            raise ApiError(0, "unreachable", f"cannot reach {self.base_url}: {exc.reason}") from None
        return json.loads(payload) if payload else None

    def submit(self, spec: dict) -> dict:
        return self.request("POST", "/api/v1/experiments", spec)

    def get(self, experiment_id: str) -> dict:
        return self.request("GET", f"/api/v1/experiments/{experiment_id}")

    def traces(self, experiment_id: str, metrics: list[str] | None = None) -> dict:
        query = f"?metrics={','.join(metrics)}" if metrics else ""
        return self.request("GET", f"/api/v1/experiments/{experiment_id}/traces{query}")

    def cancel(self, experiment_id: str) -> dict:
        return self.request("POST", f"/api/v1/experiments/{experiment_id}/cancel")

    def follow(self, experiment_id: str, interval: float = 0.5) -> Iterator[dict]:
        """The experiment's record at each poll, ending with its finished state."""
        while True:
            experiment = self.get(experiment_id)
            yield experiment
            if experiment["status"] in FINISHED:
                return
            time.sleep(interval)

    def wait(self, experiment_id: str, timeout: float = 3600.0, interval: float = 0.5) -> dict:
        """Poll until the experiment has finished; TimeoutError past the timeout."""
        deadline = time.monotonic() + timeout
        for experiment in self.follow(experiment_id, interval):
            if time.monotonic() > deadline:
                raise TimeoutError(f"experiment {experiment_id} still {experiment['status']} after {timeout}s")
        return experiment
