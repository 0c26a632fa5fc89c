"""Worker nodes announce themselves: every pool process keeps a heartbeat key with a TTL in Redis.

`GET /api/v1/workers` (api/workers.py) groups the live keys by node. Each key
(shared.store.worker_key) holds a JSON object: the node's facts (`node`,
`hostname`, `pid`, `queues`, `concurrency`, `torch_threads`, `started_at`), this
process's (`process`, `device`, `gpus`, `seen_at`) and the experiment it is running
(`experiment`, or null). It is written every HEARTBEAT_SECONDS and expires after
TTL_SECONDS, so a node that dies, or is killed with -9, drops out on its own.

Why the pool processes and not the node's parent: the parent forks pool processes
whenever one must be replaced (a crash, a time limit), and a fork while another
thread runs can leave the child with a lock that no one will ever release
(DESIGN.md; pytorch#17199). So the parent starts no thread and touches no torch
or CUDA: it only hands its facts to the pool through the environment
(`GRADTRACE_WORKER_NODE`, set by worker/main.py before the pool starts). The
thread runs in each pool process, which never forks, beside the lease heartbeat
and the sweeper, on that process's own Redis connection. The price: a node
whose pool processes are all gone is not listed, which is right, since it can
run nothing until Celery replaces them, and the new ones announce themselves.
"""

import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis

from shared.store import WORKERS_KEY, now_iso, worker_key

log = logging.getLogger("gradtrace.registry")

HEARTBEAT_SECONDS = 5.0
TTL_SECONDS = 15
NODE_ENV = "GRADTRACE_WORKER_NODE"
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def node_env(name: str, queues: list[str], concurrency: int, torch_threads: int) -> str:
    """The node's facts as the parent hands them to its pool processes (a JSON string)."""
    return json.dumps({
        "node": name, "hostname": socket.gethostname(), "pid": os.getpid(), "queues": queues,
        "concurrency": concurrency, "torch_threads": torch_threads, "started_at": now_iso(),
    })


def gpu_names(root: Path = NVIDIA_GPUS, visible: str | None = None) -> list[str]:
    """The GPUs this process may use, by model name, read from the driver's /proc files without touching CUDA."""
    try:
        folders = sorted(root.iterdir())
    except OSError:
        return []
    names = []
    for folder in folders:
        try:
            lines = (folder / "information").read_text().splitlines()
        except OSError:
            continue
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model:")), "unknown GPU")
        names.append(model)
    if visible is None:
        return names
    # CUDA_VISIBLE_DEVICES narrows the list: indices pick from it, UUIDs or MIG names only count.
    chosen = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if any(entry.startswith("-") for entry in chosen):
        chosen = chosen[:next(i for i, entry in enumerate(chosen) if entry.startswith("-"))]
    if all(entry.isdigit() for entry in chosen):
        return [names[int(entry)] for entry in chosen if int(entry) < len(names)]
    return names[:len(chosen)]


def device_info() -> tuple[str, list[str]]:
    """`cuda` with the GPU names when this process's torch build could use one, else `cpu`."""
    import torch  # already imported by the pool process; never called in the parent

    gpus = gpu_names(visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
    return ("cuda", gpus) if torch.version.cuda and gpus else ("cpu", [])


class Registry:
    """One pool process's heartbeat: the node's facts, this process's device and its current experiment."""

    def __init__(self, redis: Redis, node: dict, device: str, gpus: list[str], pid: int | None = None):
        self.redis = redis
        self.pid = pid or os.getpid()
        self.key = worker_key(node["node"], self.pid)
        self.facts = {**node, "process": self.pid, "device": device, "gpus": gpus}
        self.experiment: str | None = None
        self._stop = threading.Event()
        # The thread and the task both write: without the lock a beat that read the old experiment
        # could land after the task's own and show it for another period.
        self._lock = threading.Lock()

    def beat(self) -> None:
        """Write the heartbeat now, with a fresh TTL."""
        with self._lock, self.redis.pipeline(transaction=True) as pipe:
            if self._stop.is_set():  # left the registry: a late beat must not bring the key back
                return
            value = json.dumps({**self.facts, "experiment": self.experiment, "seen_at": now_iso()})
            pipe.set(self.key, value, ex=TTL_SECONDS)
            pipe.sadd(WORKERS_KEY, self.key)
            pipe.execute()

    def _loop(self) -> None:
        while True:
            try:
                self.beat()
            except Exception:  # Redis away: the next beat comes before the key expires, or the node drops out
                log.warning("worker heartbeat failed", exc_info=True)
            if self._stop.wait(HEARTBEAT_SECONDS):
                return

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name="gradtrace-registry", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Leave the registry at once (a clean shutdown) rather than when the key expires."""
        self._stop.set()
        with self._lock, self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.key)
            pipe.srem(WORKERS_KEY, self.key)
            pipe.execute()

    @contextmanager
    def running(self, experiment_id: str) -> Iterator[None]:
        """Show the experiment as this process's own while the block runs, written at once both ways."""
        self.experiment = experiment_id
        self._beat_quietly()
        try:
            yield
        finally:
            self.experiment = None
            self._beat_quietly()

    def _beat_quietly(self) -> None:
        try:
            self.beat()
        except Exception:  # the task must not fail for the registry's sake; the thread writes again soon
            log.warning("worker heartbeat failed", exc_info=True)


_current: Registry | None = None


def start(redis: Redis) -> Registry | None:
    """Announce this pool process, if its node said who it is (worker/main.py); None otherwise."""
    global _current
    raw = os.environ.get(NODE_ENV)
    if not raw:
        return None
    device, gpus = device_info()
    _current = Registry(redis, json.loads(raw), device, gpus)
    _current.start()
    return _current


def stop() -> None:
    """Leave the registry on a clean shutdown of the process; a failure leaves it to the TTL."""
    if _current is not None:
        try:
            _current.stop()
        except Exception:
            log.warning("could not leave the worker registry; the key expires on its own", exc_info=True)


@contextmanager
def running(experiment_id: str) -> Iterator[None]:
    """This process's Registry.running, or nothing when the process is not registered."""
    if _current is None:
        yield
        return
    with _current.running(experiment_id):
        yield
