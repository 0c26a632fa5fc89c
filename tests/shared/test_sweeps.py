"""Grid expansion, grid checks and the aggregate over seeds, without a worker; the sweep store on a real Redis."""

import math
import statistics

import pytest

from shared.spec import ExperimentSpec
from shared.store import Store
from shared.sweeps import (
    MAX_POINTS,
    SweepInvalid,
    SweepNotFound,
    Sweeps,
    aggregate,
    check_grid,
    counts,
    expand,
    row,
    spread,
    state,
)

FIELDS = set(ExperimentSpec.model_fields)


def test_expand_is_the_cross_product_last_field_fastest():
    points = expand({"activation": ["relu", "tanh"], "init": ["default", "xavier_uniform", "kaiming_normal"]})
    assert len(points) == 6
    assert points[:3] == [
        {"activation": "relu", "init": "default"},
        {"activation": "relu", "init": "xavier_uniform"},
        {"activation": "relu", "init": "kaiming_normal"},
    ]
    assert points[3] == {"activation": "tanh", "init": "default"}
    assert len({tuple(point.items()) for point in points}) == 6


def test_expand_of_one_axis_and_of_object_values():
    assert expand({"seed": [3]}) == [{"seed": 3}]
    clipping = [None, {"mode": "norm", "threshold": 1.0}]
    assert [point["clipping"] for point in expand({"clipping": clipping, "seed": [0, 1]})] == [
        None, None, clipping[1], clipping[1]
    ]


@pytest.mark.parametrize(
    ("grid", "loc", "says"),
    [
        (None, ["grid"], "object"),
        ([], ["grid"], "object"),
        ({}, ["grid"], "object"),
        ({"activaton": ["relu"]}, ["grid", "activaton"], "not a spec field"),
        ({"seed": []}, ["grid", "seed"], "non-empty list"),
        ({"seed": 3}, ["grid", "seed"], "non-empty list"),
        ({"depth": [4, 4]}, ["grid", "depth"], "twice"),
        ({"clipping": [{"mode": "norm", "threshold": 1}, {"threshold": 1, "mode": "norm"}]}, ["grid", "clipping"], "twice"),
    ],
)
def test_check_grid_refuses(grid, loc, says):
    with pytest.raises(SweepInvalid) as raised:
        check_grid(grid, FIELDS)
    assert raised.value.details[0]["loc"] == loc
    assert says in raised.value.details[0]["msg"]


def test_check_grid_limits_the_points_before_expanding():
    assert check_grid({"seed": list(range(MAX_POINTS))}, FIELDS)
    with pytest.raises(SweepInvalid) as raised:
        check_grid({"seed": list(range(100)), "depth": list(range(1, 101)), "width": list(range(1, 101))}, FIELDS)
    assert raised.value.details[0]["msg"] == "100 x 100 x 100 = 1,000,000 points is over the limit of 1,000 per sweep"


def test_equal_json_values_of_different_types_are_distinct():
    assert check_grid({"residual": [True, False], "seed": [0, 1]}, FIELDS)


def result(point, seed, status="succeeded", loss=None, ratio=None, verdict=None) -> dict:
    """A row as shared.sweeps.row makes it from a record."""
    return {"point": {**point, "seed": seed}, "seed": seed, "status": status, "final_loss": loss,
            "step0_grad_ratio": ratio, "verdict": verdict}


def test_aggregate_groups_points_that_differ_only_in_seed():
    rows = [
        result({"activation": "sigmoid"}, 0, loss=0.7, ratio=1e-10, verdict="vanishing"),
        result({"activation": "sigmoid"}, 1, loss=0.6, ratio=1e-12, verdict="vanishing"),
        result({"activation": "sigmoid"}, 2, loss=0.8, ratio=1e-11, verdict="healthy"),
        result({"activation": "relu"}, 0, loss=0.2, ratio=0.5, verdict="healthy"),
        result({"activation": "relu"}, 1, status="failed"),
        result({"activation": "relu"}, 2, status="running"),
    ]
    sigmoid, relu = aggregate(rows)
    assert sigmoid["point"] == {"activation": "sigmoid"}
    assert sigmoid["seeds"] == [0, 1, 2] and sigmoid["experiments"] == 3 and sigmoid["succeeded"] == 3
    assert sigmoid["final_loss"]["n"] == 3
    assert sigmoid["final_loss"]["mean"] == pytest.approx(0.7)
    assert sigmoid["final_loss"]["std"] == pytest.approx(statistics.stdev([0.7, 0.6, 0.8]))
    assert (sigmoid["final_loss"]["min"], sigmoid["final_loss"]["max"]) == (0.6, 0.8)
    log_ratio = sigmoid["step0_grad_ratio_log10"]
    assert log_ratio["mean"] == pytest.approx(-11.0) and log_ratio["std"] == pytest.approx(1.0)
    assert (log_ratio["min"], log_ratio["max"]) == (pytest.approx(-12), pytest.approx(-10))
    assert sigmoid["verdicts"] == {"vanishing": 2, "healthy": 1}
    # Only succeeded runs count; one value has no spread.
    assert relu["experiments"] == 3 and relu["succeeded"] == 1
    assert relu["final_loss"] == {"n": 1, "mean": 0.2, "std": None, "min": 0.2, "max": 0.2}
    assert relu["step0_grad_ratio_log10"]["mean"] == pytest.approx(math.log10(0.5))
    assert relu["verdicts"] == {"healthy": 1}


