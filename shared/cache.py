"""The result cache: a run whose inputs match one that already succeeded is answered from it at once.

Content-addressed: an entry's key is a hash of everything that decides what a run
records (same spec + same seed + same device type = same traces, with the same code):

- the spec with every default filled in and aliases resolved, as the API stores it,
  less `name` (a label) and `cache` (how to ask, not what to run) and `device`,
  which the device class replaces;
- the device class, `cpu` or `cuda`: where the run ran. A lookup for `device: auto`
  asks for `cpu`, where the service sends auto specs (the `cpu` queue); an auto run
  that a GPU host on that queue ran is cached as `cuda` and serves `cuda` specs;
- the code version, a hash of the source of the modules that compute results,
  read once per process, at import, from the installed files, so changed training
  code never serves a result of the old;
- the tenant: a tenant sees only its own experiments, and a shared cache would let
  one learn from an instant answer that another ran a given spec.

An entry holds only the id of the experiment that produced the result: the record
and its traces are the result. Serving one copies them (Redis COPY) into the new
experiment in one Lua script that first checks the source still exists and
succeeded, so a deleted source is never served and the copy outlives its source.
An entry whose source is gone is overwritten by the fresh run that the miss starts.

Retention: an entry lives as long as the run it names (the store's retention), a
source past its retention is never served even before its TTL fires, and a copy
starts a retention of its own (COPY would carry the source's TTL over to the trace).
"""

import hashlib
import importlib.util
import json
import logging
from pathlib import Path

import redis

from shared.spec import ExperimentSpec
from shared.store import QUEUED_KEY, STATS_KEY, Store, exp_key, now_iso, trace_keys

log = logging.getLogger("gradtrace.cache")

CACHE_PREFIX = "gradtrace:cache:"
# Spec fields that do not change what a run records; `device` is replaced by the device class.
NOT_INPUTS = ("name", "cache", "device")
# The code that decides a run's traces and summary: the worker package whole (its sources,
# compiled or not) and the shared modules that the worker computes with.
RESULT_PACKAGES = ("worker",)
RESULT_MODULES = ("shared.spec", "shared.traces", "shared.diagnosis", "shared.diagnosis_texts", "shared.theory")
SOURCE_SUFFIXES = (".py", ".c", ".h", ".cpp", ".cu")

# KEYS: the new record, the source record, the queued set, the stats, then the source's trace keys and
# the new one's, pairwise. ARGV: the new record's id, then its field/value pairs. Only a queued record
# (not deleted or cancelled since it was written) becomes a copy, and only of a source that still
# exists and succeeded.
_SERVE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
if redis.call('HGET', KEYS[2], 'status') ~= 'succeeded' then return 0 end
for i = 5, #KEYS, 2 do redis.call('COPY', KEYS[i], KEYS[i + 1], 'REPLACE') end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'finished:succeeded', 1)
redis.call('HINCRBY', KEYS[4], 'cached', 1)
return 1
"""


def _source_files() -> list[tuple[str, Path]]:
    """The result-deciding source files as (name, path), found without importing the worker (torch)."""
    files = []
    for package in RESULT_PACKAGES:
        root = Path(importlib.util.find_spec(package).submodule_search_locations[0])
        files += [
            (f"{package}/{path.relative_to(root).as_posix()}", path)
            for path in root.rglob("*")
            if path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts
        ]
    files += [(module, Path(importlib.util.find_spec(module).origin)) for module in RESULT_MODULES]
    return sorted(files)


def source_hash() -> str:
    """A hash of the result-deciding source as installed now: the same on the API and on workers of one release."""
    digest = hashlib.sha256()
    for name, path in _source_files():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


# Read at import, when a process loads the code it will run: a worker whose files are replaced
# under it keeps the version of the code it runs, and its results never pass for the new code's.
CODE_VERSION = source_hash()


def device_class(device: str) -> str:
    """`cpu` or `cuda` of a device a run ran on ("cuda:0") or of a spec's choice (auto runs on the cpu queue)."""
    return "cuda" if device.startswith("cuda") else "cpu"


def result_key(spec: ExperimentSpec, device: str, tenant: str, version: str | None = None) -> str:
    """The cache key of a spec's result on a device class, for a tenant, under a code version."""
    inputs = {field: value for field, value in spec.model_dump(mode="json").items() if field not in NOT_INPUTS}
    material = {"spec": inputs, "device": device_class(device), "code": version or CODE_VERSION, "tenant": tenant}
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return CACHE_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


class ResultCache:
    """Entries that name succeeded experiments by the hash of their inputs, on the experiments' Store."""

    def __init__(self, store: Store, version: str | None = None):
        self.store = store
        self.redis = store.redis
        self.version = version or CODE_VERSION
        self._serve = self.redis.register_script(_SERVE)

    def remember(self, experiment_id: str, spec: ExperimentSpec, device: str) -> None:
        """Name a run that just succeeded on `device` as the result of its inputs (the worker's side).

        The cache only saves time: a Redis error here is logged and leaves the run's record as it is.
        """
        try:
            tenant = self.redis.hget(exp_key(experiment_id), "tenant")
            if tenant is not None:  # deleted already: nothing to name
                ttl = int(self.store.retention_seconds * 1000) or None
                self.redis.set(result_key(spec, device, tenant.decode(), self.version), experiment_id, px=ttl)
        except redis.RedisError:
            log.warning("experiment %s: not cached", experiment_id, exc_info=True)

    def serve(self, pending: list[tuple[str, ExperimentSpec]], tenant: str) -> set[str]:
        """Turn the queued experiments (id, spec) whose result is cached into succeeded copies of it;
        the ids answered, in three round trips whatever their number. The others are left to run."""
        asking = [(experiment_id, spec) for experiment_id, spec in pending if spec.cache]
        if not asking:
            return set()
        keys = [result_key(spec, spec.device, tenant, self.version) for _, spec in asking]
        sources = [source.decode() if source else None for source in self.redis.mget(keys)]
        hits = [(experiment_id, source) for (experiment_id, _), source in zip(asking, sources) if source]
        records = self.store.get_many([source for _, source in hits])
        cutoff = self.store.expiry_cutoff()
        copies = [
            (experiment_id, record) for (experiment_id, _), record in zip(hits, records)
            if record is not None and record["status"] == "succeeded" and record["tenant"] == tenant
            and not self.store.expired(record, cutoff)
        ]
        if not copies:
            return set()
        with self.redis.pipeline(transaction=False) as pipe:
            for experiment_id, source in copies:
                self._copy(experiment_id, source, pipe)
            answered = pipe.execute()
        served = [experiment_id for (experiment_id, _), done in zip(copies, answered) if done]
        self.store.retire(served)
        return set(served)

    def _copy(self, experiment_id: str, source: dict, pipe: redis.client.Pipeline) -> None:
        """Queue the script that makes the queued record a copy of the source's result and traces."""
        now = now_iso()
        fields = {
            "status": "succeeded",
            "started_at": now,
            "finished_at": now,
            "step": source["step"],
            "rows": source["rows"],
            "layers": json.dumps(source["layers"]),
            "device": source["device"],
            "summary": json.dumps({**source["summary"], "cached": True, "cached_from": source["id"]}),
        }
        keys = [exp_key(experiment_id), exp_key(source["id"]), QUEUED_KEY, STATS_KEY]
        for pair in zip(trace_keys(source["id"]), trace_keys(experiment_id)):
            keys += pair
        self._serve(keys=keys, args=[experiment_id, *(item for pair in fields.items() for item in pair)], client=pipe)
