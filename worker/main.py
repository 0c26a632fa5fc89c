"""`gradtrace worker`: one Celery worker node, its concurrency and torch threads chosen for the host."""

import argparse
import logging
import os
import socket
import sys

from celery.signals import after_setup_logger, after_setup_task_logger

from shared import logs
from shared.celery_app import QUEUES, make_celery
from shared.settings import Settings
from worker import registry


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, a container's cpuset), else the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform (macOS)
        return os.cpu_count() or 1


def default_concurrency(queues: list[str]) -> int:
    """One process per GPU on a GPU node, else one per core: small models scale by processes (bench/scale.py)."""
    if queues == ["gpu"]:
        return max(1, _gpu_count())
    return usable_cores()


def default_threads(concurrency: int) -> int:
    """Torch threads per pool process: the cores shared out, so that the processes never oversubscribe them."""
    return max(1, usable_cores() // concurrency)


def _gpu_count() -> int:
    # Counted without initializing CUDA in this parent: the pool forks after this.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        return len([n for n in os.listdir("/proc/driver/nvidia/gpus")])
    except OSError:
        return 0


def _json_handlers(logger: logging.Logger, **_) -> None:
    """Celery's after_setup_logger: its handlers write JSON lines (GRADTRACE_LOG_FORMAT=json)."""
    logs.use_json(logger.handlers)


def _say_json(message: str, f=sys.__stderr__) -> None:
    """Celery's `safe_say` in json mode: the shutdown notices that its signal handlers write straight to a
    file descriptor (never through logging, whose locks a signal handler must not take) as JSON lines."""
    try:
        os.write(f.fileno(), logs.json_line(message))
    except (OSError, ValueError, AttributeError):
        pass  # as Celery's own: losing a notice must never abort the shutdown


def _use_json_logs() -> None:
    """Every line of the node and its pool processes as JSON (GRADTRACE_LOG_FORMAT=json), set up in the
    parent before it forks the pool: Celery's handlers once it has made them, its shutdown notices, warnings."""
    after_setup_logger.connect(_json_handlers, weak=False)
    after_setup_task_logger.connect(_json_handlers, weak=False)
    # Imported here, after main() set REMAP_SIGTERM: it imports billiard.common, which reads it once.
    from celery.apps import worker as celery_worker_app

    celery_worker_app.safe_say = _say_json
    logging.captureWarnings(True)


def main(argv: list[str] | None = None) -> None:
    # SIGTERM (docker stop, a scale-in) becomes Celery's cold shutdown with its soft wait: running
    # experiments get GRADTRACE_SHUTDOWN_GRACE_SECONDS, then are handed back, rather than a warm
    # shutdown that waits for them however long. billiard reads this once, when first imported.
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    parser = argparse.ArgumentParser(prog="gradtrace worker", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=0, help="pool processes (default: cores, or GPUs)")
    parser.add_argument("--queues", default="cpu", help="comma-separated: cpu, gpu")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown or not queues:
        parser.error(f"--queues: unknown queue(s) {', '.join(unknown) or '(none)'}; use cpu, gpu")
    settings = Settings()
    if not settings.redis_url:
        parser.error("REDIS_URL is not set (gradtrace serve sets it for its own workers)")
    try:
        json_logs = logs.check_format(settings.log_format) == "json"
    except ValueError as error:
        parser.error(str(error))
    concurrency = args.concurrency or default_concurrency(queues)
    threads = settings.torch_threads or default_threads(concurrency)
    os.environ["GRADTRACE_TORCH_THREADS"] = str(threads)
    # The parent does no torch work; keep OpenMP from sizing itself to the whole machine.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))

    node = f"gradtrace-{'-'.join(queues)}-{os.getpid()}@{socket.gethostname()}"
    # The pool processes announce the node (worker/registry.py): they inherit its facts from here.
    os.environ[registry.NODE_ENV] = registry.node_env(node, queues, concurrency, threads)

    import worker.tasks  # noqa: F401  (registers the task)

    if json_logs:
        _use_json_logs()
    app = make_celery(settings.redis_url, shutdown_grace_seconds=settings.shutdown_grace_seconds)
    app.worker_main([
        *(["--quiet"] if json_logs else []),  # the startup banner is text, not a log line
        "worker",
        f"--loglevel={args.loglevel}",
        f"--concurrency={concurrency}",
        f"--queues={','.join(queues)}",
        "--pool=prefork",
        f"--hostname={node}",
        "--without-gossip",
        "--without-mingle",
    ])
