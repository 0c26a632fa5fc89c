"""Bad input on every endpoint of API.md, as one table: each row a request and the 4xx it must get.

For every row: the status and the `code` of the JSON error body of API.md (never HTML, never
a trace), nothing written to Redis (no record, no index entry, no Celery message: every
key of the tests' database, with its size, is the same after as before), and nothing
logged as an unhandled error. To add a case, add a row: `Bad(name, method, path, status, ...)`.
`{exp}`, `{done}` and `{sweep}` in a path stand for a queued experiment, a finished one and
a finished sweep that the test writes first, as a worker would.
"""

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from api.app import create_app
from api.resources import EXTENSION
from api.validation import MAX_NESTING
from shared.limits import LIMITS
from shared.spec import ExperimentSpec
from shared.store import Store
from shared.sweeps import MAX_POINTS, Sweeps

EXP = "/api/v1/experiments"
SWEEPS = "/api/v1/sweeps"
THEORY = "/api/v1/theory"
UNKNOWN = "0123456789abcdef0123456789abcdef"
LIMIT_BYTES = 1 << 20  # the default MAX_BODY_BYTES of API.md
CODES = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed", 409: "conflict",
         413: "body_too_large", 415: "unsupported_media_type", 422: "validation_error"}


@dataclass
class Bad:
    name: str
    method: str
    path: str
    status: int
    json: Any = None  # a body to send as JSON
    raw: bytes | None = None  # or these bytes, as they are
    content_type: str | None = "application/json"
    query: dict | list | None = None
    headers: dict = field(default_factory=dict)
    chunked: bool = False  # no Content-Length: Transfer-Encoding chunked, as gunicorn passes it on

    def request(self) -> dict[str, Any]:
        """The test client's keyword arguments."""
        found: dict[str, Any] = {"headers": dict(self.headers)}
        body = self.raw if self.raw is not None else None if self.json is None else json.dumps(self.json).encode()
        if body is not None and self.chunked:
            found["input_stream"] = io.BytesIO(body)
            found["headers"]["Transfer-Encoding"] = "chunked"
            found["environ_overrides"] = {"wsgi.input_terminated": True}
        elif body is not None:
            found["data"] = body
        if self.content_type is not None and (body is not None or self.method == "post"):
            found["content_type"] = self.content_type
        if self.query is not None:
            found["query_string"] = self.query
        return found


def spec_rows(path: str, wrap=lambda spec: spec) -> list[Bad]:
    """A spec field's every kind of wrong value: bounds, types (bools, strings, floats where ints are), rules between fields."""
    wrong = {
        "arch": ["transformer", 1, ["mlp"], {}, None, "MLP"],
        "depth": [0, -1, LIMITS.depth + 1, "8", 8.5, True, None, [], {}, 10**400, 1e308],
        "width": [0, LIMITS.width + 1, "64", False, 64.5],
        "activation": ["swishy", 1, "RELU", None],
        "init": ["he", 0, ["default"]],
        "init_std": [0, -1.0, "0.01", True, 1e7, 1e308, 10**400],
        "clipping": ["norm", 1, [], {"mode": "norm"}, {"threshold": 1}, {"mode": "max", "threshold": 1},
                     {"mode": "norm", "threshold": 0}, {"mode": "norm", "threshold": "1"},
                     {"mode": "norm", "threshold": 1, "extra": 1}],
        "norm": ["groupnorm", True],
        "residual": [1, 0, "true", None],
        "dataset": ["mnist", 5],
        "optimizer": ["rmsprop", None],
        "lr": [0, -0.1, "0.1", 1e300, False, None],
        "batch_size": [0, LIMITS.batch_size + 1, 2.5],
        "steps": [0, LIMITS.steps + 1, "300"],
        "seed": [2**63, -(2**63) - 1, 1.5, "0", True, None],
        "trace_every": [0, LIMITS.steps + 1],
        "device": ["tpu", "CUDA"],
        "name": ["x" * (LIMITS.name_length + 1), 5, ["x"], "\ud800"],
        "cache": ["yes", 0],
        "cell": ["transformer"],
        "seq_len": [1, LIMITS.seq_len + 1],
    }
    rows = [Bad(f"{key}={json.dumps(value)[:40]}", "post", path, 422, json=wrap({key: value}))
            for key, values in wrong.items() for value in values]
    rules = {
        "arch/dataset": {"arch": "cnn", "dataset": "spirals"},
        "rnn+batchnorm": {"arch": "rnn", "norm": "batchnorm"},
        "rnn+residual": {"arch": "rnn", "residual": True},
        "batchnorm batch 1": {"norm": "batchnorm", "batch_size": 1},
        "over the cost": {"depth": 100, "width": 1024, "batch_size": 1024, "steps": 10_000},
        "over the trace": {"depth": LIMITS.depth, "width": 1, "batch_size": 1, "steps": LIMITS.steps},
        "unknown field": {"activaton": "relu"},
        "unknown field, empty name": {"": 1},
        "10,000 unknown fields": {f"x{i}": i for i in range(10_000)},
    }
    return rows + [Bad(name, "post", path, 422, json=wrap(spec)) for name, spec in rules.items()]


