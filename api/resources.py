"""The app's connections: one Redis client, the Store and the per-tenant limits on it, and the Celery app.

Built once by the app factory and kept in `app.extensions`; views reach them
through the small getters below, so that nothing connects at import time.
"""

from dataclasses import dataclass

import redis
from celery import Celery
from flask import Flask, current_app, g

from shared.celery_app import make_celery
from shared.quotas import QueueCap, RateLimiter
from shared.store import Store

EXTENSION = "gradtrace"
# Seconds a pooled connection may sit idle before it is checked with a PING before use.
HEALTH_CHECK_SECONDS = 30


@dataclass
class Resources:
    redis: redis.Redis
    store: Store
    celery: Celery
    rate_limiter: RateLimiter
    queue_cap: QueueCap

    def close(self) -> None:
        """Release the sockets of both pools (tests, clean shutdowns)."""
        self.celery.close()
        self.redis.close()


def make_redis(url: str, timeout: float) -> redis.Redis:
    """A client that fails within `timeout` seconds when Redis is away, so the API says 503, not hangs."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        health_check_interval=HEALTH_CHECK_SECONDS,
    )


def make_sender(url: str, timeout: float) -> Celery:
    """The shared Celery app, with the sending side bounded by the same timeout as the store."""
    celery = make_celery(url)
    # The API only publishes: one quick retry covers a dropped pooled connection,
    # and a broker that stops answering fails the request instead of hanging it.
    celery.conf.broker_connection_timeout = timeout
    celery.conf.broker_transport_options = {
        **celery.conf.broker_transport_options,
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
    }
    celery.conf.task_publish_retry_policy = {
        "max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2,
    }
    return celery


def init_app(app: Flask) -> Resources:
    """Build the connections from the app's config and keep them on the app."""
    url, timeout = app.config["REDIS_URL"], app.config["REDIS_TIMEOUT"]
    client = make_redis(url, timeout)
    resources = Resources(
        redis=client,
        store=Store(client, retention_seconds=app.config["RETENTION_SECONDS"]),
        celery=make_sender(url, timeout),
        rate_limiter=RateLimiter(client, app.config["RATE_LIMIT"], app.config["RATE_BURST"]),
        queue_cap=QueueCap(client, app.config["MAX_QUEUED"]),
    )
    app.extensions[EXTENSION] = resources
    return resources


def get_resources() -> Resources:
    """The current app's connections."""
    return current_app.extensions[EXTENSION]


def get_store() -> Store:
    """The current app's Store."""
    return get_resources().store


def current_tenant() -> str:
    """The tenant whose experiments this request sees: "" until an auth layer sets `g.tenant`."""
    return g.get("tenant", "")
