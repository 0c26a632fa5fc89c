"""POST /api/v1/experiments: what is accepted, what is queued where, and every way a body is refused."""

import io
import json

import pytest

from api.app import create_app
from api.resources import EXTENSION
from shared.celery_app import RUN_TASK
from shared.limits import LIMITS

URL = "/api/v1/experiments"


def post_raw(client, data, content_type="application/json"):
    return client.post(URL, data=data, content_type=content_type)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    return error


def queued_messages(redis_client, queue: str) -> list[dict]:
    return [json.loads(raw) for raw in redis_client.lrange(queue, 0, -1)]


def test_accepted_with_defaults_and_location(client, redis_client):
    response = client.post(URL, json={"depth": 3, "name": "first"})
    assert response.status_code == 202
    body = response.get_json()
    assert response.headers["Location"] == f"{URL}/{body['id']}"
    assert len(body["id"]) == 32
    assert body["status"] == "queued"
    assert body["spec"] == {
        "arch": "mlp", "depth": 3, "width": 64, "activation": "relu", "init": "default", "init_std": 0.01,
        "clipping": None, "norm": "none", "residual": False, "dataset": "spirals", "optimizer": "sgd",
        "lr": 0.05, "batch_size": 64, "steps": 300, "seed": 0, "trace_every": 1, "device": "auto",
        "name": "first", "cache": True, "cell": "rnn", "seq_len": 20,
    }
    assert body["progress"] == {"step": 0, "steps": 300}
    assert body["started_at"] is None and body["finished_at"] is None
    assert body["summary"] is None and body["error"] is None
    assert body["created_at"].endswith("Z")
    assert client.get(response.headers["Location"]).get_json() == body


def test_queued_as_a_celery_message_on_the_cpu_queue(client, redis_client):
    experiment_id = client.post(URL, json={}).get_json()["id"]
    messages = queued_messages(redis_client, "cpu")
    assert len(messages) == 1
    assert messages[0]["headers"]["task"] == RUN_TASK
    assert messages[0]["headers"]["id"] == experiment_id
    assert redis_client.llen("gpu") == 0
    client.post(URL, json={"device": "cpu"})
    assert redis_client.llen("cpu") == 2


def test_cuda_specs_go_to_the_gpu_queue(client, redis_client):
    body = client.post(URL, json={"device": "cuda"}).get_json()
    assert body["queue"] == "gpu"
    assert [message["headers"]["id"] for message in queued_messages(redis_client, "gpu")] == [body["id"]]
    assert redis_client.llen("cpu") == 0


@pytest.mark.parametrize(
    ("given", "field", "stored"),
    [
        ({"activation": "swish"}, "activation", "silu"),
        ({"init": "he_normal"}, "init", "kaiming_normal"),
        ({"init": "he_uniform"}, "init", "kaiming_uniform"),
        ({"clipping": {"mode": "norm", "threshold": 1}}, "clipping", {"mode": "norm", "threshold": 1.0}),
        ({"dataset": "digits"}, "dataset", "digits"),
        ({"seed": -(2**63)}, "seed", -(2**63)),
    ],
)
def test_aliases_and_values_as_stored(client, given, field, stored):
    response = client.post(URL, json=given)
    assert response.status_code == 202
    assert response.get_json()["spec"][field] == stored
    assert client.get(response.headers["Location"]).get_json()["spec"][field] == stored


TOO_COSTLY = {"depth": 100, "width": 1024, "batch_size": 1024, "steps": 10_000}
TOO_MANY_TRACE_VALUES = {"depth": LIMITS.depth, "width": 1, "batch_size": 1, "steps": LIMITS.steps}


