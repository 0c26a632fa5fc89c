"""The cache key and the cache's own rules, on the tests' real Redis."""

import pytest

from shared import cache
from shared.cache import CODE_VERSION, ResultCache, result_key, source_hash
from shared.spec import ExperimentSpec
from shared.store import Store, exp_key

SPEC = ExperimentSpec(depth=3, seed=5)


def key(spec: ExperimentSpec = SPEC, device: str = "cpu", tenant: str = "", version: str = "v1") -> str:
    return result_key(spec, device, tenant, version)


@pytest.mark.parametrize(
    "same",
    [
        {"name": "a label"},
        {"cache": False},
        {"device": "cpu"},
        {"activation": "relu", "width": 64},  # defaults spelled out
        {"lr": 5e-2},
    ],
)
def test_what_does_not_change_a_result_keeps_the_key(same):
    assert key(SPEC.model_copy(update=same)) == key()


def test_aliases_resolve_before_the_key():
    aliased = ExperimentSpec.model_validate({"depth": 3, "seed": 5, "activation": "swish", "init": "he_uniform"})
    named = ExperimentSpec(depth=3, seed=5, activation="silu", init="kaiming_uniform")
    assert key(aliased) == key(named) != key()


@pytest.mark.parametrize(
    "change",
    [{"seed": 6}, {"depth": 4}, {"lr": 0.0500001}, {"clipping": {"mode": "norm", "threshold": 1.0}}, {"trace_every": 2}],
)
def test_every_input_is_in_the_key(change):
    assert key(ExperimentSpec.model_validate({"depth": 3, "seed": 5, **change})) != key()


def test_the_code_version_device_class_and_tenant_are_in_the_key():
    assert key(version="v2") != key()
    assert key(device="cuda:0") == key(device="cuda") != key()
    assert key(device="auto") == key(device="cpu")  # auto specs run on the cpu queue
    assert key(tenant="alice") != key()
    assert key().startswith("gradtrace:cache:") and len(key()) == len("gradtrace:cache:") + 64


def test_the_default_version_is_this_process_code_version():
    assert result_key(SPEC, "cpu", "") == key(version=CODE_VERSION)


def test_the_code_version_covers_the_training_code_and_the_shared_modules_it_computes_with():
    names = [name for name, _ in cache._source_files()]
    for name in ("worker/train.py", "worker/tracer.py", "worker/runner.py", "shared.spec", "shared.diagnosis",
                 "shared.diagnosis_texts",
                 "shared.theory", "shared.traces"):
        assert name in names
    assert not [name for name in names if "__pycache__" in name]


def test_the_code_version_changes_with_any_byte_of_the_source(tmp_path, monkeypatch):
    source = tmp_path / "train.py"
    source.write_text("lr = 0.05\n")
    monkeypatch.setattr(cache, "_source_files", lambda: [("worker/train.py", source)])
    before = source_hash()
    source.write_text("lr = 0.5\n")
    assert source_hash() != before
    source.write_text("lr = 0.05\n")
    assert source_hash() == before


# --- remember and serve -------------------------------------------------------------


def succeeded(store: Store, experiment_id: str, spec: ExperimentSpec = SPEC, tenant: str = "") -> None:
    """A record that a worker finished, with a summary and one trace key."""
    store.create(experiment_id, spec.model_dump(mode="json"), tenant=tenant)
    assert store.claim(experiment_id, "t", lease_seconds=30, max_attempts=3)[0] == "claimed"
    assert store.update(experiment_id, "t", layers=[{"name": "output", "kind": "linear"}], device="cpu")
    assert store.finish(experiment_id, "t", "succeeded", summary={"final_loss": 0.5, "cached": False})


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


def test_remember_names_the_run_for_its_inputs(store, redis_client):
    succeeded(store, "source")
    ResultCache(store, "v1").remember("source", SPEC, "cpu")
    assert redis_client.get(key()) == b"source"


def test_remember_skips_a_run_deleted_since(store, redis_client):
    succeeded(store, "source")
    store.delete("source")
    ResultCache(store, "v1").remember("source", SPEC, "cpu")
    assert redis_client.keys("gradtrace:cache:*") == []


def test_serve_copies_into_queued_records_only(store, redis_client):
    succeeded(store, "source")
    results = ResultCache(store, "v1")
    results.remember("source", SPEC, "cpu")
    for experiment_id in ("cancelled", "queued"):
        store.create(experiment_id, SPEC.model_dump(mode="json"))
    store.request_cancel("cancelled")
    assert results.serve([("cancelled", SPEC), ("queued", SPEC)], "") == {"queued"}
    assert store.get("cancelled")["status"] == "cancelled" and "summary" not in store.get("cancelled")
    copy = store.get("queued")
    assert copy["status"] == "succeeded" and copy["summary"] == {"final_loss": 0.5, "cached": True, "cached_from": "source"}


def test_serve_needs_the_same_code_version(store):
    succeeded(store, "source")
    ResultCache(store, "v1").remember("source", SPEC, "cpu")
    store.create("new", SPEC.model_dump(mode="json"))
    assert ResultCache(store, "v2").serve([("new", SPEC)], "") == set()
    assert store.get("new")["status"] == "queued"


def test_serve_needs_a_source_that_still_succeeded(store, redis_client):
    """An entry that names a record no longer `succeeded` (here rewritten behind the cache's back) serves nothing."""
    succeeded(store, "source")
    results = ResultCache(store, "v1")
    results.remember("source", SPEC, "cpu")
    redis_client.hset(exp_key("source"), "status", "running")
    store.create("new", SPEC.model_dump(mode="json"))
    assert results.serve([("new", SPEC)], "") == set()
