"""The delivery settings of DESIGN.md, as the app resolves them (the run task's: tests/worker/test_tasks.py)."""

from shared.celery_app import HARD_TIME_LIMIT, SOFT_TIME_LIMIT, make_celery
from shared.limits import LIMITS


def test_the_app_has_the_delivery_settings():
    conf = make_celery("redis://127.0.0.1:6379/0", shutdown_grace_seconds=12.5).conf
    assert conf.task_serializer == conf.result_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit == HARD_TIME_LIMIT
    assert conf.task_soft_time_limit == SOFT_TIME_LIMIT < HARD_TIME_LIMIT
    assert LIMITS.cost / 2e9 < SOFT_TIME_LIMIT  # the costliest spec allowed fits, at 2e9 MAC/s
    assert conf.worker_cancel_long_running_tasks_on_connection_loss
    assert conf.worker_soft_shutdown_timeout == 12.5 and not conf.worker_enable_soft_shutdown_on_idle
    assert conf.broker_connection_max_retries is None
    assert conf.worker_proc_alive_timeout >= 30

