"""API tokens and tenants: every /api/v1 endpoint with two tokens, on the tests' real Redis.

A worker's writes are made with the real Store (tests/api/test_cache.py's `run_as_worker`).
"""

import hashlib
import hmac
import json
import logging
from collections.abc import Iterator

import pytest
from flask import Flask

from api import auth
from api.app import create_app
from api.auth import Tokens, read_tokens, tenant_id
from api.resources import EXTENSION
from shared.store import exp_key
from tests.api.test_cache import SPEC, messages, run_as_worker
from tests.api.test_workers import node
from worker.registry import Registry

ALICE, BOB = "alice-4f9c2e8a1b7d3c60", "bob-9a8b7c6d5e4f3a21"
AS_ALICE = {"Authorization": f"Bearer {ALICE}"}
AS_BOB = {"Authorization": f"Bearer {BOB}"}
URL = "/api/v1/experiments"
SWEEPS = "/api/v1/sweeps"
SMALL = {"depth": 2, "width": 8, "steps": 3}


def token_app(redis_url: str, **config) -> Flask:
    return create_app({"REDIS_URL": redis_url, "TESTING": True, "API_TOKENS": f"{ALICE}, {BOB}",
                       "RATE_LIMIT": 0, **config})


@pytest.fixture
def app(redis_url, redis_client) -> Iterator[Flask]:
    app = token_app(redis_url)
    yield app
    app.extensions[EXTENSION].close()


# Every /api/v1 route, with what an isolation check does on it. A route added without a line
# here fails test_every_api_route_is_checked, so that no endpoint escapes these tests.
ROUTES = {
    ("POST", "/api/v1/experiments"): "creates as its tenant",
    ("GET", "/api/v1/experiments"): "lists its tenant's",
    ("GET", "/api/v1/experiments/<experiment_id>"): "404 to others",
    ("GET", "/api/v1/experiments/<experiment_id>/traces"): "404 to others (json, npz, csv)",
    ("POST", "/api/v1/experiments/<experiment_id>/cancel"): "404 to others",
    ("DELETE", "/api/v1/experiments/<experiment_id>"): "404 to others",
    ("POST", "/api/v1/sweeps"): "creates as its tenant",
    ("GET", "/api/v1/sweeps"): "lists its tenant's",
    ("GET", "/api/v1/sweeps/<sweep_id>"): "404 to others",
    ("POST", "/api/v1/sweeps/<sweep_id>/cancel"): "404 to others",
    ("DELETE", "/api/v1/sweeps/<sweep_id>"): "404 to others",
    ("GET", "/api/v1/workers"): "shows its tenant's runs only",
    ("GET", "/api/v1/theory"): "no tenant data; needs a token",
    ("GET", "/api/v1/lessons"): "no tenant data; needs a token",
}


def api_routes(app: Flask) -> set[tuple[str, str]]:
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def concrete(path: str) -> str:
    return path.replace("<experiment_id>", "0" * 32).replace("<sweep_id>", "0" * 32)