@pytest.mark.parametrize(
    ("spec", "loc", "says"),
    [
        ({"depth": 0}, ["depth"], "greater than or equal to 1"),
        ({"depth": LIMITS.depth + 1}, ["depth"], str(LIMITS.depth)),
        ({"depth": "8"}, ["depth"], "integer"),
        ({"depth": 8.5}, ["depth"], "integer"),
        ({"depth": True}, ["depth"], "integer"),
        ({"width": 0}, ["width"], "1"),
        ({"width": LIMITS.width + 1}, ["width"], str(LIMITS.width)),
        ({"steps": 0}, ["steps"], "1"),
        ({"steps": LIMITS.steps + 1}, ["steps"], str(LIMITS.steps)),
        ({"batch_size": 0}, ["batch_size"], "1"),
        ({"batch_size": LIMITS.batch_size + 1}, ["batch_size"], str(LIMITS.batch_size)),
        ({"seq_len": 1}, ["seq_len"], "2"),
        ({"seq_len": LIMITS.seq_len + 1}, ["seq_len"], str(LIMITS.seq_len)),
        ({"trace_every": 0}, ["trace_every"], "1"),
        ({"lr": 0}, ["lr"], "greater than 0"),
        ({"lr": -0.1}, ["lr"], "greater than 0"),
        ({"lr": "0.1"}, ["lr"], "number"),
        ({"lr": 1e300}, ["lr"], "less than or equal"),
        ({"init_std": 0}, ["init_std"], "greater than 0"),
        ({"seed": 2**64}, ["seed"], "less than or equal"),
        ({"seed": 1.5}, ["seed"], "integer"),
        ({"activation": "swishy"}, ["activation"], "relu"),
        ({"init": "he"}, ["init"], "kaiming_normal"),
        ({"norm": "groupnorm"}, ["norm"], "batchnorm"),
        ({"dataset": "mnist"}, ["dataset"], "spirals"),
        ({"optimizer": "rmsprop"}, ["optimizer"], "adam"),
        ({"device": "tpu"}, ["device"], "cuda"),
        ({"cell": "transformer"}, ["cell"], "lstm"),
        ({"residual": "yes"}, ["residual"], "boolean"),
        ({"residual": 1}, ["residual"], "boolean"),
        ({"name": "x" * (LIMITS.name_length + 1)}, ["name"], str(LIMITS.name_length)),
        ({"name": 5}, ["name"], "string"),
        ({"clipping": "norm"}, ["clipping"], "dictionary"),
        ({"clipping": {"mode": "norm"}}, ["clipping", "threshold"], "required"),
        ({"clipping": {"mode": "norm", "threshold": 0}}, ["clipping", "threshold"], "greater than 0"),
        ({"clipping": {"mode": "sign", "threshold": 1}}, ["clipping", "mode"], "norm"),
        ({"clipping": {"mode": "norm", "threshold": 1, "x": 1}}, ["clipping", "x"], "Extra inputs"),
        ({"activaton": "tanh"}, ["activaton"], "Extra inputs"),
        ({"arch": "cnn", "dataset": "spirals"}, ["dataset"], "does not fit arch 'cnn'"),
        ({"arch": "rnn", "dataset": "digits"}, ["dataset"], "does not fit arch 'rnn'"),
        ({"arch": "rnn", "norm": "layernorm"}, ["norm"], "norm applies to arch 'mlp' and 'cnn'"),
        ({"arch": "rnn", "residual": True}, ["residual"], "residual applies to arch 'mlp' and 'cnn'"),
        ({"arch": "transformer"}, ["arch"], "mlp"),
        ({"dataset": "adding"}, ["dataset"], "does not fit arch"),
        ({"norm": "batchnorm", "batch_size": 1}, ["batch_size"], "batchnorm' needs batch_size >= 2"),
        (TOO_COSTLY, ["cost"], f"over the limit of {LIMITS.cost:.3g}"),
        (TOO_MANY_TRACE_VALUES, ["trace_every"], f"over the limit of {LIMITS.trace_values:,}"),
    ],
)
def test_invalid_specs_are_422_naming_the_field(client, redis_client, spec, loc, says):
    error = assert_error(client.post(URL, json=spec), 422, "validation_error")
    assert error["details"][0]["loc"] == loc
    assert says in error["details"][0]["msg"]
    assert error["message"] == f"{'.'.join(loc)}: {error['details'][0]['msg']}"
    assert redis_client.llen("cpu") == 0  # nothing queued
    assert client.get(URL).get_json()["experiments"] == []  # nothing recorded


def test_several_errors_are_all_listed(client):
    error = assert_error(client.post(URL, json={"depth": 0, "width": 0, "typo": 1}), 422, "validation_error")
    assert sorted(detail["loc"][0] for detail in error["details"]) == ["depth", "typo", "width"]
    assert error["message"].endswith("(and 2 more)")


@pytest.mark.parametrize("value", [[], [1, 2], "spec", 3, 1.5, True, None])
def test_a_json_value_that_is_not_an_object_is_422(client, value):
    error = assert_error(post_raw(client, json.dumps(value)), 422, "validation_error")
    assert error["details"] == [{"loc": [], "msg": error["message"]}]
    assert "JSON object" in error["message"]


@pytest.mark.parametrize(
    "data",
    [
        b'{"lr": NaN}',
        b'{"lr": Infinity}',
        b'{"lr": -Infinity}',
        b"",
        b"{",
        b'{"depth": 3,}',
        b"{'depth': 3}",
        '{"name": "caf\u00e9"}'.encode("latin-1"),
        b"\xff\xfe{}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"depth": ' + b"9" * 5000 + b"}",
    ],
    ids=["nan", "inf", "-inf", "empty", "truncated", "trailing-comma", "single-quotes", "latin-1",
         "utf-16-bom", "deep", "huge-int"],
)
def test_a_body_that_is_not_json_is_400(client, redis_client, data):
    assert_error(post_raw(client, data), 400, "invalid_json")
    assert redis_client.llen("cpu") == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "", "application/jsonx"])
def test_a_body_that_does_not_say_json_is_415(client, content_type):
    error = assert_error(post_raw(client, b"{}", content_type=content_type), 415, "unsupported_media_type")
    assert "application/json" in error["message"]


def test_json_with_a_charset_parameter_is_accepted(client):
    assert post_raw(client, b"{}", content_type="application/json; charset=utf-8").status_code == 202


def test_a_body_over_one_mib_is_413(client, redis_client):
    padding = " " * (1024 * 1024)
    error = assert_error(post_raw(client, "{}" + padding), 413, "body_too_large")
    assert str(1024 * 1024) in error["message"]
    assert redis_client.llen("cpu") == 0
    # Just at the limit is fine: the bound is on bytes, not on what they hold.
    assert post_raw(client, "{}" + padding[2:]).status_code == 202


def test_a_chunked_body_over_the_limit_is_413_not_parsed_truncated(client, redis_client):
    # A chunked request has no Content-Length; servers mark its end with wsgi.input_terminated.
    body = io.BytesIO(b'{"name": "' + b"x" * (1024 * 1024) + b'"}')
    response = client.post(URL, input_stream=body, content_type="application/json",
                           headers={"Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    assert_error(response, 413, "body_too_large")
    small = client.post(URL, input_stream=io.BytesIO(b'{"depth": 2}'), content_type="application/json",
                        headers={"Transfer-Encoding": "chunked"},
                        environ_overrides={"wsgi.input_terminated": True})
    assert small.status_code == 202
    assert redis_client.llen("cpu") == 1


def test_the_body_limit_is_a_setting(redis_url, redis_client):
    app = create_app({"REDIS_URL": redis_url, "MAX_BODY_BYTES": 100})
    try:
        response = app.test_client().post(URL, json={"name": "x" * 100})
        assert_error(response, 413, "body_too_large")
    finally:
        app.extensions[EXTENSION].close()
