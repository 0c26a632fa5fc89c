"""Reading, listing, cancelling and deleting experiments; a worker's writes are made with the real Store."""

import pytest
from flask import g, request

from api.validation import encode_cursor

URL = "/api/v1/experiments"
PUBLIC_FIELDS = {
    "id", "status", "spec", "created_at", "started_at", "finished_at", "progress", "summary", "error",
    "name", "queue", "device", "attempts", "cancel_requested", "sweep", "point",
}


def submit(client, **spec) -> str:
    response = client.post(URL, json=spec)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def claim(store, experiment_id: str, token: str = "token") -> None:
    """What a worker does first: take the lease; the experiment becomes `running`."""
    assert store.claim(experiment_id, token, lease_seconds=30, max_attempts=3)[0] == "claimed"


def test_get_returns_the_public_fields_only(client):
    experiment_id = submit(client, name="probe")
    body = client.get(f"{URL}/{experiment_id}").get_json()
    assert set(body) == PUBLIC_FIELDS
    assert body["name"] == "probe"
    assert body["attempts"] == 0 and body["cancel_requested"] is False


def test_get_follows_the_worker(client, store):
    experiment_id = submit(client, steps=10)
    claim(store, experiment_id)
    assert store.update(experiment_id, "token", device="cpu", step=4)
    running = client.get(f"{URL}/{experiment_id}").get_json()
    assert running["status"] == "running"
    assert running["started_at"] and running["finished_at"] is None
    assert running["progress"] == {"step": 4, "steps": 10}
    assert running["device"] == "cpu" and running["attempts"] == 1

    summary = {"final_loss": 0.5, "train_seconds": 1.25, "diagnosis": {"verdict": "healthy", "reasons": [], "advice": []}}
    assert store.finish(experiment_id, "token", "succeeded", summary=summary, step=10)
    done = client.get(f"{URL}/{experiment_id}").get_json()
    assert done["status"] == "succeeded"
    # The stored summary, and the verdict's title and explanation in the answer's language (English).
    diagnosis = {"verdict": "healthy", "title": "Healthy", "explanation": done["summary"]["diagnosis"]["explanation"],
                 "reasons": [], "advice": []}
    assert done["summary"] == {**summary, "diagnosis": diagnosis}
    assert "gradient reaches every layer" in diagnosis["explanation"]
    assert done["finished_at"] and done["error"] is None


def test_a_failed_run_carries_its_error_message(client, store):
    experiment_id = submit(client)
    claim(store, experiment_id)
    store.finish(experiment_id, "token", "failed", error={"message": "RuntimeError: boom"})
    body = client.get(f"{URL}/{experiment_id}").get_json()
    assert body["status"] == "failed"
    assert body["error"] == {"message": "RuntimeError: boom"}
    assert body["summary"] is None


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", ""), ("get", "/traces"), ("post", "/cancel"), ("delete", "")],
)
def test_unknown_ids_are_404_json(client, method, path):
    response = getattr(client, method)(f"{URL}/0123456789abcdef0123456789abcdef{path}")
    assert response.status_code == 404
    error = response.get_json()["error"]
    assert error["code"] == "not_found"
    assert "0123456789abcdef0123456789abcdef" in error["message"]


def test_list_is_newest_first_and_pages_with_a_cursor(client):
    ids = [submit(client, seed=seed) for seed in range(7)]
    newest_first = ids[::-1]
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        body = client.get(URL, query_string=query).get_json()
        assert set(body) == {"experiments", "next_cursor"}
        assert all(set(item) == PUBLIC_FIELDS for item in body["experiments"])
        seen += [item["id"] for item in body["experiments"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first
    assert pages == 3  # 3 + 3 + 1: the last page says it is the last


def test_a_full_last_page_has_no_cursor(client):
    ids = [submit(client) for _ in range(4)]
    first = client.get(URL, query_string={"limit": 2}).get_json()
    second = client.get(URL, query_string={"limit": 2, "cursor": first["next_cursor"]}).get_json()
    assert [item["id"] for item in first["experiments"] + second["experiments"]] == ids[::-1]
    assert second["next_cursor"] is None


def test_list_defaults_to_fifty(client):
    ids = [submit(client) for _ in range(51)]
    body = client.get(URL).get_json()
    assert [item["id"] for item in body["experiments"]] == ids[:0:-1]
    assert body["next_cursor"] is not None


def test_list_filters_by_status(client, store):
    queued, running, cancelled = submit(client), submit(client), submit(client)
    claim(store, running)
    client.post(f"{URL}/{cancelled}/cancel")
    for status, expected in [("queued", [queued]), ("running", [running]), ("cancelled", [cancelled]),
                             ("succeeded", [])]:
        body = client.get(URL, query_string={"status": status}).get_json()
        assert [item["id"] for item in body["experiments"]] == expected, status
    assert len(client.get(URL).get_json()["experiments"]) == 3


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ({"status": "done"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "1" * 19}, "cursor"),
        ({"cursor": "-5"}, "cursor"),
        ({"cursor": encode_cursor(5) + "!"}, "cursor"),
    ],
)
def test_bad_list_parameters_are_422(client, query, name):
    response = client.get(URL, query_string=query)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["loc"] == ["query", name]