def test_every_api_route_is_checked(app):
    assert api_routes(app) == set(ROUTES)


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer"}, {"Authorization": "Bearer not-a-token"}, {"Authorization": f"Basic {ALICE}"},
    {"Authorization": f"Bearer {ALICE}x"}, {"Authorization": f"Bearer {ALICE[:-1]}"},
], ids=["none", "empty", "wrong", "basic", "longer", "shorter"])
def test_every_api_route_needs_a_valid_token(app, client, redis_client, headers):
    for method, path in sorted(api_routes(app)):
        response = client.open(concrete(path), method=method, json={} if method == "POST" else None, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.get_json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert ALICE not in response.get_data(as_text=True)
    assert redis_client.dbsize() == 0  # nothing was written, nothing queued


def test_the_probes_and_docs_stay_open(app, client):
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") and "GET" in rule.methods and not rule.arguments:
            assert client.get(rule.rule).status_code != 401, rule.rule
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_without_tokens_the_service_is_open_with_one_tenant(redis_url, redis_client):
    app = create_app({"REDIS_URL": redis_url, "TESTING": True})
    try:
        client = app.test_client()
        experiment_id = client.post(URL, json=SMALL).get_json()["id"]
        assert client.get(f"{URL}/{experiment_id}", headers=AS_BOB).status_code == 200
        assert redis_client.hget(exp_key(experiment_id), "tenant") == b""
    finally:
        app.extensions[EXTENSION].close()


def test_each_token_sees_only_its_own_experiments_on_every_route(app, client, store, redis_client):
    mine = run_as_worker(client, store, SPEC, headers=AS_ALICE)
    queued = client.post(URL, json=SMALL, headers=AS_ALICE).get_json()["id"]
    for experiment_id in (mine, queued):
        for method, path in [("GET", ""), ("POST", "/cancel"), ("DELETE", "")]:
            response = client.open(f"{URL}/{experiment_id}{path}", method=method, headers=AS_BOB)
            assert response.status_code == 404, (method, path)
            assert response.get_json()["error"]["code"] == "not_found"
        for fmt in ("json", "npz", "csv"):
            assert client.get(f"{URL}/{experiment_id}/traces?format={fmt}", headers=AS_BOB).status_code == 404
            assert client.get(f"{URL}/{experiment_id}/traces?format={fmt}", headers=AS_ALICE).status_code == 200
    for status in ("", "?status=succeeded", "?status=queued"):
        assert client.get(f"{URL}{status}", headers=AS_BOB).get_json()["experiments"] == []
    listed = [item["id"] for item in client.get(URL, headers=AS_ALICE).get_json()["experiments"]]
    assert listed == [queued, mine]
    # Nothing of Bob's attempts changed Alice's runs.
    assert client.get(f"{URL}/{queued}", headers=AS_ALICE).get_json()["status"] == "queued"
    assert client.post(f"{URL}/{queued}/cancel", headers=AS_ALICE).status_code == 202
    assert client.delete(f"{URL}/{mine}", headers=AS_ALICE).status_code == 204


def test_each_token_sees_only_its_own_sweeps_on_every_route(app, client):
    body = client.post(SWEEPS, json={"base": SMALL, "grid": {"seed": [0, 1]}}, headers=AS_ALICE).get_json()
    for method, path in [("GET", ""), ("POST", "/cancel"), ("DELETE", "")]:
        assert client.open(f"{SWEEPS}/{body['id']}{path}", method=method, headers=AS_BOB).status_code == 404
    assert client.get(SWEEPS, headers=AS_BOB).get_json()["sweeps"] == []
    for experiment_id in body["experiments"]:
        assert client.get(f"{URL}/{experiment_id}", headers=AS_BOB).status_code == 404
    assert client.get(URL, headers=AS_BOB).get_json()["experiments"] == []
    assert [sweep["id"] for sweep in client.get(SWEEPS, headers=AS_ALICE).get_json()["sweeps"]] == [body["id"]]
    assert client.get(f"{SWEEPS}/{body['id']}", headers=AS_ALICE).get_json()["counts"]["queued"] == 2
    assert client.post(f"{SWEEPS}/{body['id']}/cancel", headers=AS_ALICE).status_code == 202
    assert client.delete(f"{SWEEPS}/{body['id']}", headers=AS_ALICE).status_code == 204


def test_workers_show_a_run_to_its_own_tenant_only(app, client, redis_client):
    experiment_id = client.post(URL, json=SMALL, headers=AS_ALICE).get_json()["id"]
    process = Registry(redis_client, node("gradtrace-cpu-1@a"), "cpu", [], pid=11)
    with process.running(experiment_id):
        (alices,) = client.get("/api/v1/workers", headers=AS_ALICE).get_json()["workers"]
        (bobs,) = client.get("/api/v1/workers", headers=AS_BOB).get_json()["workers"]
    assert alices["active_experiments"] == [experiment_id]
    assert bobs["active_experiments"] == [] and bobs["busy"] == 1
    assert bobs["processes"][0]["experiment"] is None and experiment_id not in json.dumps(bobs)


def test_the_result_cache_never_answers_one_token_with_anothers_run(app, client, store, redis_client):
    source = run_as_worker(client, store, SPEC, headers=AS_ALICE)
    before = messages(redis_client)
    bobs = client.post(URL, json=SPEC, headers=AS_BOB).get_json()
    assert bobs["status"] == "queued" and bobs["summary"] is None
    assert messages(redis_client) == [*before, bobs["id"]]
    alices = client.post(URL, json=SPEC, headers=AS_ALICE).get_json()
    assert alices["status"] == "succeeded" and alices["summary"]["cached_from"] == source
    sweep = client.post(SWEEPS, json={"base": SPEC, "grid": {"width": [8]}}, headers=AS_BOB).get_json()
    assert client.get(f"{URL}/{sweep['experiments'][0]}", headers=AS_BOB).get_json()["status"] == "queued"


def test_records_carry_a_hash_of_the_token_and_redis_holds_no_token(app, client, store, redis_client):
    experiment_id = run_as_worker(client, store, SPEC, headers=AS_ALICE)
    client.post(SWEEPS, json={"base": SMALL, "grid": {"seed": [0]}}, headers=AS_BOB)
    tenant = redis_client.hget(exp_key(experiment_id), "tenant").decode()
    assert tenant == tenant_id(ALICE) and len(tenant) == 32 and ALICE not in tenant
    dump = b""
    for key in redis_client.scan_iter():
        kind = redis_client.type(key)
        dump += key
        if kind == b"hash":
            dump += b"".join(k + v for k, v in redis_client.hgetall(key).items())
        elif kind == b"string":
            dump += redis_client.get(key)
        elif kind == b"list":
            dump += b"".join(redis_client.lrange(key, 0, -1))
        elif kind == b"zset":
            dump += b"".join(redis_client.zrange(key, 0, -1))
        elif kind == b"set":
            dump += b"".join(redis_client.smembers(key))
    assert len(dump) > 1000
    for token in (ALICE, BOB):
        assert token.encode() not in dump
        assert hashlib.sha256(token.encode()).hexdigest().encode() not in dump


@pytest.mark.parametrize("field", ["owner", "tenant", "status", "attempts", "id", "created_at"])
def test_a_client_cannot_set_owner_or_status_fields(app, client, redis_client, field):
    for body, url in [({field: "x"}, URL), ({"base": {field: "x"}, "grid": {"seed": [0]}}, SWEEPS),
                      ({"base": {}, "grid": {field: ["x"]}}, SWEEPS)]:
        response = client.post(url, json=body, headers=AS_ALICE)
        assert response.status_code == 422, (url, body)
        assert field in json.dumps(response.get_json()["error"]["details"])
    assert redis_client.keys("gradtrace:exp:*") == [] and messages(redis_client) == []


def test_tokens_come_from_the_list_and_from_a_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# the team's tokens\n\n  carol-token  \ndave-token # dave, until March\nalice\n")
    assert read_tokens(" alice, bob ,,", path) == ["alice", "bob", "carol-token", "dave-token"]
    assert read_tokens(None, None) == [] and read_tokens("", None) == []
    with pytest.raises(auth.TokenFileError, match="cannot read the tokens file"):
        read_tokens(None, tmp_path / "missing")


def test_a_tokens_file_configures_the_app(redis_url, redis_client, tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# comment\n{BOB}\n")
    app = create_app({"REDIS_URL": redis_url, "TESTING": True, "API_TOKENS_FILE": path})
    try:
        client = app.test_client()
        assert client.get(URL, headers=AS_BOB).status_code == 200
        assert client.get(URL, headers=AS_ALICE).status_code == 401
    finally:
        app.extensions[EXTENSION].close()


def test_every_configured_token_is_compared_whichever_matches(monkeypatch):
    tokens = Tokens.of([f"token-{index}" for index in range(5)])
    calls, compare = [], hmac.compare_digest

    def counting(a, b):
        calls.append(len(a))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for presented in ("token-0", "token-4", "nope", "x" * 10_000):
        calls.clear()
        found = tokens.tenant(presented)
        assert calls == [32] * 5  # digests of one length: the token's own length never shows
        assert found == (tenant_id(presented) if presented.startswith("token-") else None)


def test_tokens_appear_in_no_log_line_and_no_answer(app, client, caplog):
    caplog.set_level(logging.DEBUG)

    @app.get("/api/v1/boom")
    def boom():
        raise RuntimeError("a bug")

    answers = [
        client.get(URL, headers={"Authorization": f"Bearer {ALICE}-wrong"}),
        client.get(URL, headers=AS_ALICE),
        client.get("/api/v1/boom", headers=AS_ALICE),
        client.post(URL, data="{", content_type="application/json", headers=AS_ALICE),
    ]
    assert [answer.status_code for answer in answers] == [401, 200, 500, 400]
    assert "Traceback" not in answers[2].get_data(as_text=True)
    text = caplog.text + "".join(answer.get_data(as_text=True) for answer in answers)
    assert "a bug" in caplog.text  # the 500 was logged, without the token
    assert ALICE not in text


def test_debug_stays_off_whatever_the_environment_says(redis_url, redis_client, monkeypatch):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app({"REDIS_URL": redis_url, "TESTING": True})
    try:
        assert app.debug is False
    finally:
        app.extensions[EXTENSION].close()
