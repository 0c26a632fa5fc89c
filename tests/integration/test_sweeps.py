"""Sweeps and the workers endpoint through a real Celery worker process over a real Redis."""

import math
import statistics
import time

import pytest

pytestmark = pytest.mark.integration

URL = "/api/v1/sweeps"
SMALL = {"depth": 4, "width": 16, "steps": 20, "batch_size": 32}
LONG = {"depth": 2, "width": 8, "steps": 100_000, "batch_size": 8}


def wait_sweep(client, sweep_id: str, done, timeout: float = 180) -> dict:
    """Poll the sweep until `done(sweep)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        sweep = client.get(f"{URL}/{sweep_id}").get_json()
        if done(sweep):
            return sweep
        if time.monotonic() > deadline:
            raise AssertionError(f"sweep {sweep_id} not done after {timeout}s: {sweep['counts']}")
        time.sleep(0.2)


def test_a_sweep_runs_to_the_end_and_aggregates_over_seeds(client):
    grid = {"activation": ["relu", "tanh"], "init": ["default", "kaiming_normal"], "seed": [0, 1]}
    response = client.post(URL, json={"base": SMALL, "grid": grid, "name": "act x init x seed"})
    assert response.status_code == 202, response.get_json()
    created = response.get_json()
    assert created["size"] == 8

    sweep = wait_sweep(client, created["id"], lambda sweep: sweep["status"] == "finished")
    assert sweep["counts"] == {"queued": 0, "running": 0, "succeeded": 8, "failed": 0, "cancelled": 0}
    rows = sweep["experiments"]
    assert [row["id"] for row in rows] == created["experiments"]
    for row in rows:
        experiment = client.get(f"/api/v1/experiments/{row['id']}").get_json()
        assert experiment["sweep"] == created["id"] and experiment["point"] == row["point"]
        assert experiment["spec"]["activation"] == row["point"]["activation"]
        assert experiment["spec"]["seed"] == row["point"]["seed"] == row["seed"]
        assert row["verdict"] == experiment["summary"]["diagnosis"]["verdict"]
        assert row["final_loss"] == experiment["summary"]["final_loss"] and math.isfinite(row["final_loss"])
        assert row["step0_grad_ratio"] > 0
        assert row["progress"] == {"step": 20, "steps": 20}
    # Two seeds of one setting start from different weights: the runs differ.
    assert rows[0]["final_loss"] != rows[1]["final_loss"]

    groups = sweep["aggregate"]
    assert [group["point"] for group in groups] == [
        {"activation": a, "init": i} for a in grid["activation"] for i in grid["init"]
    ]
    for group, pair in zip(groups, [rows[k:k + 2] for k in range(0, 8, 2)]):
        losses = [row["final_loss"] for row in pair]
        logs = [math.log10(row["step0_grad_ratio"]) for row in pair]
        assert group["seeds"] == [0, 1] and group["experiments"] == group["succeeded"] == 2
        assert group["final_loss"]["mean"] == pytest.approx(statistics.fmean(losses))
        assert group["final_loss"]["std"] == pytest.approx(statistics.stdev(losses))
        assert group["step0_grad_ratio_log10"]["mean"] == pytest.approx(statistics.fmean(logs))
        assert group["step0_grad_ratio_log10"]["std"] == pytest.approx(statistics.stdev(logs))
        assert sum(group["verdicts"].values()) == 2
    listed = client.get(URL).get_json()["sweeps"][0]
    assert listed["id"] == created["id"] and listed["status"] == "finished" and listed["counts"]["succeeded"] == 8


def test_workers_lists_the_node_and_a_sweep_cancel_stops_long_runs(client, worker_process):
    response = client.post(URL, json={"base": LONG, "grid": {"seed": [0, 1, 2]}})
    assert response.status_code == 202
    sweep_id, ids = response.get_json()["id"], response.get_json()["experiments"]
    sweep = wait_sweep(client, sweep_id, lambda sweep: sweep["counts"]["running"] == 1, timeout=60)
    running = next(row["id"] for row in sweep["experiments"] if row["status"] == "running")
    assert sweep["counts"]["queued"] == 2  # one process: the others wait their turn

    workers = client.get("/api/v1/workers").get_json()["workers"]
    (node,) = [worker for worker in workers if worker["pid"] == worker_process.pid]
    assert node["name"].startswith(f"gradtrace-cpu-{worker_process.pid}@")
    assert node["queues"] == ["cpu"] and node["concurrency"] == 1 and node["torch_threads"] == 1
    assert node["device"] == "cpu" and node["gpus"] == []
    assert node["active_experiments"] == [running] and node["busy"] == 1
    assert [process["experiment"] for process in node["processes"]] == [running]

    response = client.post(f"{URL}/{sweep_id}/cancel")
    assert response.status_code == 202
    assert response.get_json()["counts"]["cancelled"] == 2
    sweep = wait_sweep(client, sweep_id, lambda sweep: sweep["status"] == "finished", timeout=30)
    assert sweep["counts"] == {"queued": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 3}
    assert client.post(f"{URL}/{sweep_id}/cancel").status_code == 409
    # The cancelled run kept what it had traced.
    assert 0 < client.get(f"/api/v1/experiments/{running}").get_json()["progress"]["step"] < LONG["steps"]

    deadline = time.monotonic() + 10
    while client.get("/api/v1/workers").get_json()["workers"][0]["active_experiments"]:
        assert time.monotonic() < deadline, "the worker still shows the cancelled run"
        time.sleep(0.1)
    assert client.delete(f"{URL}/{sweep_id}").status_code == 204
    assert all(client.get(f"/api/v1/experiments/{i}").status_code == 404 for i in ids)
