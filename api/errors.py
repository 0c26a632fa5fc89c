"""Every error the API answers, as the one JSON body of API.md.

`{"error": {"code": ..., "message": ..., "details": [{"loc": [...], "msg": ...}]}}`

Our own errors are `ApiError`s, which are Werkzeug `HTTPException`s, so that one
handler renders them and Werkzeug's (404, 405, 413, ...) alike. The store's
exceptions and Redis outages are translated here, so that views never catch them.
"""

import logging
from typing import Any

import redis
from flask import Flask, Response, current_app, json, request
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from shared.store import ExperimentNotFound, StatusConflict

log = logging.getLogger("gradtrace.api")

# Werkzeug's exceptions carry a status and a title; clients branch on a stable code.
CODES = {
    400: "invalid_json",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "redis_unavailable",
}


class ApiError(HTTPException):
    """An error answer of ours: a status, a message, and where in the input the problem lies.

    `error_code` replaces the status's code where clients must tell two errors of one
    status apart; `headers` are added to the answer (401's WWW-Authenticate, 429's Retry-After).
    """

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None, *,
                 error_code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code = status
        self.details = details or []
        self.error_code = error_code
        self.extra_headers = headers or {}

    def get_headers(self, environ=None, scope=None) -> list[tuple[str, str]]:
        return [*super().get_headers(environ, scope), *self.extra_headers.items()]


def redis_unavailable(error: Exception) -> ApiError:
    """The 503 of a Redis that does not answer: the message says so, the client may retry."""
    return ApiError(503, f"Redis unreachable: {error}")


def queue_full(count: int, cap: int, adding: int) -> ApiError:
    """The 409 of a submit or sweep that would take its tenant over the cap of unfinished experiments."""
    return ApiError(
        409,
        f"too many unfinished experiments: this token has {count} queued or running, the cap is {cap}, "
        f"and this request would add {adding}; nothing was queued: retry once some have finished, or cancel some",
        error_code="queue_full",
    )


def error_body(code: str, message: str, details: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON body of every error answer."""
    return {"error": {"code": code, "message": message, "details": details}}


def _message(error: HTTPException) -> str:
    if isinstance(error, RequestEntityTooLarge):
        return f"the request body is larger than the limit of {current_app.config['MAX_CONTENT_LENGTH']} bytes"
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        return f"{request.method} is not allowed on {request.path}; allowed: {', '.join(sorted(error.valid_methods))}"
    return error.description or error.name


def handle_http_exception(error: HTTPException) -> Response:
    """Render any HTTPException as JSON, keeping its headers (405's Allow, for one).

    Werkzeug's own page is never built: it would put the message, which may quote the
    client's input (a lone surrogate, say), into HTML and encode it.
    """
    status = error.code or 500
    code = getattr(error, "error_code", None) or CODES.get(status) or error.name.lower().replace(" ", "_")
    body = error_body(code, _message(error), getattr(error, "details", []))
    headers = [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]
    # json.dumps escapes every non-ASCII character, so any string the client sent encodes.
    return Response(json.dumps(body), status, headers, mimetype="application/json")


def handle_not_found(error: ExperimentNotFound) -> Response:
    return handle_http_exception(ApiError(404, str(error)))


def handle_conflict(error: StatusConflict) -> Response:
    return handle_http_exception(ApiError(409, str(error)))


def handle_redis_down(error: Exception) -> Response:
    return handle_http_exception(redis_unavailable(error))


def handle_unexpected(error: Exception) -> Response:
    """A bug of ours: logged with its trace here, a plain 500 for the client."""
    log.exception("unhandled error on %s %s", request.method, request.path)
    return handle_http_exception(ApiError(500, "internal error; it has been logged"))


def register(app: Flask) -> None:
    """Install the handlers, so that no answer of the app is ever an HTML page or a trace."""
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ExperimentNotFound, handle_not_found)
    app.register_error_handler(StatusConflict, handle_conflict)
    for exception in (redis.ConnectionError, redis.TimeoutError, OperationalError):
        app.register_error_handler(exception, handle_redis_down)
    app.register_error_handler(Exception, handle_unexpected)