def body_rows(path: str) -> list[Bad]:
    """What any JSON body endpoint must refuse before it reads a spec."""
    deep = b"[" * 100_000 + b"]" * 100_000
    return [
        Bad("NaN", "post", path, 400, raw=b'{"lr": NaN}'),
        Bad("Infinity", "post", path, 400, raw=b'{"lr": Infinity}'),
        Bad("-Infinity", "post", path, 400, raw=b'{"lr": -Infinity}'),
        Bad("1e400", "post", path, 400, raw=b'{"lr": 1e400}'),
        Bad("integer of 5000 digits", "post", path, 400, raw=b'{"seed": ' + b"9" * 5000 + b"}"),
        Bad("nested 100,000 deep", "post", path, 400, raw=deep),
        Bad("nested 100,000 deep in an object", "post", path, 400, raw=b'{"name": ' + deep + b"}"),
        Bad(f"nested {MAX_NESTING + 1} deep", "post", path, 400,
            raw=b'{"clipping": ' + b"[" * MAX_NESTING + b"]" * MAX_NESTING + b"}"),
        Bad("a name twice", "post", path, 400, raw=b'{"depth": 2, "depth": 0}'),
        Bad("empty body", "post", path, 400, raw=b""),
        Bad("whitespace body", "post", path, 400, raw=b"  \n"),
        Bad("truncated", "post", path, 400, raw=b'{"depth": 2'),
        Bad("trailing garbage", "post", path, 400, raw=b'{"depth": 2} x'),
        Bad("single quotes", "post", path, 400, raw=b"{'depth': 2}"),
        Bad("not UTF-8", "post", path, 400, raw=b'{"name": "\xff\xfe"}'),
        Bad("UTF-16", "post", path, 400, raw='{"depth": 2}'.encode("utf-16")),
        Bad("UTF-8 with a BOM", "post", path, 400, raw=b'\xef\xbb\xbf{"depth": 2}'),
        Bad("NUL byte", "post", path, 400, raw=b'{"depth": 2}\x00'),
        Bad("array", "post", path, 422, json=[]),
        Bad("array of 200,000", "post", path, 422, json=[0] * 200_000),
        Bad("string", "post", path, 422, json="depth"),
        Bad("number", "post", path, 422, json=8),
        Bad("null", "post", path, 422, raw=b"null"),
        Bad("true", "post", path, 422, json=True),
        Bad("text/plain", "post", path, 415, json={}, content_type="text/plain"),
        Bad("form", "post", path, 415, raw=b"depth=2", content_type="application/x-www-form-urlencoded"),
        Bad("multipart", "post", path, 415, raw=b"--x--", content_type="multipart/form-data; boundary=x"),
        Bad("application/jsonx", "post", path, 415, json={}, content_type="application/jsonx"),
        Bad("no Content-Type", "post", path, 415, json={}, content_type=None),
        Bad("no body, no Content-Type", "post", path, 415, content_type=None),
        Bad("Content-Encoding gzip", "post", path, 415, json={}, headers={"Content-Encoding": "gzip"}),
        Bad("Content-Type of 10,000 characters", "post", path, 415, json={}, content_type="x/" + "y" * 10_000),
        Bad("over the limit", "post", path, 413, raw=b'{"name": "' + b"x" * LIMIT_BYTES + b'"}'),
        Bad("over the limit, chunked", "post", path, 413, raw=b'{"name": "' + b"x" * LIMIT_BYTES + b'"}',
            chunked=True),
        Bad("at the limit, chunked", "post", path, 413, raw=b" " * (LIMIT_BYTES - 2) + b"{}", chunked=True),
        Bad("over the limit, no JSON", "post", path, 413, raw=b"\xff" * (LIMIT_BYTES + 1)),
    ]


