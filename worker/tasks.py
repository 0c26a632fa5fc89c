"""The Celery task: thin like a view. The work is in worker/runner.py."""

import os
from functools import cache

import redis
from celery import shared_task
from celery.exceptions import Reject
from celery.signals import worker_process_init, worker_process_shutdown

from shared import logs
from shared.celery_app import RUN_TASK, make_celery
from shared.settings import Settings
from shared.store import Store
from worker import registry, runner, sweeper


@cache
def _context() -> tuple[Store, Settings, runner.LeaseKeeper]:
    """This pool process's own Redis connection, settings and lease keeper (never shared across a fork)."""
    settings = Settings()
    # Bounded waits: a Redis that stops answering ends the attempt (handed back) instead of hanging it;
    # redis-py's own retries ride out a restart of a second or two (appends are safe to retry).
    client = redis.Redis.from_url(
        settings.redis_url, health_check_interval=30, socket_connect_timeout=5, socket_timeout=10
    )
    store = Store(client, retention_seconds=settings.retention_seconds)
    return store, settings, runner.LeaseKeeper(store, settings.lease_seconds)


@worker_process_init.connect
def _init_process(**_) -> None:
    # Each pool process gets its share of the cores; the parent never touches torch,
    # since forking after OpenMP threads have started can hang the child (pytorch#17199).
    import torch

    torch.set_num_threads(int(os.environ.get("GRADTRACE_TORCH_THREADS", "1")))
    from worker.allocator import keep_memory
    from worker.train import warm_up

    keep_memory()  # keep one step's buffers for the next (worker/allocator.py)

    warm_up()  # pay the imports before the first task, not during it

    _context.cache_clear()
    store, settings, _ = _context()
    sweeper.start(store, make_celery(settings.redis_url), settings.sweep_seconds, settings.queued_grace_seconds)
    # The node's heartbeat is written from here, not from the parent, which forks (worker/registry.py).
    registry.start(store.redis)


@worker_process_shutdown.connect
def _leave_registry(**_) -> None:
    registry.stop()


@shared_task(name=RUN_TASK, ignore_result=True)
def run_experiment(experiment_id: str) -> str:
    # A second delivery of a run that is live elsewhere ('busy') is simply dropped: should that
    # worker die, its lease lapses and the sweeper queues the run again. The record, not the message,
    # is the source of truth, so no message is kept waiting (no countdown, no ETA) for it.
    store, settings, lease = _context()
    with logs.experiment_context(experiment_id), registry.running(experiment_id):
        outcome = runner.run(store, settings, lease, experiment_id)
    if outcome == "handed back":
        raise Reject(f"experiment {experiment_id} handed back", requeue=True)
    return outcome
