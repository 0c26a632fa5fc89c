"""The sweeps resource: submit, read, list, cancel, delete, and every way a sweep is refused.

A worker's writes are made with the real Store, as in test_experiments.py.
"""

import json

import pytest
from flask import g, request
from kombu.exceptions import OperationalError

from api.resources import EXTENSION
from shared.celery_app import RUN_TASK
from shared.sweeps import MAX_POINTS

URL = "/api/v1/sweeps"
SMALL = {"depth": 4, "width": 16, "steps": 20}
EMPTY_COUNTS = {"queued": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}


def create(client, grid, base=SMALL, **extra) -> dict:
    response = client.post(URL, json={"base": base, "grid": grid, **extra})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def assert_422(response, loc, says: str = "") -> dict:
    assert response.status_code == 422, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["loc"] == loc, error
    assert says in error["message"], error["message"]
    return error


def finish(store, experiment_id: str, loss: float, ratio: float, verdict: str) -> None:
    """What a worker writes at the end of a run."""
    assert store.claim(experiment_id, experiment_id, lease_seconds=30, max_attempts=3)[0] == "claimed"
    summary = {"final_loss": loss, "train_seconds": 0.1,
               "diagnosis": {"verdict": verdict, "reasons": [], "advice": [], "evidence": {"step0_grad_ratio": ratio}}}
    assert store.finish(experiment_id, experiment_id, "succeeded", summary=summary, step=20)


def test_accepted_with_every_point_queued_at_once(client, redis_client):
    body = create(client, {"activation": ["relu", "sigmoid", "tanh"], "init": ["default", "xavier_uniform"]},
                  name="act x init")
    assert set(body) == {"id", "name", "size", "experiments"}
    assert body["size"] == 6 and len(set(body["experiments"])) == 6 and body["name"] == "act x init"
    messages = [json.loads(raw) for raw in redis_client.lrange("cpu", 0, -1)]
    assert sorted(message["headers"]["id"] for message in messages) == sorted(body["experiments"])
    assert {message["headers"]["task"] for message in messages} == {RUN_TASK}
    first = client.get(f"/api/v1/experiments/{body['experiments'][0]}").get_json()
    assert first["sweep"] == body["id"]
    assert first["point"] == {"activation": "relu", "init": "default"}
    assert first["spec"]["depth"] == 4 and first["spec"]["activation"] == "relu" and first["status"] == "queued"
    last = client.get(f"/api/v1/experiments/{body['experiments'][-1]}").get_json()
    assert last["spec"]["activation"] == "tanh" and last["spec"]["init"] == "xavier_uniform"


def test_location_names_the_sweep_and_it_reads_back(client):
    response = client.post(URL, json={"base": SMALL, "grid": {"seed": [0, 1]}})
    body = response.get_json()
    assert response.headers["Location"] == f"{URL}/{body['id']}"
    sweep = client.get(response.headers["Location"]).get_json()
    assert sweep["id"] == body["id"] and sweep["name"] is None
    assert sweep["status"] == "queued" and sweep["size"] == 2
    assert sweep["counts"] == {**EMPTY_COUNTS, "queued": 2}
    assert sweep["base"] == SMALL and sweep["grid"] == {"seed": [0, 1]}
    assert [row["id"] for row in sweep["experiments"]] == body["experiments"]
    assert sweep["experiments"][1] == {
        "id": body["experiments"][1], "point": {"seed": 1}, "seed": 1, "status": "queued",
        "progress": {"step": 0, "steps": 20}, "verdict": None, "final_loss": None, "step0_grad_ratio": None,
        "summary": None,
    }


def test_cuda_points_go_to_the_gpu_queue(client, redis_client):
    body = create(client, {"device": ["cpu", "cuda"]})
    assert redis_client.llen("cpu") == 1 and redis_client.llen("gpu") == 1
    gpu = json.loads(redis_client.lindex("gpu", 0))
    assert gpu["headers"]["id"] == body["experiments"][1]


def test_aliases_resolve_in_the_spec_and_stay_as_given_in_the_point(client):
    body = create(client, {"init": ["he_normal"]})
    experiment = client.get(f"/api/v1/experiments/{body['experiments'][0]}").get_json()
    assert experiment["spec"]["init"] == "kaiming_normal" and experiment["point"] == {"init": "he_normal"}


def test_the_grid_overrides_the_base(client):
    body = create(client, {"depth": [2, 3]}, base={**SMALL, "depth": 9})
    depths = [client.get(f"/api/v1/experiments/{i}").get_json()["spec"]["depth"] for i in body["experiments"]]
    assert depths == [2, 3]