def sweep_rows() -> list[Bad]:
    """A sweep's own shape: base, grid and name, and points that are not valid specs."""
    small = {"depth": 2, "width": 4, "steps": 2}
    sweeps = {
        "unknown top field": {"grid": {"depth": [2]}, "gird": {}},
        "no grid": {"base": small},
        "grid null": {"grid": None},
        "grid empty": {"grid": {}},
        "grid a list": {"grid": [["depth", [2]]]},
        "grid unknown field": {"grid": {"dpeth": [2]}},
        "grid value not a list": {"grid": {"depth": 2}},
        "grid empty list": {"grid": {"depth": []}},
        "grid value twice": {"grid": {"depth": [2, 2]}},
        "grid value twice, 2 and 2.0": {"grid": {"depth": [2, 2.0]}},
        "grid value twice, objects in another order": {"grid": {"clipping": [
            {"mode": "norm", "threshold": 1}, {"threshold": 1, "mode": "norm"}]}},
        f"over {MAX_POINTS} points": {"grid": {"seed": list(range(40)), "depth": list(range(1, 27))}},
        "a list of 100,000": {"grid": {"seed": list(range(100_000))}},
        "grid point out of range": {"base": small, "grid": {"depth": [2, 0]}},
        "grid point of a wrong type": {"base": small, "grid": {"depth": [2, "3"]}},
        "grid nested unknown field": {"base": small, "grid": {"clipping": [{"mode": "norm", "threshold": 1, "x": 1}]}},
        "grid points over the cost": {"base": {"width": 1024, "batch_size": 1024, "steps": 10_000},
                                      "grid": {"depth": [50, 100]}},
        "base not an object": {"base": [], "grid": {"depth": [2]}},
        "base unknown field": {"base": {"dpeth": 2}, "grid": {"depth": [2]}},
        "base nested unknown field": {"base": {"clipping": {"mode": "norm", "threshold": 1, "x": 1}},
                                      "grid": {"depth": [2]}},
        "base value out of range": {"base": {"lr": -1}, "grid": {"depth": [2]}},
        "base value the grid replaces": {"base": {"depth": {}}, "grid": {"depth": [2]}},
        "base and point against a rule": {"base": {"arch": "rnn"}, "grid": {"norm": ["none", "batchnorm"]}},
        "name too long": {"grid": {"depth": [2]}, "name": "x" * (LIMITS.name_length + 1)},
        "name a number": {"grid": {"depth": [2]}, "name": 5},
        "name a lone surrogate": {"grid": {"depth": [2]}, "name": "\ud800"},
    }
    return [Bad(name, "post", SWEEPS, 422, json=body) for name, body in sweeps.items()]


