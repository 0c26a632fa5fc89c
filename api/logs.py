"""The API's log lines in json mode (GRADTRACE_LOG_FORMAT=json, shared/logs.py): gunicorn's own lines
and one line per request, with the experiment or sweep it was about.

A request line names the method, the path (never the query string or a header, so never
a token), the status and the time taken. Probes and scrapes (/healthz, /readyz, /metrics)
are logged at DEBUG, so that a scrape every few seconds does not bury the rest.
"""

import logging
import time

from flask import Flask, Response, g, request
from gunicorn.glogging import Logger

from shared import logs
from shared.settings import Settings

log = logging.getLogger("gradtrace.api.request")

QUIET_PATHS = ("/healthz", "/readyz", "/metrics")


class GunicornLogger(Logger):
    """gunicorn's logger (`--logger-class api.logs.GunicornLogger`): its error and access lines as JSON in
    json mode, unchanged in text mode. gunicorn builds it before the app, so it reads the setting itself."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        if logs.check_format(Settings().log_format) == "json":
            logs.use_json(self.error_log.handlers + self.access_log.handlers)


def _started() -> None:
    g.request_started = time.perf_counter()


def _about(response: Response) -> dict[str, str]:
    """The experiment or sweep that a request was about: from the URL, or the Location of a 202."""
    found = {}
    args = request.view_args or {}
    if args.get("experiment_id"):
        found["experiment_id"] = args["experiment_id"]
    if args.get("sweep_id"):
        found["sweep_id"] = args["sweep_id"]
    location = response.headers.get("Location", "")
    for prefix, field in (("/api/v1/experiments/", "experiment_id"), ("/api/v1/sweeps/", "sweep_id")):
        if location.startswith(prefix):
            found[field] = location.removeprefix(prefix)
    return found


def _log_request(response: Response) -> Response:
    started = g.get("request_started")
    elapsed = None if started is None else round(1000 * (time.perf_counter() - started), 2)
    level = logging.DEBUG if request.path in QUIET_PATHS else logging.INFO
    log.log(level, "%s %s %s", request.method, request.path, response.status_code,
            extra={"method": request.method, "path": request.path, "status": response.status_code,
                   "duration_ms": elapsed, **_about(response)})
    return response


def init_app(app: Flask) -> None:
    """In json mode, every line of this process as JSON, and one line per request; nothing in text mode."""
    if logs.check_format(app.config.get("LOG_FORMAT", "text")) != "json":
        return
    logs.configure("json")
    # First of the before_request functions, so that one refused by auth is timed too.
    app.before_request_funcs.setdefault(None, []).insert(0, _started)
    app.after_request(_log_request)