def test_counts_rows_and_aggregate_follow_the_workers(client, store):
    body = create(client, {"activation": ["sigmoid", "relu"], "seed": [0, 1]})
    sig0, sig1, relu0, relu1 = body["experiments"]
    finish(store, sig0, 0.70, 1e-9, "vanishing")
    finish(store, sig1, 0.72, 1e-11, "vanishing")
    finish(store, relu0, 0.30, 0.5, "healthy")
    assert store.claim(relu1, "token", lease_seconds=30, max_attempts=3)[0] == "claimed"

    sweep = client.get(f"{URL}/{body['id']}").get_json()
    assert sweep["status"] == "running"
    assert sweep["counts"] == {**EMPTY_COUNTS, "succeeded": 3, "running": 1}
    rows = {row["id"]: row for row in sweep["experiments"]}
    assert rows[sig1]["verdict"] == "vanishing" and rows[sig1]["final_loss"] == 0.72
    assert rows[sig1]["step0_grad_ratio"] == 1e-11 and rows[sig1]["summary"]["train_seconds"] == 0.1
    assert rows[relu1]["status"] == "running" and rows[relu1]["verdict"] is None

    sigmoid, relu = sweep["aggregate"]
    assert sigmoid["point"] == {"activation": "sigmoid"} and sigmoid["seeds"] == [0, 1]
    assert sigmoid["final_loss"]["mean"] == pytest.approx(0.71)
    assert sigmoid["final_loss"]["std"] == pytest.approx(0.02 / 2**0.5)
    assert sigmoid["step0_grad_ratio_log10"]["mean"] == pytest.approx(-10)
    assert sigmoid["step0_grad_ratio_log10"]["std"] == pytest.approx(2**0.5)
    assert sigmoid["verdicts"] == {"vanishing": 2}
    assert relu["experiments"] == 2 and relu["succeeded"] == 1 and relu["verdicts"] == {"healthy": 1}

    finish_running = store.finish(relu1, "token", "succeeded", summary={"final_loss": 0.4, "diagnosis": {"verdict": "healthy"}})
    assert finish_running
    assert client.get(f"{URL}/{body['id']}").get_json()["status"] == "finished"


def test_an_experiment_deleted_alone_leaves_the_sweep(client):
    body = create(client, {"seed": [0, 1, 2]})
    assert client.delete(f"/api/v1/experiments/{body['experiments'][1]}").status_code == 204
    sweep = client.get(f"{URL}/{body['id']}").get_json()
    assert sweep["size"] == 3
    assert [row["seed"] for row in sweep["experiments"]] == [0, 2]
    assert sweep["counts"]["queued"] == 2


# --- refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc", "says"),
    [
        ([], [], "JSON object"),
        ({"grid": {"seed": [1]}, "bases": {}}, ["bases"], "unknown field"),
        ({"grid": {"seed": [1]}, "base": []}, ["base"], "must be an object"),
        ({"grid": {"seed": [1]}, "base": {"activaton": "tanh"}}, ["base", "activaton"], "unknown spec field"),
        ({"grid": {"seed": [1]}, "name": 7}, ["name"], "string"),
        ({"grid": {"seed": [1]}, "name": "x" * 201}, ["name"], "200"),
        ({"base": SMALL}, ["grid"], "object"),
        ({"grid": {"seed": 3}}, ["grid", "seed"], "non-empty list"),
        ({"grid": {"seed": []}}, ["grid", "seed"], "non-empty list"),
        ({"grid": {"activaton": ["tanh"]}}, ["grid", "activaton"], "not a spec field"),
        ({"grid": {"depth": [3, 3]}}, ["grid", "depth"], "twice"),
        ({"grid": {"seed": [1, 2]}, "base": {"depth": 0}}, ["base", "depth"], "greater than or equal to 1"),
    ],
)
def test_malformed_sweeps_are_422(client, redis_client, body, loc, says):
    assert_422(client.post(URL, json=body), loc, says)
    assert not redis_client.keys("gradtrace:*") and redis_client.llen("cpu") == 0