def query_rows() -> list[Bad]:
    """Query parameters of the lists, the traces and the theory."""
    lists = {
        "status unknown": {"status": "done"}, "status twice": [("status", "queued"), ("status", "failed")],
        "limit 0": {"limit": 0}, "limit over": {"limit": 201}, "limit text": {"limit": "ten"},
        "limit 1.5": {"limit": "1.5"}, "limit +5": {"limit": "+5"}, "limit Arabic digit": {"limit": "\u0663"},
        "limit 10**30": {"limit": "1" + "0" * 30}, "limit twice": [("limit", "5"), ("limit", "6")],
        "cursor text": {"cursor": "abc"}, "cursor negative": {"cursor": "-5"}, "cursor 19 digits": {"cursor": "1" * 19},
        "cursor of 10,000": {"cursor": "x" * 10_000}, "limit empty": {"limit": ""}, "status empty": {"status": ""},
        "cursor empty": {"cursor": ""},
    }
    rows = [Bad(f"experiments {name}", "get", EXP, 422, query=query) for name, query in lists.items()]
    rows += [Bad(f"sweeps {name}", "get", SWEEPS, 422, query=query)
             for name, query in [("limit 0", {"limit": 0}), ("limit over", {"limit": 101}),
                                 ("cursor text", {"cursor": "next"}), ("limit twice", [("limit", "1")] * 2)]]
    traces = {
        "metrics unknown": {"metrics": "nope"}, "metrics one unknown": {"metrics": "grad_norm,bogus"},
        "format xml": {"format": "xml"}, "format JSON": {"format": "JSON"},
        "format twice": [("format", "json"), ("format", "csv")], "metrics empty": {"metrics": ""},
        "metrics an empty name": {"metrics": "loss,,grad_norm"}, "format empty": {"format": ""},
    }
    rows += [Bad(f"traces {name}", "get", EXP + "/{exp}/traces", 422, query=query) for name, query in traces.items()]
    theory = {
        "depth 0": {"depth": 0}, "depth text": {"depth": "abc"}, "depth 1.5": {"depth": "1.5"},
        "depth +5": {"depth": "+5"}, "depth over": {"depth": LIMITS.depth + 1}, "width over": {"width": 99999},
        "depth 10**400": {"depth": "1" + "0" * 400}, "depth twice": [("depth", "2"), ("depth", "3")],
        "init_std nan": {"init_std": "nan"}, "init_std inf": {"init_std": "inf"}, "init_std 0": {"init_std": 0},
        "init_std -1": {"init_std": -1}, "init_std 1e400": {"init_std": "1e400"},
        "init_std 1_0": {"init_std": "1_0"}, "init_std spaces": {"init_std": " 1"},
        "residual maybe": {"residual": "maybe"}, "residual 1": {"residual": "1"},
        "activation unknown": {"activation": "x"}, "init unknown": {"init": "he"},
        "arch unknown": {"arch": "transformer"}, "arch cnn, dataset spirals": {"arch": "cnn", "dataset": "spirals"},
        "arch rnn, norm batchnorm": {"arch": "rnn", "norm": "batchnorm"},
        "unknown parameter": {"steps": 10}, "unknown parameter, NUL": {"\x00": 1},
        "activation empty": {"activation": ""}, "depth empty": {"depth": ""},
    }
    rows += [Bad(f"theory {name}", "get", THEORY, 422, query=query) for name, query in theory.items()]
    return rows


def id_rows() -> list[Bad]:
    """Unknown and malformed ids on every route that takes one; actions the status does not allow."""
    routes = [("get", EXP + "/{id}"), ("delete", EXP + "/{id}"), ("post", EXP + "/{id}/cancel"),
              ("get", EXP + "/{id}/traces"), ("get", SWEEPS + "/{id}"), ("delete", SWEEPS + "/{id}"),
              ("post", SWEEPS + "/{id}/cancel")]
    ids = {"unknown": UNKNOWN, "short": "nope", "upper case": UNKNOWN.upper(), "33 digits": UNKNOWN + "0",
           "10,000 characters": "a" * 10_000, "non-ASCII": "\u00e9" * 32, "encoded slash": "a%2Fb",
           "encoded NUL": "%00"}
    rows = [Bad(f"{method} {path} {kind}", method, path.replace("{id}", value), 404, content_type=None)
            for method, path in routes for kind, value in ids.items()]
    return rows + [
        Bad("cancel a finished experiment", "post", EXP + "/{done}/cancel", 409, content_type=None),
        Bad("cancel a finished sweep", "post", SWEEPS + "/{sweep}/cancel", 409, content_type=None),
    ]


