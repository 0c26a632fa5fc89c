"""Probes for orchestrators: /healthz says the process answers, /readyz that Redis does too."""

from flask import Blueprint

from api.resources import get_resources

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> dict:
    """Liveness: answers without touching Redis, so a Redis outage never restarts the API."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> dict:
    """Readiness: Redis answers PING; otherwise the error handler's 503 says Redis is unreachable."""
    get_resources().redis.ping()
    return {"status": "ok", "redis": "ok"}
