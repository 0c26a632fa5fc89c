"""schemathesis against the app in-process (WSGI), with all its default checks, on the real Redis of the tests.

Every operation of /openapi.json is fuzzed (examples, coverage and fuzzing phases), then the
stateful phase follows the document's links (create, read, cancel, delete). Submitted
experiments queue run messages that no worker takes; the tests' database is flushed after.
Bounded for CI: a few examples per operation, derandomized so that a run is the same every
time. GRADTRACE_SCHEMATHESIS_EXAMPLES raises the bound for a long run by hand.
"""

import os
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from api.app import create_app
from api.resources import init_app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("GRADTRACE_SCHEMATHESIS_EXAMPLES", "15"))
STATEFUL_STEPS = 10
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
# Requests sent, by (operation, status): what a run covered.
CALLS: Counter = Counter()


# The eager loader: schemathesis' lazy `from_fixture` does not run under pytest 9.2 (it sets
# `request.node._nodeid`). The app is built here, with no connection; the fixture below points
# it at the tests' Redis (tests/conftest.py) before each test.
APP = create_app({"TESTING": True, "REDIS_URL": "redis://127.0.0.1:9/0"})
schema = schemathesis.openapi.from_wsgi(
    "/openapi.json", APP, config=SchemathesisConfig.from_path(ROOT / "schemathesis.toml")
)


@schema.hook
def after_call(context, case, response) -> None:
    CALLS[(case.operation.label, response.status_code)] += 1


@pytest.fixture(autouse=True)
def app_on_test_redis(redis_url, redis_client):
    """The app's connections on the tests' database (flushed before and after by redis_client)."""
    APP.config["REDIS_URL"] = redis_url
    resources = init_app(APP)
    yield resources
    resources.close()


@schema.parametrize()
@SETTINGS
def test_every_operation(case):
    case.call_and_validate()


def test_stateful(redis_client):
    """Chains of calls along the links: what one answer creates, the next reads, cancels or deletes."""

    class Machine(schema.as_state_machine()):
        def setup(self) -> None:
            # Each chain starts from an empty database, so that replaying one (to shrink it) sends the same calls.
            redis_client.flushdb()

    before = CALLS.copy()
    Machine.run(settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STATEFUL_STEPS, derandomize=True, deadline=None,
        database=None, suppress_health_check=list(HealthCheck),
    ))
    calls = CALLS - before
    print(f"stateful: {calls.total()} requests; all runs so far: {CALLS.total()}")
    # The links were followed: an experiment that a POST created was then found by its id.
    assert calls[("GET /api/v1/experiments/{experiment_id}", 200)] > 0, calls