def method_rows() -> list[Bad]:
    """Wrong methods (405, with Allow) and unknown routes (404), as JSON."""
    wrong = [("put", EXP), ("patch", EXP), ("delete", EXP), ("post", EXP + "/{exp}"), ("put", EXP + "/{exp}"),
             ("get", EXP + "/{exp}/cancel"), ("delete", EXP + "/{exp}/cancel"), ("post", EXP + "/{exp}/traces"),
             ("put", SWEEPS), ("delete", SWEEPS), ("post", SWEEPS + "/{sweep}"), ("get", SWEEPS + "/{sweep}/cancel"),
             ("post", THEORY), ("post", "/api/v1/workers"), ("post", "/healthz"), ("delete", "/readyz"),
             ("post", "/openapi.json"), ("post", "/"), ("post", "/api/v1/lessons")]
    rows = [Bad(f"{method} {path}", method, path, 405, content_type=None) for method, path in wrong]
    unknown = ["/nope", "/api", "/api/v1", "/api/v1/experimentz", EXP + "/", EXP + "/{exp}/nope", "//api/v1/experiments",
               "/api/v2/experiments", "/docs/../healthz/x", "/api/v1/sweeps/{sweep}/experiments", "/" + "x" * 10_000]
    return rows + [Bad(f"GET {path[:40]}", "get", path, 404) for path in unknown]


TABLE = [
    *spec_rows(EXP),
    *body_rows(EXP),
    *spec_rows(SWEEPS, wrap=lambda spec: {"base": spec, "grid": {"seed": [0, 1]}}),
    *body_rows(SWEEPS),
    *sweep_rows(),
    *query_rows(),
    *id_rows(),
    *method_rows(),
]


def fingerprint(client) -> dict[bytes, tuple]:
    """Every key of the tests' database with its type and size: a record, an index entry or a Celery message changes it."""
    sizes = {b"string": client.strlen, b"list": client.llen, b"hash": client.hlen, b"set": client.scard,
             b"zset": client.zcard}
    found = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        found[key] = (kind, sizes.get(kind, lambda _: 0)(key))
    return found


def write_existing(store: Store) -> dict[str, str]:
    """A queued experiment, a finished one, and a sweep whose experiments have all ended, written as the API and a worker would."""
    spec = ExperimentSpec(depth=2, width=4, steps=2).model_dump(mode="json")
    queued, done, sweep = "a" * 32, "b" * 32, "c" * 32
    store.create(queued, spec)
    store.create(done, spec)
    store.claim(done, "token", lease_seconds=30, max_attempts=3)
    assert store.finish(done, "token", "failed", error="a test")
    Sweeps(store).create(sweep, base=spec, grid={"seed": [0]}, name=None,
                         experiments=[("d" * 32, {"seed": 0}, spec, "cpu")], tenant="")
    assert store.request_cancel("d" * 32) == "cancelled"
    return {"exp": queued, "done": done, "sweep": sweep}


@pytest.fixture(scope="module")
def setting(redis_url) -> Iterator[tuple[FlaskClient, redis.Redis, dict[str, str]]]:
    """One app and one set of records for the whole table: no row may change them, and each row checks that."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    app = create_app({"REDIS_URL": redis_url, "TESTING": True})
    try:
        yield app.test_client(), client, write_existing(Store(client))
    finally:
        app.extensions[EXTENSION].close()
        client.flushdb()
        client.close()


@pytest.mark.parametrize("bad", TABLE, ids=[f"{bad.status}-{bad.name}" for bad in TABLE])
def test_bad_input_is_a_json_4xx_and_changes_nothing(setting, caplog, bad):
    client, redis_client, existing = setting
    path = bad.path.format(**existing)
    before = fingerprint(redis_client)
    response = client.open(path, method=bad.method.upper(), **bad.request())
    assert response.status_code == bad.status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == CODES[bad.status]
    assert isinstance(error["message"], str) and error["message"] and "Traceback" not in error["message"]
    assert all(set(detail) >= {"loc", "msg"} for detail in error["details"])
    if bad.status == 405:
        assert bad.method.upper() not in response.headers["Allow"]
    assert fingerprint(redis_client) == before, "the request changed Redis"
    assert "unhandled error" not in caplog.text


def test_the_table_is_long():
    """The figure for the issue's closing note: how many bad inputs the table tries (each also per route)."""
    assert len(TABLE) >= 400, len(TABLE)
