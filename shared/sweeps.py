"""Sweeps: one experiment per point of a grid over a base spec, created together and read as one.

A sweep is a hash `gradtrace:sweep:{id}` (its base, grid and experiment ids in grid
order) and an entry in its tenant's index; its experiments are ordinary experiment
records (shared/store.py) that also carry `sweep` and `point`. Nothing about a
sweep's progress is stored twice: counts and aggregates are read from the records.

Retention: a sweep lives as long as one of its experiments does. Once every one
has expired (or been deleted), the sweep reads as unknown and is removed when met:
by a read, a list, or the sample of old sweeps that each new sweep looks at.
"""

import itertools
import json
import math
import statistics
from datetime import datetime
from typing import Any

from redis import Redis

from shared.store import FINISHED, SEQ_KEY, STATUSES, Store, exp_key, new_record, now_iso

# The most points one sweep may have: every point is a queued experiment, and the sweep's
# answer lists them all. Checked before the grid is expanded.
MAX_POINTS = 1000
# A new sweep looks at this many of its tenant's sweeps, at random, for expired ones.
PRUNE_SAMPLE = 4
# The axis that aggregates average over: points that differ only in it form a group.
SEED = "seed"
JSON_FIELDS = ("base", "grid", "experiments", "name")


class SweepNotFound(Exception):
    pass


class SweepInvalid(ValueError):
    """A request that is not a sweep; `details` are API.md's `{"loc", "msg"}` items."""

    def __init__(self, details: list[dict[str, Any]]):
        super().__init__(details[0]["msg"])
        self.details = details


def sweep_key(sweep_id: str) -> str:
    return f"gradtrace:sweep:{sweep_id}"


def sweep_index_key(tenant: str) -> str:
    return f"gradtrace:sweeps:{tenant}"


# --- the grid ------------------------------------------------------------------


def check_grid(grid: Any, spec_fields: set[str]) -> dict[str, list]:
    """The grid if it is an object of non-empty lists of distinct values over spec fields, of at most MAX_POINTS points."""
    if not isinstance(grid, dict) or not grid:
        raise SweepInvalid([{"loc": ["grid"], "msg": "must be an object that maps spec fields to lists of values"}])
    problems = []
    for field, values in grid.items():
        if field not in spec_fields:
            problems.append({"loc": ["grid", field], "msg": f"{field!r} is not a spec field"})
        elif not isinstance(values, list) or not values:
            problems.append({"loc": ["grid", field], "msg": "must be a non-empty list of values"})
        elif len({json.dumps(value, sort_keys=True) for value in values}) < len(values):
            problems.append({"loc": ["grid", field], "msg": "lists a value twice: every point would run twice"})
    if problems:
        raise SweepInvalid(problems)
    size = math.prod(len(values) for values in grid.values())
    if size > MAX_POINTS:
        shape = " x ".join(str(len(values)) for values in grid.values())
        count = f"{shape} = {size:,} points" if len(grid) > 1 else f"{size:,} points"
        raise SweepInvalid([{"loc": ["grid"], "msg": f"{count} is over the limit of {MAX_POINTS:,} per sweep",
                             "type": "grid_size"}])
    return grid


def expand(grid: dict[str, list]) -> list[dict[str, Any]]:
    """The cross product of the grid's lists as points, the last field varying fastest."""
    fields = list(grid)
    return [dict(zip(fields, values)) for values in itertools.product(*grid.values())]


# --- the store -------------------------------------------------------------------


