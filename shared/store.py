"""The Redis store: the one module that knows key names.

The experiment record (a hash) is the source of truth, not the Celery message.
A worker writes only while it holds the experiment's lease: claim, chunk
writes, heartbeats and the finish are Lua scripts fenced by the lease token, so
a trace never mixes two attempts and a worker that lost its claim writes nothing.

Retention (README "Retention"): a finished record and its packed trace get a Redis
TTL when they finish; a finished record that missed it (a worker that died right
after its finish) reads as expired all the same, and is removed when met.
Index entries of expired records are dropped as lists meet them, and by sampling.
"""

import json
import struct
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from redis import Redis

from shared.traces import ALL_METRICS, TIME_METRICS, TraceChunk, encode, from_bytes, time_steps

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
# `point` is the grid point of an experiment that belongs to a sweep (shared/sweeps.py).
JSON_FIELDS = ("spec", "summary", "error", "layers", "point")
# In a packed trace's header: the metric's bytes are `encode`d (shared/traces.py).
ENCODED = 1 << 31


class ExperimentNotFound(Exception):
    pass


class StatusConflict(Exception):
    pass


def exp_key(experiment_id: str) -> str:
    return f"gradtrace:exp:{experiment_id}"


def lease_key(experiment_id: str) -> str:
    return f"gradtrace:lease:{experiment_id}"


def trace_key(experiment_id: str, metric: str) -> str:
    return f"gradtrace:trace:{experiment_id}:{metric}"


def index_key(tenant: str) -> str:
    return f"gradtrace:index:{tenant}"


SEQ_KEY = "gradtrace:seq"
# Experiments that some worker has claimed: the sweeper looks here for dead leases.
RUNNING_KEY = "gradtrace:running"
# Experiments waiting for a worker, by when they were (re)queued in ms: the sweeper looks here for
# records whose Celery message was lost (worker/sweeper.py). Claims take them out; ids whose record
# is gone or no longer queued are dropped lazily by `stale_queued`.
QUEUED_KEY = "gradtrace:queued"
# The heartbeat keys of live worker processes (worker/registry.py); each key expires on its own.
WORKERS_KEY = "gradtrace:workers"
# Counters for the operators' metrics (api/metrics.py), kept by the scripts that change a status, so
# that a scrape reads one hash instead of every record, and every API process reads the same numbers:
# `submitted`, `attempts`, `requeued`, `cached`, `finished:<status>`, and the histogram of the train
# seconds of runs that a worker finished, `train_seconds:<status>:count|sum|le:<bound>` (one count
# per bucket, not cumulative).
STATS_KEY = "gradtrace:stats"
# Upper bounds of the train-seconds histogram's buckets (seconds); above the last is "+Inf".
TRAIN_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def worker_key(node: str, pid: int) -> str:
    return f"gradtrace:worker:{node}:{pid}"


def now_ms() -> int:
    return int(time.time() * 1000)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def packed_key(experiment_id: str) -> str:
    """A finished run's trace in one string: each metric's byte length (uint32, ALL_METRICS order, with the
    ENCODED bit where its bytes are encoded), then the bytes (`Store.pack`)."""
    return f"gradtrace:traces:{experiment_id}"


def trace_keys(experiment_id: str) -> list[str]:
    """Every key that can hold the experiment's trace: one per metric while it runs, the packed one once it ends."""
    return [trace_key(experiment_id, metric) for metric in ALL_METRICS] + [packed_key(experiment_id)]


# KEYS: record, lease, running set, queued set, stats, trace keys...  ARGV: token, lease ms, max attempts, now, id
_CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then redis.call('ZREM', KEYS[4], ARGV[5]) return {'missing'} end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then
  redis.call('ZREM', KEYS[4], ARGV[5])
  return {'finished'}
end
if redis.call('HGET', KEYS[1], 'cancel') == '1' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[4])
  redis.call('ZREM', KEYS[4], ARGV[5])
  redis.call('HINCRBY', KEYS[5], 'finished:cancelled', 1)
  return {'cancelled'}
