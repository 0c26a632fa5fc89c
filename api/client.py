"""A small Python client of the HTTP API (stdlib only); the CLI's client commands use it."""

import json
import time
import urllib.error
import urllib.parse
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


def _api_error(status: int, payload: bytes) -> ApiError:
    """The ApiError of an error answer: its JSON error body, or the start of whatever else it was."""
    try:
        error = json.loads(payload)["error"]
        return ApiError(status, error.get("code", ""), error.get("message", ""), error.get("details"))
    except (ValueError, KeyError, TypeError, AttributeError):
        text = payload.decode(errors="replace").strip()[:200] or "(empty body)"
        return ApiError(status, "http_error", text)


def _part(text: str) -> str:
    """An id as one path segment: a typo such as "a/b" or "x?y" names no other resource."""
    return urllib.parse.quote(text, safe="")


class Client:
    """The API at `base_url`; with a `token`, every request carries `Authorization: Bearer <token>`, and
    with a `lang` (en, zh) `Accept-Language: <lang>`, which words the diagnoses in that language."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 30.0,
                 lang: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.lang = lang

    def __repr__(self) -> str:
        # The token stays out of reprs, and so out of tracebacks and logs.
        return f"Client({self.base_url!r}, token={'***' if self.token else None})"

    def _open(self, method: str, path: str, body: Any = None):
        """Send one request; the open response, or ApiError (an error answer, or no answer at all)."""
        data = None if body is None else json.dumps(body).encode()
        try:
            request = urllib.request.Request(self.base_url + path, data=data, method=method)
        except ValueError as exc:  # no scheme, or an unknown one: GRADTRACE_URL=localhost:8000
            raise ApiError(0, "bad_url", f"{self.base_url} is not a URL the client can use: {exc}") from None
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if self.lang:
            request.add_header("Accept-Language", self.lang)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise _api_error(exc.code, exc.read()) from None
        except urllib.error.URLError as exc:
            raise ApiError(0, "unreachable", f"cannot reach {self.base_url}: {exc.reason}") from None
        except OSError as exc:  # a timeout or a reset before the answer began
            raise ApiError(0, "unreachable", f"no answer from {self.base_url}: {exc}") from None

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON request; the decoded answer, or ApiError."""
        with self._open(method, path, body) as response:
            try:
                payload = response.read()
            except OSError as exc:
                raise ApiError(0, "unreachable", f"the answer from {self.base_url} broke off: {exc}") from None
            status = response.status
        try:
            return json.loads(payload) if payload else None
        except ValueError:
            raise ApiError(status, "bad_response", f"{self.base_url} did not answer JSON; is it gradtrace?") from None

    def submit(self, spec: dict) -> dict:
        return self.request("POST", "/api/v1/experiments", spec)

    def get(self, experiment_id: str) -> dict:
        return self.request("GET", f"/api/v1/experiments/{_part(experiment_id)}")

    def traces(self, experiment_id: str, metrics: list[str] | None = None) -> dict:
        query = f"?metrics={','.join(metrics)}" if metrics else ""
        return self.request("GET", f"/api/v1/experiments/{_part(experiment_id)}/traces{query}")

    def cancel(self, experiment_id: str) -> dict:
        return self.request("POST", f"/api/v1/experiments/{_part(experiment_id)}/cancel")

    def download(self, experiment_id: str, fmt: str, chunk_bytes: int = 1 << 16) -> Iterator[bytes]:
        """The trace file in a format of API.md (json, npz, csv), a chunk at a time as it arrives.

        The request is sent, and its errors raised, at the first `next()`.
        """
        query = urllib.parse.urlencode({"format": fmt})
        with self._open("GET", f"/api/v1/experiments/{_part(experiment_id)}/traces?{query}") as response:
            while True:
                try:
                    chunk = response.read(chunk_bytes)
                except OSError as exc:
                    raise ApiError(0, "unreachable", f"the download broke off: {exc}") from None
                if not chunk:
                    return
                yield chunk

    def workers(self) -> list[dict]:
        """The live worker nodes (API.md), each with its queues, concurrency, device and active experiments."""
        return self.request("GET", "/api/v1/workers")["workers"]

    def submit_sweep(self, body: dict) -> dict:
        return self.request("POST", "/api/v1/sweeps", body)

    def get_sweep(self, sweep_id: str) -> dict:
        return self.request("GET", f"/api/v1/sweeps/{_part(sweep_id)}")

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
