"""`GET /metrics` as the real worker takes experiments and finishes them."""

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


def scrape(client) -> dict[tuple, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def test_the_numbers_follow_runs_through_a_real_worker(client):
    before = scrape(client)
    # A name never used before: neither run is answered from another test's cached result.
    spec = {"depth": 3, "width": 8, "steps": 20, "name": uuid.uuid4().hex, "seed": 4242}
    first = client.post("/api/v1/experiments", json=spec).get_json()["id"]
    assert wait_for(client, first)["status"] == "succeeded"
    again = client.post("/api/v1/experiments", json=spec).get_json()["id"]  # the same inputs: cached
    assert wait_for(client, again)["summary"]["cached"] is True
    after = scrape(client)

    def grew(name, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before[key]

    assert grew("gradtrace_experiments_submitted_total") == 2
    assert grew("gradtrace_experiments_finished_total", status="succeeded") == 2
    assert grew("gradtrace_experiments_cached_total") == 1
    assert grew("gradtrace_experiment_attempts_total") == 1
    assert grew("gradtrace_train_seconds_count", status="succeeded") == 1  # the cached answer did not train
    assert grew("gradtrace_train_seconds_sum", status="succeeded") > 0
    assert after[("gradtrace_experiments", (("status", "running"),))] == 0
    assert after[("gradtrace_worker_nodes", ())] >= 1
    assert after[("gradtrace_queue_consumers", (("queue", "cpu"),))] >= 1
    assert after[("gradtrace_queue_depth", (("queue", "cpu"),))] == 0