end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'busy'} end
redis.call('ZREM', KEYS[4], ARGV[5])
-- `attempts` counts the attempts that ran: the claim that finds the cap reached fails the run
if tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[4], 'error',
    cjson.encode({message = 'the run lost its worker ' .. ARGV[3]
      .. ' times (killed, crashed or cut off from Redis); not retried again'}))
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], KEYS[1])
  redis.call('HINCRBY', KEYS[5], 'finished:failed', 1)
  return {'exhausted'}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HINCRBY', KEYS[5], 'attempts', 1)
for i = 6, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('HDEL', KEYS[1], 'summary', 'error', 'finished_at', 'layers')
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[4], 'step', 0, 'rows', 0)
redis.call('SADD', KEYS[3], KEYS[1])
return {'claimed', attempts, redis.call('HGET', KEYS[1], 'spec')}
"""

# KEYS: sequence, record, index, queued set, stats.  ARGV: id, now ms, then the record's field/value pairs
# (seq left out).
_CREATE = """
local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], 'seq', seq, unpack(ARGV, 3))
redis.call('ZADD', KEYS[3], seq, ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[5], 'submitted', 1)
return seq
"""

# KEYS: record, lease, metric keys...  ARGV: token, rows, step, rows written before this chunk ('': unchecked),
# blobs...
# Returns -1 when the lease is lost, 1 when a cancel was asked for, else 0.
# Idempotent: a chunk that is already there (a retry after a reply lost with the connection)
# is not appended twice, and one that would leave a gap (writes lost by a Redis restart)
# ends the attempt, so a trace never has doubled or missing rows.
_APPEND = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local rows = tonumber(redis.call('HGET', KEYS[1], 'rows') or '0')
local before = tonumber(ARGV[4]) or rows
if rows == before then
  for i = 3, #KEYS do redis.call('APPEND', KEYS[i], ARGV[i + 2]) end
  redis.call('HINCRBY', KEYS[1], 'rows', ARGV[2])
  redis.call('HSET', KEYS[1], 'step', ARGV[3])
elseif rows ~= before + tonumber(ARGV[2]) then
  return -1
end
if redis.call('HGET', KEYS[1], 'cancel') == '1' then return 1 end
return 0
"""

# KEYS: record, lease, running set, queued set, stats, trace keys...  ARGV: token ('' for an orphan), now ms,
# id, 1 to give the attempt back (not counted toward the cap).
# Puts a running experiment back to `queued` with a clean trace: an orphan whose lease lapsed
# (the sweeper), or one that its worker hands back on shutdown (fenced by the attempt's token).
_REQUEUE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
local holder = redis.call('GET', KEYS[2])
if ARGV[1] == '' then
  if holder then return 0 end
elseif holder ~= ARGV[1] then
  return 0
end
for i = 6, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('HINCRBY', KEYS[5], 'requeued', 1)
redis.call('HDEL', KEYS[1], 'layers', 'started_at')
redis.call('HSET', KEYS[1], 'status', 'queued', 'step', 0, 'rows', 0)
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], KEYS[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[3])
return 1
"""

# KEYS: record, lease.  ARGV: token, then field/value pairs to set.
_UPDATE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
return 0
"""

# KEYS: lease.  ARGV: token, lease ms.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# KEYS: record, lease, running set, stats, the metrics' trace keys, the packed key.  ARGV: token, status,
# the train-seconds bucket ('' for a run without a summary), the train seconds, the packed trace and
# the metric lengths it was packed from (`Store.pack`), then field/value pairs to set. Leaves the
# trace as one string of exactly its size (no APPEND slack), so that a finished run holds one key
# and one allocation, not one per metric each rounded up to the allocator's next size class
# (bench/redis_bytes.py), then lets go of the lease. Should the metrics no longer be the bytes
# packed, it packs them as they are, unencoded.
_FINISH = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('HINCRBY', KEYS[4], 'finished:' .. ARGV[2], 1)
if ARGV[3] ~= '' then
  local prefix = 'train_seconds:' .. ARGV[2] .. ':'
  redis.call('HINCRBY', KEYS[4], prefix .. 'le:' .. ARGV[3], 1)
  redis.call('HINCRBY', KEYS[4], prefix .. 'count', 1)
  redis.call('HINCRBYFLOAT', KEYS[4], prefix .. 'sum', ARGV[4])
