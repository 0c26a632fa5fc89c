"""The Redis store's fencing: one attempt writes at a time, and a new attempt starts clean."""

import numpy as np
import pytest

from shared.spec import ExperimentSpec
from shared.store import ENCODED, ExperimentNotFound, StatusConflict, Store, lease_key, packed_key
from shared.traces import ALL_METRICS, TraceChunk

LAYERS = [{"name": f"hidden.{i}", "kind": "linear"} for i in range(2)] + [{"name": "output", "kind": "linear"}]


def chunk(first_step: int, rows: int, value: float) -> TraceChunk:
    return TraceChunk({
        "step": np.arange(first_step, first_step + rows),
        "loss": np.full(rows, value),
        "grad_norm": np.full((rows, len(LAYERS)), value),
    })


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


@pytest.fixture
def experiment_id(store) -> str:
    store.create("e1", ExperimentSpec(depth=2).model_dump(mode="json"))
    return "e1"


def claim(store, experiment_id, token, max_attempts=3):
    return store.claim(experiment_id, token, lease_seconds=30, max_attempts=max_attempts)


def test_create_answers_what_get_reads(store):
    created = store.create("e2", ExperimentSpec(depth=3).model_dump(mode="json"), tenant="alice", queue="gpu")
    assert created == store.get("e2", tenant="alice")
    assert created["status"] == "queued" and created["spec"]["depth"] == 3 and created["queue"] == "gpu"
    assert store.create("e3", ExperimentSpec().model_dump(mode="json"), tenant="alice")["seq"] == created["seq"] + 1
    assert [record["id"] for record in store.list_experiments(tenant="alice")[0]] == ["e3", "e2"]


def test_a_claim_brings_the_spec(store, experiment_id):
    assert claim(store, experiment_id, "a") == ("claimed", 1, ExperimentSpec(depth=2).model_dump(mode="json"))
    assert claim(store, experiment_id, "b") == ("busy", 0, None)


def test_second_claim_while_leased_is_busy(store, experiment_id):
    assert claim(store, experiment_id, "a")[:2] == ("claimed", 1)
    assert claim(store, experiment_id, "b")[:2] == ("busy", 0)
    assert store.get(experiment_id)["attempts"] == 1


def test_writes_are_fenced_by_the_lease(store, experiment_id):
    claim(store, experiment_id, "a")
    assert store.update(experiment_id, "a", layers=LAYERS)
    assert store.append_chunk(experiment_id, "a", chunk(0, 3, 1.0), 3) == 0
    assert store.append_chunk(experiment_id, "intruder", chunk(3, 3, 9.0), 6) == -1
    assert not store.update(experiment_id, "intruder", status="succeeded")
    assert not store.finish(experiment_id, "intruder", "succeeded")
    layers, arrays = store.read_traces(experiment_id, ["loss", "grad_norm"])
    assert layers == LAYERS
    assert arrays["step"].tolist() == [0, 1, 2]
    assert arrays["grad_norm"].shape == (3, 3) and np.all(arrays["grad_norm"] == 1.0)
    assert store.get(experiment_id)["status"] == "running"


def test_new_attempt_starts_from_a_clean_trace(store, experiment_id, redis_client):
    claim(store, experiment_id, "a")
    store.update(experiment_id, "a", layers=LAYERS)
    store.append_chunk(experiment_id, "a", chunk(0, 5, 1.0), 5)
    redis_client.delete(lease_key(experiment_id))  # the first worker died; its lease lapsed
    assert store.orphans() == [{"id": experiment_id, "queue": "cpu"}]
    assert claim(store, experiment_id, "b")[:2] == ("claimed", 2)
    assert store.orphans() == []
    store.update(experiment_id, "b", layers=LAYERS)
    store.append_chunk(experiment_id, "b", chunk(0, 2, 2.0), 2)
    assert store.append_chunk(experiment_id, "a", chunk(5, 5, 1.0), 10) == -1  # the zombie writes nothing
    _, arrays = store.read_traces(experiment_id, ["grad_norm"])
    assert arrays["step"].tolist() == [0, 1]
    assert np.all(arrays["grad_norm"] == 2.0)


def test_attempts_are_capped(store, experiment_id, redis_client):
    for attempt in range(1, 3):
        assert claim(store, experiment_id, f"t{attempt}", max_attempts=2)[:2] == ("claimed", attempt)
        redis_client.delete(lease_key(experiment_id))
    assert claim(store, experiment_id, "t3", max_attempts=2)[:2] == ("exhausted", 0)
    record = store.get(experiment_id)
    assert record["status"] == "failed"
    assert "2 times" in record["error"]["message"]
    assert store.orphans() == []