def test_limit_bounds_are_accepted(client):
    submit(client)
    for limit in (1, 200):
        assert client.get(URL, query_string={"limit": limit}).status_code == 200


def test_cancel_a_queued_experiment_at_once_then_409(client):
    experiment_id = submit(client)
    response = client.post(f"{URL}/{experiment_id}/cancel")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "cancelled" and body["finished_at"]
    assert body["cancel_requested"] is True
    again = client.post(f"{URL}/{experiment_id}/cancel")
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "conflict"
    assert "cancelled" in again.get_json()["error"]["message"]


def test_cancel_a_running_experiment_flags_it_for_the_worker(client, store):
    experiment_id = submit(client)
    claim(store, experiment_id)
    body = client.post(f"{URL}/{experiment_id}/cancel").get_json()
    assert body["status"] == "running" and body["cancel_requested"] is True
    # The worker sees the flag at its next chunk and stops.
    assert store.update(experiment_id, "token", step=3)
    store.finish(experiment_id, "token", "cancelled")
    assert client.get(f"{URL}/{experiment_id}").get_json()["status"] == "cancelled"


def test_cancel_a_finished_experiment_is_409(client, store):
    experiment_id = submit(client)
    claim(store, experiment_id)
    store.finish(experiment_id, "token", "succeeded", summary={"final_loss": 0.1})
    response = client.post(f"{URL}/{experiment_id}/cancel")
    assert response.status_code == 409
    assert client.get(f"{URL}/{experiment_id}").get_json()["status"] == "succeeded"


def test_delete_removes_the_experiment_and_its_traces(client, store, redis_client):
    experiment_id, kept = submit(client), submit(client)
    claim(store, experiment_id)
    response = client.delete(f"{URL}/{experiment_id}")
    assert response.status_code == 204 and response.data == b""
    assert client.get(f"{URL}/{experiment_id}").status_code == 404
    assert client.get(f"{URL}/{experiment_id}/traces").status_code == 404
    assert client.delete(f"{URL}/{experiment_id}").status_code == 404
    assert [item["id"] for item in client.get(URL).get_json()["experiments"]] == [kept]
    assert not redis_client.keys(f"*{experiment_id}*")


def test_each_request_sees_only_its_tenants_experiments(app, client):
    """The hook for an auth layer: whatever sets `g.tenant` scopes every store call."""
    tenant_of = {"alice-token": "alice", "bob-token": "bob"}

    @app.before_request
    def set_tenant():
        g.tenant = tenant_of.get(request.headers.get("X-Test-Token", ""), "")

    def as_(token: str) -> dict:
        return {"headers": {"X-Test-Token": token}}

    alice = client.post(URL, json={}, **as_("alice-token")).get_json()["id"]
    assert client.get(f"{URL}/{alice}", **as_("alice-token")).status_code == 200
    for method, path in [("get", ""), ("get", "/traces"), ("post", "/cancel"), ("delete", "")]:
        assert getattr(client, method)(f"{URL}/{alice}{path}", **as_("bob-token")).status_code == 404
    assert client.get(URL, **as_("bob-token")).get_json()["experiments"] == []
    assert client.get(URL).get_json()["experiments"] == []
    assert [item["id"] for item in client.get(URL, **as_("alice-token")).get_json()["experiments"]] == [alice]
    assert "tenant" not in client.get(f"{URL}/{alice}", **as_("alice-token")).get_json()
