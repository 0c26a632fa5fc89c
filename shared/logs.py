"""Log lines as plain text (the default) or one JSON object a line (GRADTRACE_LOG_FORMAT=json), for
the API and the workers alike, so that a log pipeline can parse and search them.

A JSON line holds `time`, `level`, `logger`, `message`, `process`, the line's own fields
(a request's `method`, `path`, `status`, `duration_ms`) and, on every line about an
experiment, its `experiment_id`. That id comes from, in order: the line's `extra`, the
experiment that this thread is running (`experiment_context`), or Celery's own task
lines, whose task id is the experiment id (DESIGN.md). No line carries a token:
nothing logs request headers, and the API's request lines name the path alone.
"""

import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

FORMATS = ("text", "json")
# The experiment that this thread (or task) is working on, for the lines that do not name it.
_EXPERIMENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("gradtrace_experiment", default=None)
# Fields that a line may carry through `extra=` and that a JSON line shows as its own.
FIELDS = ("experiment_id", "sweep_id", "method", "path", "status", "duration_ms", "attempt", "outcome")
# A handler that `configure` added, told apart from the ones that others (pytest, gunicorn) added.
HANDLER_NAME = "gradtrace-json"


@contextmanager
def experiment_context(experiment_id: str) -> Iterator[None]:
    """Mark every line logged inside the block (by any module) as being about this experiment."""
    token = _EXPERIMENT.set(experiment_id)
    try:
        yield
    finally:
        _EXPERIMENT.reset(token)


def experiment_of(record: logging.LogRecord) -> str | None:
    """The experiment a line is about, if any: its `extra`, the running experiment, or a Celery task line's id."""
    named = getattr(record, "experiment_id", None) or _EXPERIMENT.get()
    if named:
        return named
    data = getattr(record, "data", None)  # Celery's task lines: extra={"data": {"id": ..., "name": ...}}
    if isinstance(data, dict) and data.get("id"):
        return str(data["id"])
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for field in FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        experiment_id = experiment_of(record)
        if experiment_id:
            entry["experiment_id"] = experiment_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def check_format(log_format: str) -> str:
    """The format, lower-cased; ValueError for one that is neither text nor json (a typo must not go unseen)."""
    found = (log_format or "text").strip().lower()
    if found not in FORMATS:
        raise ValueError(f"GRADTRACE_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {log_format!r}")
    return found


def use_json(handlers: list[logging.Handler]) -> None:
    """Give these handlers (Celery's, gunicorn's) the JSON formatter."""
    for handler in handlers:
        handler.setFormatter(JsonFormatter())


def configure(log_format: str, level: int = logging.INFO) -> None:
    """In json mode, send the root logger's lines (every module's) to stderr as JSON, once per process;
    in text mode leave logging as it is."""
    if check_format(log_format) != "json":
        return
    root = logging.getLogger()
    if not any(handler.get_name() == HANDLER_NAME for handler in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(HANDLER_NAME)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    logging.captureWarnings(True)  # warnings become JSON lines too, not bare text on stderr


def json_line(message: str, level: str = "WARNING", logger: str = "celery.worker") -> bytes:
    """One JSON line built without the logging module, for code that must not take its locks
    (a signal handler writes it with os.write)."""
    entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
             "level": level, "logger": logger, "message": message.strip(), "process": os.getpid()}
    return (json.dumps(entry, ensure_ascii=False) + "\n").encode()