end
local packed = ARGV[5]
for i = 5, #KEYS - 1 do
  if redis.call('STRLEN', KEYS[i]) ~= struct.unpack('<I4', ARGV[6], 4 * i - 19) then packed = nil end
end
if not packed then
  local parts, lengths = {''}, {}
  for i = 5, #KEYS - 1 do
    parts[#parts + 1] = redis.call('GET', KEYS[i]) or ''
    lengths[#lengths + 1] = #parts[#parts]
  end
  parts[1] = struct.pack('<' .. string.rep('I4', #lengths), unpack(lengths))
  packed = table.concat(parts)
end
redis.call('DEL', unpack(KEYS, 5, #KEYS - 1))
redis.call('SET', KEYS[#KEYS], packed)
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], KEYS[1])
return 0
"""

# KEYS: record, packed trace, the wanted metrics' trace keys.  ARGV: the metrics in the packed
# header, then the (1-based) places of the wanted ones in it. Returns the record's HGETALL, then
# each wanted metric's bytes: from the packed trace once the run has ended, else from its own key;
# last, one character a wanted metric, '1' where its bytes are encoded (the header's ENCODED bit).
_READ_TRACES = """
local found = {redis.call('HGETALL', KEYS[1])}
local n = tonumber(ARGV[1])
local header = redis.call('GETRANGE', KEYS[2], 0, 4 * n - 1)
if #header < 4 * n then
  for i = 3, #KEYS do found[i - 1] = redis.call('GET', KEYS[i]) or '' end
  found[#KEYS] = string.rep('0', #KEYS - 2)
  return found
end
local starts, lengths, encoded, offset = {}, {}, {}, 4 * n
for i = 1, n do
  lengths[i] = struct.unpack('<I4', header, 4 * i - 3)
  encoded[i] = lengths[i] >= ENCODED and '1' or '0'
  if lengths[i] >= ENCODED then lengths[i] = lengths[i] - ENCODED end
  starts[i] = offset
  offset = offset + lengths[i]
end
local codes = {}
for j = 2, #ARGV do
  local i = tonumber(ARGV[j])
  found[j] = lengths[i] > 0 and redis.call('GETRANGE', KEYS[2], starts[i], starts[i] + lengths[i] - 1) or ''
  codes[j - 1] = encoded[i]
end
found[#ARGV + 1] = table.concat(codes)
return found
""".replace("ENCODED", str(ENCODED))

# KEYS: record, queued set, stats.  ARGV: now, id.
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1], 'cancel', 1)
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('HINCRBY', KEYS[3], 'finished:cancelled', 1)
  return 'cancelled'
end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', 1)
  return 'cancelling'
end
return 'ended:' .. status
"""


# KEYS: an index.  ARGV: record key prefix, how many to sample, the finished_at before which a
# finished record has expired ("" when nothing expires). Drops the sampled entries whose record is
# gone; returns the ids of those still there but expired, for the caller to remove with their traces.
_PRUNE = """
local expired = {}
for _, member in ipairs(redis.call('ZRANDMEMBER', KEYS[1], ARGV[2])) do
  local found = redis.call('HMGET', ARGV[1] .. member, 'status', 'finished_at')
  if not found[1] then
    redis.call('ZREM', KEYS[1], member)
  elseif ARGV[3] ~= '' and found[2] and found[2] < ARGV[3]
      and (found[1] == 'succeeded' or found[1] == 'failed' or found[1] == 'cancelled') then
    expired[#expired + 1] = member
  end
end
return expired
"""
# A create in this many samples this many index entries for expired records (see `prune`).
PRUNE_EVERY = 8
PRUNE_SAMPLE = 16


class Claim(NamedTuple):
    """What a claim came to: `outcome` is 'claimed', 'busy', 'missing', 'finished', 'cancelled' or 'exhausted'."""

    outcome: str
    attempt: int
    spec: dict | None


class Store:
    """Experiments, their leases and their traces in one Redis."""

    def __init__(self, redis: Redis, *, retention_seconds: float = 0):
        self.redis = redis
        # Seconds a finished experiment is kept; 0 keeps it for good.
        self.retention_seconds = retention_seconds
        self._create = redis.register_script(_CREATE)
        self._claim = redis.register_script(_CLAIM)
        self._append = redis.register_script(_APPEND)
        self._update = redis.register_script(_UPDATE)
        self._renew = redis.register_script(_RENEW)
        self._finish = redis.register_script(_FINISH)
        self._read_traces = redis.register_script(_READ_TRACES)
        self._cancel = redis.register_script(_CANCEL)
        self._prune = redis.register_script(_PRUNE)
        self._requeue = redis.register_script(_REQUEUE)

    # --- the API's side -------------------------------------------------------

    def create(self, experiment_id: str, spec: dict, *, tenant: str = "", queue: str = "cpu") -> dict:
        """Write a new queued experiment and index it, newest last: one round trip, the submit's only one here."""
        record = new_record(experiment_id, spec, tenant=tenant, queue=queue, seq=0)
        del record["seq"]  # numbered by the script, in the same step as the write
        fields = [part for pair in record.items() for part in pair]
        record["seq"] = self._create(keys=[SEQ_KEY, exp_key(experiment_id), index_key(tenant), QUEUED_KEY, STATS_KEY],
                                     args=[experiment_id, now_ms(), *fields])
        if self.retention_seconds and record["seq"] % PRUNE_EVERY == 0:
            self.prune(tenant)
        # What `get` would read back, without reading it.
        return _decode({str(name).encode(): str(value).encode() for name, value in record.items()})

    def write_new(self, pipe: Redis, record: dict) -> None:
        """Queue the writes of a record made by `new_record` on the caller's pipeline: the hash, its index
        entry and its place among the queued."""
        pipe.hset(exp_key(record["id"]), mapping=record)
        pipe.zadd(index_key(record["tenant"]), {record["id"]: record["seq"]})
        pipe.zadd(QUEUED_KEY, {record["id"]: now_ms()})
        pipe.hincrby(STATS_KEY, "submitted", 1)

    def get(self, experiment_id: str, *, tenant: str | None = None) -> dict:
        """The record as a dict; ExperimentNotFound for an unknown id, another tenant's or an expired one."""
        return self._live(experiment_id, _owned(experiment_id, self.redis.hgetall(exp_key(experiment_id)), tenant))

    # --- retention ------------------------------------------------------------

    def expiry_cutoff(self) -> str:
        """The finished_at before which a finished record has expired; "" when nothing expires."""
        if not self.retention_seconds:
            return ""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.retention_seconds)
        return cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def expired(self, record: dict, cutoff: str | None = None) -> bool:
        """Whether a finished record is past its retention (its Redis TTL may not have fired yet)."""
        cutoff = self.expiry_cutoff() if cutoff is None else cutoff
        finished = record.get("finished_at")
        return bool(cutoff) and record["status"] in FINISHED and bool(finished) and finished < cutoff

    def _live(self, experiment_id: str, record: dict) -> dict:
        """The record, unless it has expired: then it is removed now and reads as unknown."""
        if self.expired(record):
            self.purge([experiment_id], tenant=record.get("tenant", ""))
            raise ExperimentNotFound(f"no experiment {experiment_id}")
        return record

    def retire(self, experiment_ids: list[str]) -> None:
        """Start the retention of finished experiments: their record and packed trace expire on their own."""
        if not self.retention_seconds or not experiment_ids:
            return
        ttl = max(1, int(self.retention_seconds * 1000))
        with self.redis.pipeline(transaction=False) as pipe:
            for experiment_id in experiment_ids:
                pipe.pexpire(exp_key(experiment_id), ttl)
                pipe.pexpire(packed_key(experiment_id), ttl)
            pipe.execute()

    def purge(self, experiment_ids: list[str], *, tenant: str) -> None:
        """Remove expired experiments whose TTL has not fired, with their traces and index entries."""
        with self.redis.pipeline(transaction=False) as pipe:
            self.delete_many(pipe, experiment_ids, tenant=tenant)
            pipe.execute()

    def prune(self, tenant: str, sample: int = PRUNE_SAMPLE) -> None:
        """Drop index entries of expired experiments met in a random sample of the tenant's index.

        Lists drop the ones they walk past; sampling reaches those of a tenant that never lists.
        """
        expired = self._prune(keys=[index_key(tenant)], args=[exp_key(""), sample, self.expiry_cutoff()])
        if expired:
            self.purge([member.decode() for member in expired], tenant=tenant)

    def list_experiments(
        self,
        *,
        tenant: str = "",
        status: str | None = None,
        limit: int = 50,
        cursor: int | None = None,
    ) -> tuple[list[dict], int | None]:
        """Records newest first, optionally of one status; the cursor continues after the last."""
        found: list[dict] = []
        upper = "+inf" if cursor is None else f"({cursor}"
        page = max(limit * 2, 100)
        while True:
            batch = self.redis.zrevrangebyscore(
                index_key(tenant), upper, "-inf", start=0, num=page, withscores=True
            )
            if not batch:
                return found, None
            with self.redis.pipeline(transaction=False) as pipe:
                for member, _ in batch:
                    pipe.hgetall(exp_key(member.decode()))
                raws = pipe.execute()
            gone, expired, cutoff = [], [], self.expiry_cutoff()
            for (member, score), raw in zip(batch, raws):
                if not raw:
                    gone.append(member)
                    continue
                record = _decode(raw)
                if self.expired(record, cutoff):
                    expired.append(record["id"])
                    continue
                if status is None or record["status"] == status:
                    found.append(record)
                    if len(found) == limit:
                        self._forget(tenant, gone, expired)
                        return found, int(score)
            self._forget(tenant, gone, expired)
            if len(batch) < page:
                return found, None
            upper = f"({int(batch[-1][1])}"

    def _forget(self, tenant: str, gone: list[bytes], expired: list[str]) -> None:
        """Index cleanup after a list: entries whose record has expired (or was deleted) leave the index."""
        if gone:
            self.redis.zrem(index_key(tenant), *gone)
        if expired:
            self.purge(expired, tenant=tenant)

    def get_many(self, experiment_ids: list[str]) -> list[dict | None]:
        """The records of many experiments in one round trip, None for the ones that are gone."""
        with self.redis.pipeline(transaction=False) as pipe:
            for experiment_id in experiment_ids:
                pipe.hgetall(exp_key(experiment_id))
            raws = pipe.execute()
        return [_decode(raw) if raw else None for raw in raws]

    def cancel_many(self, experiment_ids: list[str]) -> list[str]:
        """Cancel or flag each experiment in one round trip; per id 'cancelled', 'cancelling', 'missing' or 'ended:…'."""
        now = now_iso()
        with self.redis.pipeline(transaction=False) as pipe:
            for experiment_id in experiment_ids:
                self._cancel(keys=[exp_key(experiment_id), QUEUED_KEY, STATS_KEY], args=[now, experiment_id],
                             client=pipe)
            outcomes = [outcome.decode() for outcome in pipe.execute()]
        self.retire([experiment_id for experiment_id, outcome in zip(experiment_ids, outcomes) if outcome == "cancelled"])
        return outcomes

    def delete_many(self, pipe: Redis, experiment_ids: list[str], *, tenant: str) -> None:
        """Queue the deletes of many experiments of one tenant on the caller's pipeline, as `delete` does one."""
        for experiment_id in experiment_ids:
            pipe.delete(exp_key(experiment_id), lease_key(experiment_id), *trace_keys(experiment_id))
        if experiment_ids:
            pipe.zrem(index_key(tenant), *experiment_ids)
            pipe.zrem(QUEUED_KEY, *experiment_ids)
            pipe.srem(RUNNING_KEY, *(exp_key(experiment_id) for experiment_id in experiment_ids))

    def request_cancel(self, experiment_id: str, *, tenant: str | None = None) -> str:
        """Cancel a queued run at once, or flag a running one; StatusConflict once it has ended."""
        self.get(experiment_id, tenant=tenant)
        outcome = self._cancel(keys=[exp_key(experiment_id), QUEUED_KEY, STATS_KEY],
                               args=[now_iso(), experiment_id]).decode()
        if outcome == "missing":
            raise ExperimentNotFound(f"no experiment {experiment_id}")
        if outcome not in ("cancelled", "cancelling"):
            raise StatusConflict(f"experiment {experiment_id} is {outcome.removeprefix('ended:')}: nothing to cancel")
        if outcome == "cancelled":
            self.retire([experiment_id])
        return outcome

    def delete(self, experiment_id: str, *, tenant: str | None = None) -> None:
        """Remove the record, its traces and its lease; a running worker stops at its next write."""
        record = self.get(experiment_id, tenant=tenant)
        with self.redis.pipeline() as pipe:
            pipe.delete(exp_key(experiment_id), lease_key(experiment_id), *trace_keys(experiment_id))
            pipe.zrem(index_key(record["tenant"]), experiment_id)
            pipe.zrem(QUEUED_KEY, experiment_id)
            pipe.srem(RUNNING_KEY, exp_key(experiment_id))
            pipe.execute()

    def read_traces(
        self, experiment_id: str, metrics: Iterable[str] = ALL_METRICS, *, tenant: str | None = None
    ) -> tuple[list[dict], dict[str, Any]]:
        """The layers and the traced arrays so far: the record and the bytes in one script (one command,
        one round trip, rows that agree), from the per-metric keys of a running run or the packed key
        of one that has ended."""
        metrics = list(dict.fromkeys(["step", *metrics]))
        keys = [exp_key(experiment_id), packed_key(experiment_id), *(trace_key(experiment_id, m) for m in metrics)]
        places = [ALL_METRICS.index(metric) + 1 for metric in metrics]
        flat, *blobs, codes = self._read_traces(keys=keys, args=[len(ALL_METRICS), *places])
        record = self._live(experiment_id, _owned(experiment_id, dict(zip(flat[::2], flat[1::2])), tenant))
        # Time metrics exist only for archs with a time axis (rnn); the others leave them out.
        steps_in_time = time_steps(record["spec"])
        layers = record.get("layers") or []
        arrays = {}
        for metric, blob, code in zip(metrics, blobs, codes.decode()):
            if steps_in_time or metric not in TIME_METRICS:
                array = from_bytes(metric, blob, len(layers), steps_in_time, encoded=code == "1")
                arrays[metric] = array[: record.get("rows", 0)]
        return layers, arrays

    # --- the worker's side ----------------------------------------------------

    def claim(self, experiment_id: str, token: str, *, lease_seconds: float, max_attempts: int) -> Claim:
        """Take the lease and start a fresh attempt: ('claimed', attempt, spec) or why not (attempt 0, no spec).

        The spec comes back with the claim, so that a worker starts with one round trip.
        """
        outcome = self._claim(
            keys=[exp_key(experiment_id), lease_key(experiment_id), RUNNING_KEY, QUEUED_KEY, STATS_KEY,
                  *trace_keys(experiment_id)],
            args=[token, int(lease_seconds * 1000), max_attempts, now_iso(), experiment_id],
        )
        if len(outcome) == 1:
            return Claim(outcome[0].decode(), 0, None)
        return Claim(outcome[0].decode(), int(outcome[1]), json.loads(outcome[2]))

    def update(self, experiment_id: str, token: str, **fields: Any) -> bool:
        """Set record fields while holding the lease; False if the lease is gone."""
        args = [token]
        for name, value in fields.items():
            args += [name, _encode(name, value)]
        return self._update(keys=[exp_key(experiment_id), lease_key(experiment_id)], args=args) == 0

    def renew(self, experiment_id: str, token: str, *, lease_seconds: float) -> bool:
        """Extend the lease; False if another attempt or a delete took it away."""
        return bool(self._renew(keys=[lease_key(experiment_id)], args=[token, int(lease_seconds * 1000)]))

    def append_chunk(
        self, experiment_id: str, token: str, chunk: TraceChunk, step: int, rows_before: int | None = None
    ) -> int:
        """Append the chunk's rows and set progress: -1 lease lost, 1 cancel asked, 0 go on.

        With `rows_before` (the rows this attempt wrote so far) it is safe to retry: a chunk already
        there is not appended twice, and rows lost before it (a Redis restart) read as a lost lease.
        """
        blobs = chunk.to_bytes()
        names = list(blobs)
        return int(
            self._append(
                keys=[exp_key(experiment_id), lease_key(experiment_id)]
                + [trace_key(experiment_id, name) for name in names],
                args=[token, chunk.rows, step, "" if rows_before is None else rows_before,
                      *(blobs[name] for name in names)],
            )
        )

    def orphans(self) -> list[dict]:
        """Claimed experiments, still `running`, whose lease has lapsed: their worker died."""
        keys = [key.decode() for key in self.redis.smembers(RUNNING_KEY)]
        ids = [key.removeprefix(exp_key("")) for key in keys]
        with self.redis.pipeline(transaction=False) as pipe:
            for experiment_id in ids:
                pipe.exists(lease_key(experiment_id))
                pipe.hmget(exp_key(experiment_id), "status", "queue")
            answers = pipe.execute()
        found = []
        for experiment_id, leased, (status, queue) in zip(ids, answers[::2], answers[1::2]):
            if status is None or status.decode() != "running":
                self.redis.srem(RUNNING_KEY, exp_key(experiment_id))
            elif not leased:
                found.append({"id": experiment_id, "queue": (queue or b"cpu").decode()})
        return found

    def requeue(self, experiment_id: str, token: str = "", *, handed_back: bool = False) -> bool:
        """Put a running experiment back in the queue with a clean trace: an orphan (no token; only while its
        lease stays lapsed) or an attempt handed back by its worker (its token; not counted toward the cap).
        False when it was not this one's to requeue (finished, taken over, deleted)."""
        keys = [exp_key(experiment_id), lease_key(experiment_id), RUNNING_KEY, QUEUED_KEY, STATS_KEY,
                *trace_keys(experiment_id)]
        return self._requeue(keys=keys, args=[token, now_ms(), experiment_id, int(handed_back)]) == 1

    def stale_queued(self, older_than_seconds: float) -> list[dict]:
        """Experiments still `queued` that were (re)queued longer ago than that: those whose message may be lost."""
        cutoff = now_ms() - int(older_than_seconds * 1000)
        ids = [member.decode() for member in self.redis.zrangebyscore(QUEUED_KEY, "-inf", cutoff)]
        if not ids:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for experiment_id in ids:
                pipe.hmget(exp_key(experiment_id), "status", "queue")
            answers = pipe.execute()
        found, done = [], []
        for experiment_id, (status, queue) in zip(ids, answers):
            if status is None or status.decode() != "queued":
                done.append(experiment_id)
            else:
                found.append({"id": experiment_id, "queue": (queue or b"cpu").decode()})
        if done:
            self.redis.zrem(QUEUED_KEY, *done)
        return found

    def mark_queued(self, experiment_ids: list[str]) -> None:
        """Restart the wait of experiments whose message was just sent again (only those still waiting)."""
        if experiment_ids:
            now = now_ms()
            self.redis.zadd(QUEUED_KEY, {experiment_id: now for experiment_id in experiment_ids}, xx=True)

    def finish(self, experiment_id: str, token: str, status: str, **fields: Any) -> bool:
        """End the attempt with its outcome, compact the trace and release the lease."""
        seconds = (fields.get("summary") or {}).get("train_seconds")
        bucket = "" if seconds is None else train_seconds_bucket(seconds)
        args = [token, status, bucket, seconds or 0, *self.pack(experiment_id)]
        args += ["status", status, "finished_at", now_iso()]
        for name, value in fields.items():
            args += [name, _encode(name, value)]
        keys = [exp_key(experiment_id), lease_key(experiment_id), RUNNING_KEY, STATS_KEY, *trace_keys(experiment_id)]
        finished = self._finish(keys=keys, args=args) == 0
        if finished:
            self.retire([experiment_id])  # a worker that dies just here leaves it to the expiry check of reads
        return finished

    def pack(self, experiment_id: str) -> tuple[bytes, bytes]:
        """The run's trace as one string, and the lengths of the metrics' bytes it holds (for the finish
        to check that they are still those): a header of one uint32 per metric, its length in the
        string, with the ENCODED bit where it is `encode`d; then the metrics' bytes in turn."""
        raws = [blob or b"" for blob in self.redis.mget(trace_key(experiment_id, m) for m in ALL_METRICS)]
        header, parts = [], []
        for metric, raw in zip(ALL_METRICS, raws):
            encoded = encode(metric, raw) if raw else None
            parts.append(raw if encoded is None else encoded)
            header.append(len(raw) if encoded is None else len(encoded) | ENCODED)
        lengths = struct.pack(f"<{len(raws)}I", *map(len, raws))
        return struct.pack(f"<{len(header)}I", *header) + b"".join(parts), lengths


def train_seconds_bucket(seconds: float) -> str:
    """The histogram bucket of a run's train seconds: the smallest bound that holds it, or "+Inf"."""
    return next((f"{bound:g}" for bound in TRAIN_SECONDS_BUCKETS if seconds <= bound), "+Inf")


def new_record(experiment_id: str, spec: dict, *, tenant: str, queue: str, seq: int, **extra: Any) -> dict:
    """The hash of a new queued experiment; `extra` fields (a sweep's id and grid point) are stored beside."""
    record = {
        "id": experiment_id,
        "status": "queued",
        "spec": json.dumps(spec),
        "created_at": now_iso(),
        "seq": seq,
        "tenant": tenant,
        "queue": queue,
        "step": 0,
        "steps": spec["steps"],
        "rows": 0,
        "attempts": 0,
    }
    record.update({name: _encode(name, value) for name, value in extra.items()})
    return record


def _encode(name: str, value: Any) -> str | int | float:
    if name in JSON_FIELDS or isinstance(value, (dict, list)) or value is None:
        return json.dumps(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _owned(experiment_id: str, raw: dict[bytes, bytes], tenant: str | None) -> dict:
    """The decoded record; ExperimentNotFound for an unknown id or another tenant's (None: any tenant)."""
    if not raw or (tenant is not None and raw.get(b"tenant", b"").decode() != tenant):
        raise ExperimentNotFound(f"no experiment {experiment_id}")
    return _decode(raw)


def _decode(raw: dict[bytes, bytes]) -> dict:
    record: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode()
        text = value.decode()
        if name in JSON_FIELDS:
            record[name] = json.loads(text)
        elif name in ("seq", "step", "steps", "rows", "attempts"):
            record[name] = int(text)
        else:
            record[name] = text
    return record
