"""The result cache end to end: a real worker runs and names a result, the API answers the same inputs from it."""

import io

import numpy as np
import pytest

from shared.cache import CODE_VERSION, source_hash
from tests.integration.helpers import wait_for
from tests.integration.test_experiments import submit

pytestmark = pytest.mark.integration

# A seed of these tests' own: the live database is shared by the whole session.
SPEC = {"depth": 3, "width": 16, "steps": 25, "batch_size": 32, "seed": 90210}


@pytest.fixture(autouse=True)
def same_code_as_the_worker():
    """The worker keys results by the source it loaded at its start, this process by the source at its
    own: an edit of the training code in between (a shared working tree) makes every lookup miss, rightly."""
    if source_hash() != CODE_VERSION:
        pytest.skip("the training code changed while the tests ran: the worker's results are another version's")


def npz(client, experiment_id: str) -> dict[str, np.ndarray]:
    arrays = np.load(io.BytesIO(client.get(f"/api/v1/experiments/{experiment_id}/traces?format=npz").data))
    return {name: arrays[name] for name in arrays.files}


def assert_same_traces(client, first: str, second: str) -> None:
    one, other = npz(client, first), npz(client, second)
    assert sorted(one) == sorted(other)
    for name in one:
        np.testing.assert_array_equal(one[name], other[name], err_msg=name)


def test_a_second_submit_is_answered_at_once_and_cache_false_runs_afresh(client):
    first = wait_for(client, submit(client, **SPEC))
    assert first["status"] == "succeeded", first
    assert first["summary"]["cached"] is False and first["summary"]["cached_from"] is None

    response = client.post("/api/v1/experiments", json={**SPEC, "name": "again"})
    assert response.status_code == 202
    hit = response.get_json()
    assert hit["status"] == "succeeded"  # in the answer to the POST: no worker took part
    assert hit["summary"]["cached"] is True and hit["summary"]["cached_from"] == first["id"]
    assert hit["summary"]["final_loss"] == first["summary"]["final_loss"]
    assert hit["progress"] == first["progress"] and hit["spec"]["name"] == "again"
    assert_same_traces(client, first["id"], hit["id"])

    fresh = wait_for(client, submit(client, **SPEC, cache=False))
    assert fresh["status"] == "succeeded" and fresh["summary"]["cached"] is False
    assert fresh["attempts"] == 1 and fresh["summary"]["train_seconds"] > 0
    # Same spec, seed and device type: a fresh run records the very traces that the cache serves.
    assert_same_traces(client, first["id"], fresh["id"])


def test_a_changed_seed_misses_and_a_deleted_source_is_not_served(client):
    source = wait_for(client, submit(client, **{**SPEC, "seed": 90211}))
    assert source["status"] == "succeeded"
    assert client.post("/api/v1/experiments", json={**SPEC, "seed": 90212}).get_json()["status"] == "queued"

    assert client.delete(f"/api/v1/experiments/{source['id']}").status_code == 204
    again = client.post("/api/v1/experiments", json={**SPEC, "seed": 90211}).get_json()
    assert again["status"] == "queued"
    rerun = wait_for(client, again["id"])
    assert rerun["status"] == "succeeded" and rerun["summary"]["cached"] is False
    # The fresh run names itself for those inputs now.
    assert client.post("/api/v1/experiments", json={**SPEC, "seed": 90211}).get_json()["summary"]["cached_from"] == again["id"]


def test_a_sweep_point_is_answered_from_a_single_run(client):
    single = wait_for(client, submit(client, **{**SPEC, "seed": 90213}))
    base = {key: value for key, value in SPEC.items() if key != "seed"}
    response = client.post("/api/v1/sweeps", json={"base": base, "grid": {"seed": [90213, 90214]}})
    cached, fresh = response.get_json()["experiments"]
    assert client.get(f"/api/v1/experiments/{cached}").get_json()["summary"]["cached_from"] == single["id"]
    assert wait_for(client, fresh)["summary"]["cached"] is False
    assert_same_traces(client, single["id"], cached)