def test_an_invalid_point_is_named_by_index_and_values(client, redis_client):
    response = client.post(URL, json={"base": SMALL, "grid": {"activation": ["relu", "sigmoid"], "depth": [4, 0]}})
    error = assert_422(response, ["points", 1, "depth"], "2 of 4 points are invalid")
    assert '{"activation": "relu", "depth": 0}' in error["message"]
    assert [detail["loc"] for detail in error["details"]] == [["points", 1, "depth"], ["points", 3, "depth"]]
    assert error["details"][1]["point"] == {"activation": "sigmoid", "depth": 0}
    assert not redis_client.keys("gradtrace:*") and redis_client.llen("cpu") == 0


def test_a_point_over_the_cost_limit_is_422_before_anything_is_queued(client, redis_client):
    grid = {"width": [16, 4096], "depth": [4, 200]}
    error = assert_422(client.post(URL, json={"base": {"steps": 100_000, "batch_size": 4096}, "grid": grid}),
                       ["points", 1, "cost"], "over the limit")
    assert "3 of 4 points are invalid" in error["message"] and error["details"][0]["point"] == {"width": 16, "depth": 200}
    assert not redis_client.keys("gradtrace:*")


def test_a_grid_where_every_point_fails_lists_a_bounded_number_of_details(client):
    error = assert_422(client.post(URL, json={"grid": {"seed": list(range(50)), "depth": [0]}}),
                       ["points", 0, "depth"], "50 of 50 points are invalid")
    assert len(error["details"]) == 20


