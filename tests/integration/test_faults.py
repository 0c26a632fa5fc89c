"""Faults with real processes and real signals (issue 5): workers killed with SIGKILL or stopped with
SIGTERM mid-run, a frozen worker that wakes up and writes late, a run that kills its worker every
time, Redis frozen, then killed and restarted with AOF on, a burst over the nodes left, lost messages.

Everything here runs on a redis-server of this module's own on a free port (it gets killed), with
short leases, sweeps and grace periods in the workers' environment (GRADTRACE_*), so that the tests
see in seconds what production sees in a minute. Each worker node is a process group of its own, so
that a SIGKILL of the group takes the pool process down in the middle of its experiment.
`-s` prints the figures of issue 5: faults injected, experiments lost, duplicate executions.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from api.app import create_app
from api.serve import free_port
from shared.celery_app import RUN_TASK, make_celery
from shared.spec import ExperimentSpec
from shared.store import WORKERS_KEY, Store
from tests.conftest import start_redis
from tests.integration.conftest import ROOT, worker_env

pytestmark = pytest.mark.integration

DIE = "kills-its-worker"
FAST = {
    "GRADTRACE_LEASE_SECONDS": "1.5",
    "GRADTRACE_SWEEP_SECONDS": "0.3",
    "GRADTRACE_QUEUED_GRACE_SECONDS": "1",
    "GRADTRACE_SHUTDOWN_GRACE_SECONDS": "1",
    "GRADTRACE_MAX_ATTEMPTS": "2",
    "GRADTRACE_FAULT_KILL_NAME": DIE,
}
# A run of a few seconds, long enough to be hit in the middle; a tiny one for the burst.
LONG = {"depth": 4, "width": 32, "batch_size": 32, "steps": 3000, "cache": False}
TINY = {"depth": 1, "width": 4, "batch_size": 8, "steps": 5, "cache": False}
FINISHED = ("succeeded", "failed", "cancelled")
FIGURES = {"faults injected": 0, "experiments lost": 0, "duplicate executions": 0, "5xx answers": 0}


class OwnRedis:
    """A redis-server that the tests may kill and start again on the same port and data (AOF on)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = start_redis(str(self.directory), self.port, "--appendonly", "yes",
                                   "--appendfsync", "everysec")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


class Worker:
    """`gradtrace worker` as a process group of its own, with the fast fault settings."""

    def __init__(self, url: str, log_path: Path, concurrency: int):
        self.concurrency = concurrency
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker", "--concurrency", str(concurrency), "--loglevel", "INFO"],
                cwd=ROOT, env=worker_env(url, **FAST), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def processes(self, client: redis.Redis) -> dict[int, str | None]:
        """This node's live pool processes (from the worker registry): pid -> the experiment it runs."""
        prefix = f"gradtrace:worker:gradtrace-cpu-{self.process.pid}@"
        keys = [key for key in client.smembers(WORKERS_KEY) if key.decode().startswith(prefix)]
        found = {}
        for key, raw in zip(keys, client.mget(keys) if keys else []):
            if raw:
                beat = json.loads(raw)
                found[beat["process"]] = beat["experiment"]
        return found

    def wait_ready(self, client: redis.Redis, timeout: float = 90) -> None:
        wait_until(lambda: len(self.processes(client)) >= self.concurrency, timeout, f"worker {self.process.pid}")

    def signal_group(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.signal_group(signal.SIGKILL)
        self.process.wait()


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return found


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("fault-redis"))
    server.start()
    yield server
    if server.process.poll() is None:
        server.kill()


