"""The Celery app's configuration, in one place: the API sends with it, workers run with it."""

import ssl
from urllib.parse import parse_qs, urlsplit

from celery import Celery
from kombu import Queue

from shared.limits import LIMITS

RUN_TASK = "gradtrace.run_experiment"
QUEUES = ("cpu", "gpu")

# The longest run the cost bound admits, with room: a CPU does well over 2e9
# multiply-accumulates a second forward and backward, so LIMITS.cost is under an hour.
HARD_TIME_LIMIT = 4 * 3600
SOFT_TIME_LIMIT = HARD_TIME_LIMIT - 60
# Above the longest allowed run, or Redis would hand a running task to a second worker.
VISIBILITY_TIMEOUT = HARD_TIME_LIMIT + 3600

assert LIMITS.cost / 2e9 < SOFT_TIME_LIMIT


# The ssl_* query parameters of a rediss:// URL, as redis-py reads them (?ssl_cert_reqs=required&ssl_ca_certs=...).
SSL_PARAMETERS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def broker_ssl(redis_url: str) -> dict | None:
    """The broker's TLS options of a rediss:// URL, certificates checked unless the URL says otherwise.

    redis-py verifies the server's certificate of a rediss:// URL by default, but kombu
    does not (it warns and sets CERT_NONE): the broker is given the same options as
    the store, so that both sides of a worker trust the same server.
    """
    parts = urlsplit(redis_url)
    if parts.scheme != "rediss":
        return None
    query = {name: values[-1] for name, values in parse_qs(parts.query).items() if name in SSL_PARAMETERS}
    reqs = query.pop("ssl_cert_reqs", "required").lower().removeprefix("cert_")
    if reqs not in CERT_REQS:
        raise ValueError(f"REDIS_URL: ssl_cert_reqs must be one of {', '.join(CERT_REQS)}, not {reqs!r}")
    return {"ssl_cert_reqs": CERT_REQS[reqs], **query}


def make_celery(redis_url: str, shutdown_grace_seconds: float = 0.0) -> Celery:
    """A Celery app on the given Redis, with the delivery settings of DESIGN.md.

    `shutdown_grace_seconds` matters to a worker only: how long a cold shutdown (SIGQUIT, or
    SIGTERM, which worker/main.py maps to it) lets running tasks go on before it cancels them.
    """
    app = Celery("gradtrace", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=HARD_TIME_LIMIT,
        task_soft_time_limit=SOFT_TIME_LIMIT,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        broker_connection_retry_on_startup=True,
        # A worker outlives a Redis outage of any length and goes on when Redis is back.
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Soft shutdown: running experiments get the grace period, then are handed back.
        worker_soft_shutdown_timeout=shutdown_grace_seconds,
        # An idle worker holds nothing (no ETA or countdown messages here), so it leaves at once.
        worker_enable_soft_shutdown_on_idle=False,
        # A new pool process imports torch and runs a warm-up step before it says it is up (worker/tasks.py):
        # seconds on a busy host. Celery's 4 s default killed replacements in a loop after a Redis restart.
        worker_proc_alive_timeout=60,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="cpu",
        task_create_missing_queues=False,
    )
    if broker_ssl(redis_url) is not None:
        app.conf.broker_use_ssl = broker_ssl(redis_url)
    return app