def test_the_size_limit_is_422_with_the_count(client, redis_client):
    grid = {"seed": list(range(MAX_POINTS // 2 + 1)), "residual": [True, False]}
    error = assert_422(client.post(URL, json={"base": SMALL, "grid": grid}), ["grid"], "over the limit of 1,000")
    assert "1,002 points" in error["message"]
    assert not redis_client.keys("gradtrace:*")


def test_the_largest_sweep_is_accepted(client, redis_client):
    body = create(client, {"seed": list(range(MAX_POINTS))}, base={"depth": 1, "width": 1, "steps": 1})
    assert body["size"] == MAX_POINTS and redis_client.llen("cpu") == MAX_POINTS
    sweep = client.get(f"{URL}/{body['id']}").get_json()
    assert sweep["counts"]["queued"] == MAX_POINTS and len(sweep["aggregate"]) == 1


@pytest.mark.parametrize(("data", "content_type", "status"), [("{", "application/json", 400), ("{}", "text/plain", 415)])
def test_bodies_that_are_not_json_are_refused(client, data, content_type, status):
    assert client.post(URL, data=data, content_type=content_type).status_code == status


def test_a_send_that_fails_midway_is_503_and_leaves_nothing(app, client, redis_client, monkeypatch):
    celery = app.extensions[EXTENSION].celery
    real_send, sent = celery.send_task, []

    def send_twice_then_fail(*args, **kwargs):
        if len(sent) == 2:
            raise OperationalError("connection lost")
        sent.append(kwargs["task_id"])
        return real_send(*args, **kwargs)

    monkeypatch.setattr(celery, "send_task", send_twice_then_fail)
    response = client.post(URL, json={"base": SMALL, "grid": {"seed": [0, 1, 2, 3]}})
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "redis_unavailable" and "nothing was created" in error["message"]
    assert client.get(URL).get_json()["sweeps"] == []
    assert client.get("/api/v1/experiments").get_json()["experiments"] == []
    # The two messages already out find no record: a worker's claim makes them no-ops.
    assert not redis_client.keys("gradtrace:exp:*") and not redis_client.keys("gradtrace:sweep*")
    assert redis_client.llen("cpu") == 2


# --- list, cancel, delete, tenants ----------------------------------------------------


def test_list_is_newest_first_with_counts_and_a_cursor(client, store):
    ids = [create(client, {"seed": [i, i + 100]})["id"] for i in range(5)]
    first = client.get(URL, query_string={"limit": 2}).get_json()
    assert [sweep["id"] for sweep in first["sweeps"]] == ids[:-3:-1]
    assert first["sweeps"][0]["counts"] == {**EMPTY_COUNTS, "queued": 2}
    assert "experiments" not in first["sweeps"][0] and first["sweeps"][0]["grid"] == {"seed": [4, 104]}
    seen, cursor = [], None
    while True:
        page = client.get(URL, query_string={"limit": 2, **({"cursor": cursor} if cursor else {})}).get_json()
        seen += [sweep["id"] for sweep in page["sweeps"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert client.get(URL, query_string={"limit": 0}).status_code == 422
    assert client.get(URL, query_string={"cursor": "nope"}).status_code == 422


def test_cancel_stops_what_is_left_then_409(client, store):
    body = create(client, {"seed": [0, 1, 2]})
    done, running, queued = body["experiments"]
    finish(store, done, 0.5, 0.1, "healthy")
    assert store.claim(running, "token", lease_seconds=30, max_attempts=3)[0] == "claimed"
    response = client.post(f"{URL}/{body['id']}/cancel")
    assert response.status_code == 202
    rows = {row["id"]: row for row in response.get_json()["experiments"]}
    assert rows[done]["status"] == "succeeded" and rows[queued]["status"] == "cancelled"
    assert rows[running]["status"] == "running"
    assert client.get(f"/api/v1/experiments/{running}").get_json()["cancel_requested"] is True
    again = client.post(f"{URL}/{body['id']}/cancel")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "conflict"
    # The worker stops at its next write.
    store.finish(running, "token", "cancelled")
    sweep = client.get(f"{URL}/{body['id']}").get_json()
    assert sweep["status"] == "finished" and sweep["counts"] == {**EMPTY_COUNTS, "succeeded": 1, "cancelled": 2}


def test_delete_removes_the_sweep_and_its_experiments(client, store, redis_client):
    kept = client.post("/api/v1/experiments", json=SMALL).get_json()["id"]
    body = create(client, {"seed": [0, 1]})
    assert store.claim(body["experiments"][0], "token", lease_seconds=30, max_attempts=3)[0] == "claimed"
    response = client.delete(f"{URL}/{body['id']}")
    assert response.status_code == 204 and response.data == b""
    assert client.get(f"{URL}/{body['id']}").status_code == 404
    for experiment_id in body["experiments"]:
        assert client.get(f"/api/v1/experiments/{experiment_id}").status_code == 404
        assert not redis_client.keys(f"*{experiment_id}*")
    assert [item["id"] for item in client.get("/api/v1/experiments").get_json()["experiments"]] == [kept]
    assert client.get(URL).get_json()["sweeps"] == []
    # The running worker's next write is refused: its lease went with the record.
    assert not store.update(body["experiments"][0], "token", step=3)


@pytest.mark.parametrize(("method", "path"), [("get", ""), ("post", "/cancel"), ("delete", "")])
def test_unknown_sweeps_are_404_json(client, method, path):
    response = getattr(client, method)(f"{URL}/0123456789abcdef0123456789abcdef{path}")
    assert response.status_code == 404
    error = response.get_json()["error"]
    assert error["code"] == "not_found" and "no sweep 0123456789abcdef0123456789abcdef" in error["message"]


def test_each_tenant_sees_only_its_own_sweeps(app, client):
    @app.before_request
    def set_tenant():
        g.tenant = request.headers.get("X-Test-Tenant", "")

    alice = {"headers": {"X-Test-Tenant": "alice"}}
    bob = {"headers": {"X-Test-Tenant": "bob"}}
    body = client.post(URL, json={"base": SMALL, "grid": {"seed": [0, 1]}}, **alice).get_json()
    assert client.get(f"{URL}/{body['id']}", **alice).status_code == 200
    for method, path in [("get", ""), ("post", "/cancel"), ("delete", "")]:
        assert getattr(client, method)(f"{URL}/{body['id']}{path}", **bob).status_code == 404
    assert client.get(URL, **bob).get_json()["sweeps"] == []
    assert client.get(f"/api/v1/experiments/{body['experiments'][0]}", **bob).status_code == 404
    assert [sweep["id"] for sweep in client.get(URL, **alice).get_json()["sweeps"]] == [body["id"]]
    assert client.delete(f"{URL}/{body['id']}", **alice).status_code == 204


def test_a_base_value_that_fails_with_one_point_only_names_that_point(client):
    response = client.post(URL, json={"base": {**SMALL, "batch_size": 1}, "grid": {"norm": ["none", "batchnorm"]}})
    error = assert_422(response, ["points", 1, "batch_size"], "1 of 2 points are invalid")
    assert error["details"] == [{"loc": ["points", 1, "batch_size"], "msg": error["details"][0]["msg"],
                                 "type": "combination", "point": {"norm": "batchnorm"}}]
    assert "batchnorm" in error["details"][0]["msg"]


def test_a_base_problem_beside_point_problems(client):
    response = client.post(URL, json={"base": {"lr": -1}, "grid": {"depth": [0, 2]}})
    error = assert_422(response, ["base", "lr"], "1 of 2 points are invalid on their own")
    assert [detail["loc"] for detail in error["details"]] == [["base", "lr"], ["points", 0, "depth"]]
