"""The run task as a worker's app resolves it: the delivery settings of DESIGN.md hold for it too."""

import worker.tasks  # noqa: F401  (registers the shared task on every app)
from shared.celery_app import HARD_TIME_LIMIT, RUN_TASK, make_celery


def test_the_run_task_acks_late_and_goes_back_when_its_worker_is_lost():
    task = make_celery("redis://127.0.0.1:6379/0").tasks[RUN_TASK]
    assert task.acks_late and task.reject_on_worker_lost and task.ignore_result
    assert (task.time_limit or task.app.conf.task_time_limit) == HARD_TIME_LIMIT
    assert task.serializer == "json"
