"""The JSON log lines of shared/logs.py: one object a line, the experiment id wherever a line is about one."""

import json
import logging

import pytest

from shared import logs


def line(record: logging.LogRecord) -> dict:
    text = logs.JsonFormatter().format(record)
    assert "\n" not in text
    return json.loads(text)


def record(message: str = "hello %s", args=("world",), **extra) -> logging.LogRecord:
    made = logging.LogRecord("gradtrace.worker", logging.INFO, __file__, 1, message, args, None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_line_is_one_json_object_with_the_message_formatted():
    found = line(record())
    assert found["message"] == "hello world" and found["level"] == "INFO" and found["logger"] == "gradtrace.worker"
    assert found["time"].endswith("Z") and isinstance(found["process"], int)
    assert "experiment_id" not in found


def test_the_experiment_id_comes_from_extra_the_context_or_celery():
    assert line(record(experiment_id="e1"))["experiment_id"] == "e1"
    with logs.experiment_context("e2"):
        assert line(record())["experiment_id"] == "e2"
        assert line(record(experiment_id="e3"))["experiment_id"] == "e3"  # the line's own comes first
    assert "experiment_id" not in line(record())
    celery_line = record("Task %(name)s[%(id)s] received", ({"name": "gradtrace.run_experiment", "id": "e4"},),
                         data={"name": "gradtrace.run_experiment", "id": "e4"})
    found = line(celery_line)
    assert found["experiment_id"] == "e4" and found["message"] == "Task gradtrace.run_experiment[e4] received"


def test_request_fields_and_exceptions_are_kept():
    try:
        raise RuntimeError("boom \n two lines")
    except RuntimeError:
        import sys

        failed = record(exc_info=None, method="GET", path="/x", status=500, duration_ms=1.5)
        failed.exc_info = sys.exc_info()
    found = line(failed)
    assert (found["method"], found["path"], found["status"], found["duration_ms"]) == ("GET", "/x", 500, 1.5)
    assert "RuntimeError: boom" in found["exception"]


def test_a_format_that_is_neither_text_nor_json_is_refused():
    assert logs.check_format("JSON") == "json" and logs.check_format("") == "text"
    with pytest.raises(ValueError, match="text, json"):
        logs.check_format("yaml")