def test_aggregate_without_a_seed_axis_has_one_group_per_point():
    rows = [{**result({}, 0, loss=loss), "point": {"depth": depth}} for depth, loss in [(2, 1.0), (4, 2.0)]]
    groups = aggregate(rows)
    assert [group["point"] for group in groups] == [{"depth": 2}, {"depth": 4}]
    assert [group["final_loss"]["mean"] for group in groups] == [1.0, 2.0]


def test_aggregate_leaves_out_missing_and_underflowed_ratios():
    rows = [
        result({}, 0, loss=None, ratio=0.0, verdict="diverged"),
        result({}, 1, loss=0.5, ratio=None, verdict="healthy"),
        result({}, 2, loss=0.7, ratio=1e-3, verdict="vanishing"),
    ]
    (group,) = aggregate(rows)
    assert group["final_loss"]["n"] == 2 and group["final_loss"]["mean"] == pytest.approx(0.6)
    assert group["step0_grad_ratio_log10"] == {"n": 1, "mean": pytest.approx(-3), "std": None,
                                               "min": pytest.approx(-3), "max": pytest.approx(-3)}
    assert group["verdicts"] == {"diverged": 1, "healthy": 1, "vanishing": 1}


def test_spread_of_nothing():
    assert spread([]) == {"n": 0, "mean": None, "std": None, "min": None, "max": None}


def test_counts_and_state():
    assert counts([]) == {"queued": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert state(counts(["queued", "queued"])) == "queued"
    assert state(counts(["queued", "succeeded"])) == "running"
    assert state(counts(["running", "queued"])) == "running"
    assert state(counts(["succeeded", "failed", "cancelled"])) == "finished"


def test_row_takes_the_figures_from_the_summary():
    spec = ExperimentSpec(seed=4).model_dump(mode="json")
    record = {"id": "e", "status": "succeeded", "spec": spec, "point": {"seed": 4}, "step": 300, "steps": 300,
              "summary": {"final_loss": 0.25, "diagnosis": {"verdict": "healthy", "evidence": {"step0_grad_ratio": 0.5}}}}
    assert row(record) == {
        "id": "e", "point": {"seed": 4}, "seed": 4, "status": "succeeded", "progress": {"step": 300, "steps": 300},
        "verdict": "healthy", "final_loss": 0.25, "step0_grad_ratio": 0.5, "summary": record["summary"],
    }
    queued = {**record, "status": "queued", "summary": None}
    assert row(queued)["verdict"] is None and row(queued)["final_loss"] is None


# --- the store, on the tests' Redis ------------------------------------------------


def make(sweeps: Sweeps, tenant: str = "", points: int = 3) -> tuple[dict, list[str]]:
    ids = [f"exp{i}" for i in range(points)]
    experiments = [
        (experiment_id, {"seed": i}, ExperimentSpec(seed=i).model_dump(mode="json"), "cpu")
        for i, experiment_id in enumerate(ids)
    ]
    sweep = sweeps.create("sw", base={}, grid={"seed": list(range(points))}, name=None,
                          experiments=experiments, tenant=tenant)
    return sweep, ids


def test_create_writes_every_record_with_its_sweep_and_point(redis_client):
    store = Store(redis_client)
    sweep, ids = make(Sweeps(store))
    assert sweep["experiments"] == ids and sweep["grid"] == {"seed": [0, 1, 2]} and sweep["name"] is None
    records = store.get_many(ids)
    assert [record["point"] for record in records] == [{"seed": 0}, {"seed": 1}, {"seed": 2}]
    assert {record["sweep"] for record in records} == {"sw"}
    assert all(record["status"] == "queued" for record in records)
    # Experiments are indexed in grid order, the sweep after them.
    listed, _ = store.list_experiments(limit=10)
    assert [record["id"] for record in listed] == ids[::-1]
    assert sweep["seq"] > max(record["seq"] for record in records)


def test_cancel_cancels_queued_flags_running_and_then_has_nothing_left(redis_client):
    store = Store(redis_client)
    sweeps = Sweeps(store)
    _, ids = make(sweeps)
    assert store.claim(ids[0], "token", lease_seconds=30, max_attempts=3)[0] == "claimed"
    assert store.claim(ids[2], "other", lease_seconds=30, max_attempts=3)[0] == "claimed"
    assert store.finish(ids[2], "other", "succeeded")
    assert sweeps.cancel("sw") == 2
    statuses = [record["status"] for record in store.get_many(ids)]
    assert statuses == ["running", "cancelled", "succeeded"]
    assert store.get(ids[0])["cancel"] == "1"
    # The running one is already stopping: nothing is left to cancel.
    assert sweeps.cancel("sw") == 0


def test_delete_removes_the_sweep_and_everything_of_its_experiments(redis_client):
    store = Store(redis_client)
    sweeps = Sweeps(store)
    _, ids = make(sweeps, tenant="alice")
    assert store.claim(ids[0], "token", lease_seconds=30, max_attempts=3)[0] == "claimed"
    with pytest.raises(SweepNotFound):
        sweeps.delete("sw", tenant="bob")
    sweeps.delete("sw", tenant="alice")
    with pytest.raises(SweepNotFound):
        sweeps.get("sw")
    assert store.get_many(ids) == [None, None, None]
    assert not redis_client.keys("gradtrace:exp:*") and not redis_client.keys("gradtrace:lease:*")
    assert not redis_client.keys("gradtrace:sweep*") and not redis_client.keys("gradtrace:index:*")
    assert redis_client.scard("gradtrace:running") == 0