@pytest.fixture(scope="module")
def rdb(own_redis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def store(rdb) -> Store:
    return Store(rdb)


@pytest.fixture(scope="module")
def client(own_redis):
    # A short Redis timeout, so that the tests see the 503s of an outage quickly.
    app = create_app({"REDIS_URL": own_redis.url, "TESTING": True, "REDIS_TIMEOUT": 0.5})
    return app.test_client()


class Fleet:
    """Worker nodes of one pool process each, started together; faults take some of them down."""

    def __init__(self, url: str, directory: Path, size: int):
        self.nodes = [Worker(url, directory / f"node{i}.log", concurrency=1) for i in range(size)]

    def live(self) -> list[Worker]:
        return [node for node in self.nodes if node.process.poll() is None]

    def running(self, client: redis.Redis, experiment_id: str) -> tuple[Worker, int]:
        """The node and the pool process that run the experiment now."""
        for node in self.live():
            for pid, running in node.processes(client).items():
                if running == experiment_id:
                    return node, pid
        raise AssertionError(f"no live worker runs {experiment_id}")

    def log(self) -> str:
        return "".join(node.log() for node in self.nodes)


@pytest.fixture(scope="module")
def fleet(own_redis, rdb, tmp_path_factory) -> Iterator[Fleet]:
    """Four nodes: the first test kills one and stops another, the others go on through the module."""
    fleet = Fleet(own_redis.url, tmp_path_factory.mktemp("fleet"), size=4)
    try:
        for node in fleet.nodes:
            node.wait_ready(rdb)
        yield fleet
    finally:
        for node in fleet.nodes:
            node.close()


@pytest.fixture(scope="module", autouse=True)
def figures() -> Iterator[dict]:
    yield FIGURES
    print("\nissue 5 figures (test_faults.py):", ", ".join(f"{name} {count}" for name, count in FIGURES.items()))


def submit(client, **spec) -> str:
    response = client.post("/api/v1/experiments", json=spec)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def wait_finished(store: Store, ids: list[str], timeout: float) -> list[dict]:
    """The records once every one of them has ended; counts the ones that did not as lost."""
    deadline = time.monotonic() + timeout
    while True:
        records = store.get_many(ids)
        if all(record and record["status"] in FINISHED for record in records):
            return records
        if time.monotonic() > deadline:
            stuck = [(i, r and r["status"]) for i, r in zip(ids, records) if not r or r["status"] not in FINISHED]
            FIGURES["experiments lost"] += len(stuck)
            raise AssertionError(f"{len(stuck)} experiments never ended: {stuck[:5]}")
        time.sleep(0.1)


def running_with_rows(store: Store, experiment_id: str, attempts: int = 1) -> bool:
    record = store.get(experiment_id)
    return record["status"] == "running" and record["rows"] > 0 and record["attempts"] == attempts


def losses(client, experiment_id: str) -> tuple[list[int], list[float]]:
    body = client.get(f"/api/v1/experiments/{experiment_id}/traces?metrics=loss").get_json()
    return body["steps"], body["loss"]


def assert_one_complete_trace(client, experiment_id: str, reference_id: str, steps_run: int = LONG["steps"]) -> None:
    """Every step once, in order, with exactly the values of an undisturbed run of the same spec."""
    steps, loss = losses(client, experiment_id)
    assert steps == list(range(steps_run))
    assert (steps, loss) == losses(client, reference_id)


def test_sigkill_and_sigterm_mid_run_lose_nothing(rdb, store, client, fleet):
    """Two nodes each mid-experiment: one killed whole (SIGKILL to its process group), the other
    told to stop (SIGTERM) with a 1 s grace. The other nodes finish both: the killed run on attempt 2
    with one clean trace, the stopped one handed back at once and its attempt not counted."""
    killed_id, stopped_id = submit(client, **LONG, seed=1), submit(client, **LONG, seed=2)
    wait_until(lambda: running_with_rows(store, killed_id) and running_with_rows(store, stopped_id), 30,
               "both runs to be mid-way")
    killed, _ = fleet.running(rdb, killed_id)
    stopping, _ = fleet.running(rdb, stopped_id)
    killed.signal_group(signal.SIGKILL)
    stopped_at = time.monotonic()
    stopping.process.send_signal(signal.SIGTERM)
    FIGURES["faults injected"] += 2

    reference_id = submit(client, **LONG, seed=1)
    stopping.process.wait(20)
    took = time.monotonic() - stopped_at
    print(f"\nSIGTERM mid-run to exit, 1 s grace: {took:.2f} s")
    assert took < 10  # the 1 s grace, then the hand-back, then the exit
    assert "Initiating Soft Shutdown, terminating in 1.0 seconds" in stopping.log()  # SIGTERM took that path
    assert "handed back to the queue" in stopping.log() or store.get(stopped_id)["status"] == "succeeded"
    killed_record, stopped_record, _ = wait_finished(store, [killed_id, stopped_id, reference_id], timeout=60)
    assert killed_record["status"] == "succeeded" and killed_record["attempts"] == 2
    assert killed_record["summary"]["attempts"] == 2
    assert_one_complete_trace(client, killed_id, reference_id)
    assert stopped_record["status"] == "succeeded" and stopped_record["attempts"] == 1
    assert losses(client, stopped_id)[0] == list(range(LONG["steps"]))


def test_a_frozen_attempt_that_wakes_up_writes_nothing(rdb, store, client, fleet):
    """SIGSTOP the pool process mid-run until its lease lapses; the sweeper hands the run to another
    node; SIGCONT the first: its late writes are refused, and the trace is the second attempt's alone."""
    spec = {**LONG, "steps": 2500, "seed": 3}
    experiment_id, reference_id = submit(client, **spec), submit(client, **spec)
    wait_until(lambda: running_with_rows(store, experiment_id), 30, "the run to be mid-way")
    node, frozen = fleet.running(rdb, experiment_id)
    os.kill(frozen, signal.SIGSTOP)
    FIGURES["faults injected"] += 1
    try:
        wait_until(lambda: running_with_rows(store, experiment_id, attempts=2), 30, "a second attempt")
    finally:
        os.kill(frozen, signal.SIGCONT)
    record, _ = wait_finished(store, [experiment_id, reference_id], timeout=60)
    assert record["status"] == "succeeded" and record["attempts"] == 2
    assert_one_complete_trace(client, experiment_id, reference_id, spec["steps"])
    wait_until(lambda: f"experiment {experiment_id}: lease lost" in node.log(), 10, "the woken attempt to give up")


def test_a_run_that_kills_its_worker_every_time_ends_failed(store, client, fleet):
    nodes = fleet.live()
    experiment_id = submit(client, **LONG, name=DIE)
    (record,) = wait_finished(store, [experiment_id], timeout=60)
    FIGURES["faults injected"] += record["attempts"]
    assert record["status"] == "failed" and record["attempts"] == 2
    assert "2 times" in record["error"]["message"]
    assert fleet.live() == nodes  # the nodes themselves live on, with new pool processes


def test_lost_messages_are_sent_again_and_waiting_ones_are_not(own_redis, rdb, store, fleet):
    """A record `queued` with no message (the API died between the two writes) is swept and runs;
    one whose message waits in a queue that no worker reads (gpu here) is left alone; a message for
    an unknown experiment and a duplicate one are dropped."""
    spec = ExperimentSpec(**TINY).model_dump(mode="json")
    store.create("lost-cpu", spec)
    store.create("lost-gpu", spec, queue="gpu")
    store.create("waiting-gpu", spec, queue="gpu")
    sender = make_celery(own_redis.url)
    sender.send_task(RUN_TASK, args=["waiting-gpu"], task_id="waiting-gpu", queue="gpu")
    sender.send_task(RUN_TASK, args=["no-such-experiment"], task_id="no-such-experiment", queue="cpu")
    FIGURES["faults injected"] += 2
    (record,) = wait_finished(store, ["lost-cpu"], timeout=20)
    assert record["status"] == "succeeded" and record["attempts"] == 1
    sender.send_task(RUN_TASK, args=["lost-cpu"], task_id="lost-cpu", queue="cpu")  # a duplicate delivery
    time.sleep(1.5)  # past the grace period again, several sweeps
    queued = sorted(raw for raw in rdb.lrange("gpu", 0, -1))
    assert sorted(b'"lost-gpu"' in raw for raw in queued) == [False, True]  # each gpu record: one message
    assert store.get("lost-cpu")["attempts"] == 1 and store.get("waiting-gpu")["status"] == "queued"
    assert "experiment no-such-experiment not run: missing" in fleet.log()
    for experiment_id in ("lost-cpu", "lost-gpu", "waiting-gpu"):
        store.delete(experiment_id)
    rdb.delete("gpu")
    sender.close()


def test_a_burst_of_200_runs_each_exactly_once(store, client, fleet):
    ids = [submit(client, **TINY, seed=seed) for seed in range(200)]
    records = wait_finished(store, ids, timeout=60)
    assert [record["status"] for record in records] == ["succeeded"] * 200
    logs = fleet.log()
    executions = [logs.count(f"experiment {experiment_id}: attempt") for experiment_id in ids]
    FIGURES["duplicate executions"] += sum(count - 1 for count in executions if count > 1)
    assert executions == [1] * 200
    assert all(record["attempts"] == 1 and record["rows"] == TINY["steps"] for record in records)


def timed(client, method: str, path: str) -> tuple[int, float, dict]:
    """An API answer's status, how long it took, and its JSON body."""
    started = time.monotonic()
    response = getattr(client, method)(path, json=TINY if method == "post" else None)
    return response.status_code, time.monotonic() - started, response.get_json()


def test_redis_killed_and_restarted_loses_nothing_and_the_api_says_503(own_redis, store, client, fleet):
    ids = [submit(client, **{**LONG, "steps": 1000}, seed=10 + seed) for seed in range(4)]  # 2 running, 2 queued
    wait_until(lambda: any(running_with_rows(store, experiment_id) for experiment_id in ids), 30, "a run mid-way")
    answers = []
    own_redis.process.send_signal(signal.SIGSTOP)  # first a Redis that hangs: answers wait for the timeout only
    for method, path in (("get", f"/api/v1/experiments/{ids[0]}"), ("post", "/api/v1/experiments")):
        answers.append(timed(client, method, path))
    own_redis.process.send_signal(signal.SIGCONT)
    own_redis.kill()
    FIGURES["faults injected"] += 1
    down_until = time.monotonic() + 2
    while time.monotonic() < down_until:
        for method, path in (("get", f"/api/v1/experiments/{ids[0]}"), ("post", "/api/v1/experiments")):
            answers.append(timed(client, method, path))
    own_redis.start()
    FIGURES["5xx answers"] += sum(1 for status, _, _ in answers if status >= 500 and status != 503)
    assert {status for status, _, _ in answers} == {503}
    assert all(body["error"]["code"] == "redis_unavailable" for _, _, body in answers)
    slowest = max(seconds for _, seconds, _ in answers)
    print(f"\nRedis down: {len(answers)} API answers, all 503, the slowest in {slowest:.2f} s")
    assert slowest < 3

    # The API comes back by itself, and everything accepted before the outage ends.
    wait_until(lambda: client.get(f"/api/v1/experiments/{ids[0]}").status_code == 200, 10, "the API to recover")
    ids.append(submit(client, **TINY, seed=99))
    records = wait_finished(store, ids, timeout=60)
    for record in records:
        assert record["status"] == "succeeded" or (record["status"] == "failed" and record["error"]["message"])
        if record["status"] == "succeeded":
            assert record["rows"] == record["spec"]["steps"]