class Sweeps:
    """Sweeps and their experiments, on the experiments' Store."""

    def __init__(self, store: Store):
        self.store = store
        self.redis: Redis = store.redis

    def create(
        self,
        sweep_id: str,
        *,
        base: dict,
        grid: dict,
        name: str | None,
        experiments: list[tuple[str, dict, dict, str]],
        tenant: str,
    ) -> dict:
        """Write the sweep and all its queued experiments (id, point, full spec, queue) in one transaction."""
        last = self.redis.incrby(SEQ_KEY, len(experiments) + 1)
        first = last - len(experiments)
        sweep = {
            "id": sweep_id,
            "tenant": tenant,
            "name": json.dumps(name),
            "base": json.dumps(base),
            "grid": json.dumps(grid),
            "experiments": json.dumps([experiment_id for experiment_id, *_ in experiments]),
            "created_at": now_iso(),
            "seq": last,
        }
        with self.redis.pipeline(transaction=True) as pipe:
            for seq, (experiment_id, point, spec, queue) in enumerate(experiments, start=first):
                record = new_record(experiment_id, spec, tenant=tenant, queue=queue, seq=seq, sweep=sweep_id, point=point)
                self.store.write_new(pipe, record)
            pipe.hset(sweep_key(sweep_id), mapping=sweep)
            pipe.zadd(sweep_index_key(tenant), {sweep_id: last})
            pipe.execute()
        if self.store.retention_seconds:
            self.prune(tenant)
        return self.get(sweep_id, tenant=tenant)

    def get(self, sweep_id: str, *, tenant: str | None = None) -> dict:
        """The sweep's own hash, decoded; SweepNotFound for an unknown id, another tenant's or an expired one."""
        raw = self.redis.hgetall(sweep_key(sweep_id))
        if not raw or (tenant is not None and raw.get(b"tenant", b"").decode() != tenant):
            raise SweepNotFound(f"no sweep {sweep_id}")
        sweep = _decode(raw)
        if self.expired([sweep])[0]:
            self._remove(sweep)
            raise SweepNotFound(f"no sweep {sweep_id}")
        return sweep

    def list_sweeps(self, *, tenant: str = "", limit: int = 20, cursor: int | None = None) -> list[dict]:
        """Up to `limit` live sweeps newest first, after the cursor's sequence number; expired ones are removed."""
        upper, found = "+inf" if cursor is None else f"({cursor}", []
        while True:
            batch = self.redis.zrevrangebyscore(
                sweep_index_key(tenant), upper, "-inf", start=0, num=limit, withscores=True
            )
            sweeps = self._indexed(tenant, [sweep_id.decode() for sweep_id, _ in batch])
            for sweep, expired in zip(sweeps, self.expired(sweeps)):
                if expired:
                    self._remove(sweep)
                elif len(found) < limit:
                    found.append(sweep)
            if len(found) == limit or len(batch) < limit:
                return found
            upper = f"({int(batch[-1][1])}"

    # --- retention ------------------------------------------------------------

    def expired(self, sweeps: list[dict]) -> list[bool]:
        """Per sweep, whether every one of its experiments has expired or gone (in one round trip).

        Only a sweep created before the retention's cutoff can have: its experiments finished
        after it was created. The others cost nothing here.
        """
        cutoff = self.store.expiry_cutoff()
        old = [sweep for sweep in sweeps if cutoff and sweep["created_at"] < cutoff]
        if not old:
            return [False] * len(sweeps)
        with self.redis.pipeline(transaction=False) as pipe:
            for sweep in old:
                for experiment_id in sweep["experiments"]:
                    pipe.hmget(exp_key(experiment_id), "status", "finished_at")
            flat = pipe.execute()
        gone, start = set(), 0
        for sweep in old:
            found = flat[start:start + len(sweep["experiments"])]
            start += len(sweep["experiments"])
            if all(status is None or (status.decode() in FINISHED and (finished or b"").decode() < cutoff)
                   for status, finished in found):
                gone.add(sweep["id"])
        return [sweep["id"] in gone for sweep in sweeps]

    def _expire_at(self, sweep_id: str, last_finished: str) -> None:
        until = datetime.fromisoformat(last_finished.replace("Z", "+00:00")).timestamp() + self.store.retention_seconds
        self.redis.pexpireat(sweep_key(sweep_id), int(until * 1000))

    def _remove(self, sweep: dict) -> None:
        """Remove an expired sweep, with whatever is left of its experiments."""
        with self.redis.pipeline(transaction=True) as pipe:
            self.store.delete_many(pipe, sweep["experiments"], tenant=sweep["tenant"])
            pipe.delete(sweep_key(sweep["id"]))
            pipe.zrem(sweep_index_key(sweep["tenant"]), sweep["id"])
            pipe.execute()

    def prune(self, tenant: str, sample: int = PRUNE_SAMPLE) -> None:
        """Remove the expired sweeps among a random sample of the tenant's: those of a tenant that never lists."""
        ids = [sweep_id.decode() for sweep_id in self.redis.zrandmember(sweep_index_key(tenant), sample) or []]
        sweeps = self._indexed(tenant, ids)
        for sweep, expired in zip(sweeps, self.expired(sweeps)):
            if expired:
                self._remove(sweep)

    def _indexed(self, tenant: str, ids: list[str]) -> list[dict]:
        """The sweeps of these ids of the tenant's index, in their order (one round trip); ids whose sweep
        is gone (its TTL fired) leave the index."""
        with self.redis.pipeline(transaction=False) as pipe:
            for sweep_id in ids:
                pipe.hgetall(sweep_key(sweep_id))
            raws = pipe.execute()
        gone = [sweep_id for sweep_id, raw in zip(ids, raws) if not raw]
        if gone:
            self.redis.zrem(sweep_index_key(tenant), *gone)
        return [_decode(raw) for raw in raws if raw]

    def statuses(self, sweeps: list[dict]) -> list[list[str | None]]:
        """The status of every experiment of every sweep, in one round trip (None: deleted since)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for sweep in sweeps:
                for experiment_id in sweep["experiments"]:
                    pipe.hget(exp_key(experiment_id), "status")
            flat = [status.decode() if status else None for status in pipe.execute()]
        found, start = [], 0
        for sweep in sweeps:
            found.append(flat[start:start + len(sweep["experiments"])])
            start += len(sweep["experiments"])
        return found

    def records(self, sweep: dict) -> list[dict]:
        """The sweep's experiment records in grid order; experiments deleted on their own or expired are left out.

        A sweep read once it is done is told to Redis to expire with its last experiment,
        so that it is freed on time even if nobody reads or lists it again.
        """
        cutoff = self.store.expiry_cutoff()
        records = [
            record for record in self.store.get_many(sweep["experiments"])
            if record is not None and not self.store.expired(record, cutoff)
        ]
        ends = [record.get("finished_at") for record in records if record["status"] in FINISHED]
        if cutoff and records and len(ends) == len(records) and all(ends):
            self._expire_at(sweep["id"], max(ends))
        return records

    def cancel(self, sweep_id: str, *, tenant: str | None = None) -> int:
        """Cancel the queued experiments and flag the running ones; how many; 0 when nothing was left to cancel."""
        sweep = self.get(sweep_id, tenant=tenant)
        left = [
            record["id"] for record in self.records(sweep)
            if record["status"] == "queued" or (record["status"] == "running" and record.get("cancel") != "1")
        ]
        outcomes = self.store.cancel_many(left) if left else []
        return sum(outcome in ("cancelled", "cancelling") for outcome in outcomes)

    def delete(self, sweep_id: str, *, tenant: str | None = None) -> None:
        """Remove the sweep, its experiments and their traces; running workers stop at their next write."""
        sweep = self.get(sweep_id, tenant=tenant)
        with self.redis.pipeline(transaction=True) as pipe:
            self.store.delete_many(pipe, sweep["experiments"], tenant=sweep["tenant"])
            pipe.delete(sweep_key(sweep_id))
            pipe.zrem(sweep_index_key(sweep["tenant"]), sweep_id)
            pipe.execute()


def _decode(raw: dict[bytes, bytes]) -> dict:
    sweep: dict[str, Any] = {}
    for key, value in raw.items():
        name, text = key.decode(), value.decode()
        sweep[name] = json.loads(text) if name in JSON_FIELDS else int(text) if name == "seq" else text
    return sweep


# --- reading a sweep ----------------------------------------------------------------


def counts(statuses: list[str | None]) -> dict[str, int]:
    """How many experiments are in each status (all five always present)."""
    return {status: sum(found == status for found in statuses) for status in STATUSES}


def state(found: dict[str, int]) -> str:
    """`finished` once nothing is queued or running, `queued` while nothing has started, else `running`."""
    if not found["queued"] and not found["running"]:
        return "finished"
    started = sum(found[status] for status in ("running", *FINISHED))
    return "running" if started else "queued"


def row(record: dict) -> dict[str, Any]:
    """One experiment of a sweep: its point and the figures a comparison needs, beside the full summary."""
    summary = record.get("summary") or {}
    diagnosis = summary.get("diagnosis") or {}
    return {
        "id": record["id"],
        "point": record.get("point"),
        "seed": record["spec"]["seed"],
        "status": record["status"],
        "progress": {"step": record.get("step", 0), "steps": record.get("steps", record["spec"]["steps"])},
        "verdict": diagnosis.get("verdict"),
        "final_loss": _finite(summary.get("final_loss")),
        "step0_grad_ratio": _finite((diagnosis.get("evidence") or {}).get("step0_grad_ratio")),
        "summary": record.get("summary"),
    }


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group of points that differ only in seed: mean and spread of the succeeded runs' figures, and verdicts.

    The gradient ratio spans orders of magnitude, so it is averaged as log10; a ratio that
    is missing or not positive (a first layer whose gradient underflowed to 0) is left out
    of the statistics, and `n` says how many values each has.
    """
    groups: dict[str, list[dict]] = {}
    for item in rows:
        point = {field: value for field, value in (item["point"] or {}).items() if field != SEED}
        groups.setdefault(json.dumps(point, sort_keys=True), []).append(item)
    found = []
    for members in groups.values():
        done = [item for item in members if item["status"] == "succeeded"]
        ratios = [math.log10(item["step0_grad_ratio"]) for item in done if (item["step0_grad_ratio"] or 0) > 0]
        verdicts: dict[str, int] = {}
        for item in done:
            if item["verdict"]:
                verdicts[item["verdict"]] = verdicts.get(item["verdict"], 0) + 1
        found.append({
            "point": {field: value for field, value in (members[0]["point"] or {}).items() if field != SEED},
            "seeds": [item["seed"] for item in members],
            "experiments": len(members),
            "succeeded": len(done),
            "final_loss": spread([item["final_loss"] for item in done if item["final_loss"] is not None]),
            "step0_grad_ratio_log10": spread(ratios),
            "verdicts": verdicts,
        })
    return found


def spread(values: list[float]) -> dict[str, Any]:
    """n, mean, sample standard deviation (null below two values), min and max."""
    if not values:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
    }


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
