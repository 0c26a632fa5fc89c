"""`GET /metrics`: Prometheus metrics for operators, read from Redis on each scrape.

Every number comes from Redis, never from this process's memory, so that every
gunicorn process answers the same and a restart of the API loses nothing:

- counters that the store's scripts keep where a status changes (shared.store.STATS_KEY):
  one HGETALL, however many experiments there are;
- experiments queued and running now: the sizes of the store's queued and running sets;
- queue depth: the length of each Celery queue's lists in the broker (the same Redis);
- live workers: the heartbeats of worker/registry.py.

Nothing here names a tenant. Open like /healthz unless GRADTRACE_METRICS_TOKEN is
set; then a scrape needs `Authorization: Bearer <that token>`.
"""

import hashlib
import hmac
from collections.abc import Iterator

from flask import Blueprint, Response, current_app
from kombu.transport.redis import Channel
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from api.auth import bearer_token, unauthorized
from api.resources import get_resources
from api.workers import live_processes
from shared.celery_app import QUEUES
from shared.store import FINISHED, QUEUED_KEY, RUNNING_KEY, STATS_KEY, TRAIN_SECONDS_BUCKETS

bp = Blueprint("metrics", __name__)

# The broker's lists of one queue: kombu's Redis transport keeps a list per priority step.
PRIORITY_SEP = Channel.sep
PRIORITY_STEPS = Channel.priority_steps
# Runs that a worker finished with a summary (failed ones have none).
TIMED = ("succeeded", "cancelled")


def broker_lists(queue: str) -> list[str]:
    """The Redis lists that hold a queue's waiting messages, one per priority step."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


class Snapshot:
    """What one scrape read from Redis, and the metric families built from it."""

    def __init__(self, counters: dict[str, str], queued: int, running: int, depths: dict[str, int],
                 processes: list[dict]):
        self.counters = counters
        self.queued = queued
        self.running = running
        self.depths = depths
        self.processes = processes

    @classmethod
    def read(cls, client) -> "Snapshot":
        """Everything a scrape shows, in two round trips (the heartbeats, then the rest)."""
        processes = live_processes(client)
        with client.pipeline(transaction=False) as pipe:
            pipe.hgetall(STATS_KEY)
            pipe.zcard(QUEUED_KEY)
            pipe.scard(RUNNING_KEY)
            for queue in QUEUES:
                for name in broker_lists(queue):
                    pipe.llen(name)
            raw, queued, running, *lengths = pipe.execute()
        per_queue = len(PRIORITY_STEPS)
        depths = {queue: sum(lengths[i * per_queue:(i + 1) * per_queue]) for i, queue in enumerate(QUEUES)}
        counters = {name.decode(): value.decode() for name, value in raw.items()}
        return cls(counters, queued, running, depths, processes)

    def count(self, name: str) -> float:
        return float(self.counters.get(name, 0))

    def collect(self) -> Iterator[Metric]:
        """The metric families, in the order of the README's table (generate_latest calls this)."""
        yield from self._experiments()
        yield self._train_seconds()
        yield from self._queues()
        yield from self._workers()

    def _experiments(self) -> Iterator[Metric]:
        now = GaugeMetricFamily("gradtrace_experiments", "Experiments queued or running now", labels=["status"])
        now.add_metric(["queued"], self.queued)
        now.add_metric(["running"], self.running)
        yield now
        yield CounterMetricFamily("gradtrace_experiments_submitted", "Experiments submitted (a sweep's points included)",
                                  value=self.count("submitted"))
        finished = CounterMetricFamily("gradtrace_experiments_finished", "Experiments that ended, by status",
                                       labels=["status"])
        for status in FINISHED:
            finished.add_metric([status], self.count(f"finished:{status}"))
        yield finished
        yield CounterMetricFamily("gradtrace_experiments_cached", "Experiments answered from the result cache",
                                  value=self.count("cached"))
        yield CounterMetricFamily("gradtrace_experiment_attempts", "Runs started by a worker (a retry counts again)",
                                  value=self.count("attempts"))
        yield CounterMetricFamily("gradtrace_experiments_requeued",
                                  "Runs put back in the queue: handed back by a stopping worker, or orphaned",
                                  value=self.count("requeued"))

    def _train_seconds(self) -> Metric:
        histogram = HistogramMetricFamily("gradtrace_train_seconds",
                                          "Train seconds of the runs that a worker finished, by status",
                                          labels=["status"])
        for status in TIMED:
            prefix = f"train_seconds:{status}:"
            cumulative, buckets = 0.0, []
            for bound in [*(f"{bound:g}" for bound in TRAIN_SECONDS_BUCKETS), "+Inf"]:
                cumulative += self.count(prefix + "le:" + bound)
                buckets.append((bound, cumulative))
            histogram.add_metric([status], buckets, sum_value=self.count(prefix + "sum"))
        return histogram

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("gradtrace_queue_depth", "Messages waiting in each Celery queue", labels=["queue"])
        consumers = GaugeMetricFamily("gradtrace_queue_consumers", "Live worker processes that take from each queue",
                                      labels=["queue"])
        for queue in QUEUES:
            depth.add_metric([queue], self.depths[queue])
            consumers.add_metric([queue], sum(queue in beat.get("queues", []) for beat in self.processes))
        yield depth
        yield consumers

    def _workers(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("gradtrace_worker_nodes", "Live worker nodes (gradtrace worker commands)",
                                value=len({beat["node"] for beat in self.processes}))
        processes = GaugeMetricFamily("gradtrace_worker_processes", "Live worker pool processes, busy or idle",
                                      labels=["state"])
        busy = sum(bool(beat.get("experiment")) for beat in self.processes)
        processes.add_metric(["busy"], busy)
        processes.add_metric(["idle"], len(self.processes) - busy)
        yield processes


def _check_token() -> None:
    """With GRADTRACE_METRICS_TOKEN set, a scrape names it; compared as digests, in constant time."""
    expected = current_app.config.get("METRICS_TOKEN")
    if not expected:
        return
    presented = bearer_token()
    if presented is None:
        raise unauthorized("/metrics needs a token: send Authorization: Bearer <GRADTRACE_METRICS_TOKEN>")
    if not hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()):
        raise unauthorized("the token is not valid")


@bp.get("/metrics")
def metrics() -> Response:
    """The text exposition format; 503 JSON (the error handler) when Redis does not answer."""
    _check_token()
    snapshot = Snapshot.read(get_resources().redis)
    return Response(generate_latest(snapshot), content_type=CONTENT_TYPE_LATEST)