def test_finish_releases_the_lease_and_compacts(store, experiment_id, redis_client):
    claim(store, experiment_id, "a")
    store.update(experiment_id, "a", layers=LAYERS)
    for start in range(0, 300, 3):
        store.append_chunk(experiment_id, "a", chunk(start, 3, 1.0), start + 3)
    assert store.finish(experiment_id, "a", "succeeded", summary={"final_loss": 0.5})
    assert not redis_client.exists(lease_key(experiment_id))
    record = store.get(experiment_id)
    assert record["status"] == "succeeded" and record["summary"] == {"final_loss": 0.5}
    assert claim(store, experiment_id, "b")[:2] == ("finished", 0)
    # One key holds the whole trace: a header of a uint32 length per metric, then 300 steps (int32),
    # 300 losses and 300 rows x 3 layers (float32), each deflated (a counter and constants: to a few
    # hundred bytes in all); no APPEND slack left behind (which can double a string).
    assert redis_client.keys("gradtrace:trace:*") == []
    raw = 300 * 4 * 2 + 300 * 3 * 4
    header = redis_client.getrange(packed_key(experiment_id), 0, len(ALL_METRICS) * 4 - 1)
    lengths = np.frombuffer(header, "<u4")
    assert lengths[0] & ENCODED and lengths[ALL_METRICS.index("grad_norm")] & ENCODED
    assert [length for length in lengths if not length & ENCODED] == [0] * (len(ALL_METRICS) - 3)
    assert redis_client.strlen(packed_key(experiment_id)) == len(header) + sum(lengths % ENCODED) < raw / 10
    assert redis_client.memory_usage(packed_key(experiment_id)) < raw / 4
    layers, arrays = store.read_traces(experiment_id, ["grad_norm", "loss", "accuracy", "time_grad_norm"])
    assert layers == LAYERS and list(arrays) == ["step", "grad_norm", "loss", "accuracy"]
    assert arrays["step"].tolist() == list(range(300))
    assert arrays["grad_norm"].shape == (300, 3) and np.all(arrays["grad_norm"] == 1.0)
    assert np.all(arrays["loss"] == 1.0) and arrays["accuracy"].shape == (0,)


def test_a_packed_trace_reads_back_each_metric_and_goes_with_its_experiment(store, redis_client):
    spec = ExperimentSpec(arch="rnn", depth=1, width=4, seq_len=5).model_dump(mode="json")
    store.create("r1", spec, tenant="alice")
    claim(store, "r1", "a")
    store.update("r1", "a", layers=LAYERS)
    rng = np.random.default_rng(0)
    arrays = {"step": np.arange(7), "clipped": rng.random(7) > 0.5, "act_std": rng.random((7, 3)),
              "time_grad_norm": rng.random((7, 5))}
    arrays["act_std"][:, -1] = np.nan
    store.append_chunk("r1", "a", TraceChunk({name: array[:4] for name, array in arrays.items()}), 4)
    store.append_chunk("r1", "a", TraceChunk({name: array[4:] for name, array in arrays.items()}), 7)
    running = store.read_traces("r1", ["time_grad_norm", "clipped", "act_std"], tenant="alice")[1]
    assert store.finish("r1", "a", "succeeded")
    with pytest.raises(ExperimentNotFound):
        store.read_traces("r1", tenant="bob")
    _, ended = store.read_traces("r1", ["time_grad_norm", "clipped", "act_std"], tenant="alice")
    for read in (running, ended):
        assert list(read) == ["step", "time_grad_norm", "clipped", "act_std"]
        assert read["step"].tolist() == list(range(7))
        assert np.array_equal(read["clipped"], arrays["clipped"])
        assert np.array_equal(read["act_std"], arrays["act_std"].astype(np.float32), equal_nan=True)
        assert np.array_equal(read["time_grad_norm"], arrays["time_grad_norm"].astype(np.float32))
    store.delete("r1")
    assert redis_client.keys("gradtrace:trace*") == []


def test_a_finish_packs_the_bytes_there_are_not_those_it_was_handed(store, experiment_id):
    """Should the metrics change between `pack` and the finish, the finish packs them itself, unencoded."""
    claim(store, experiment_id, "a")
    store.update(experiment_id, "a", layers=LAYERS)
    store.append_chunk(experiment_id, "a", chunk(0, 50, 1.0), 50)
    stale = store.pack(experiment_id)
    store.append_chunk(experiment_id, "a", chunk(50, 50, 2.0), 100)
    store.pack = lambda _: stale
    assert store.finish(experiment_id, "a", "succeeded")
    _, arrays = store.read_traces(experiment_id, ["grad_norm"])
    assert arrays["step"].tolist() == list(range(100))
    assert arrays["grad_norm"].tolist() == [[1.0] * 3] * 50 + [[2.0] * 3] * 50


def test_cancel_queued_then_conflict(store, experiment_id):
    assert store.request_cancel(experiment_id) == "cancelled"
    assert store.get(experiment_id)["status"] == "cancelled"
    with pytest.raises(StatusConflict):
        store.request_cancel(experiment_id)
    assert claim(store, experiment_id, "a")[:2] == ("finished", 0)


def test_tenants_do_not_see_each_other(store):
    store.create("mine", ExperimentSpec().model_dump(mode="json"), tenant="alice")
    with pytest.raises(ExperimentNotFound):
        store.get("mine", tenant="bob")
    assert store.list_experiments(tenant="bob") == ([], None)
    assert [r["id"] for r in store.list_experiments(tenant="alice")[0]] == ["mine"]
