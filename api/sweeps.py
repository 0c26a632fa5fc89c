"""The sweeps resource of API.md: a grid of experiments over a base spec, submitted, read, cancelled and deleted as one.

Every point is validated before anything is written; then the records of all
points go to Redis in one transaction, and only then are the run messages sent,
so that every worker takes its share at once.
"""

import json
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from flask import Blueprint, Response, url_for
from kombu.exceptions import OperationalError
from pydantic import ValidationError

from api.errors import ApiError, handle_http_exception, queue_full
from api.language import localize_summary, request_language
from api.resources import current_tenant, get_resources, get_store
from api.validation import encode_cursor, error_details, json_body, query_cursor, query_int, validation_failed
from shared.cache import ResultCache
from shared.celery_app import RUN_TASK
from shared.diagnosis_texts import DEFAULT
from shared.limits import LIMITS
from shared.spec import RULE_KINDS, ExperimentSpec
from shared.sweeps import SweepInvalid, SweepNotFound, Sweeps, aggregate, check_grid, counts, expand, row, state

bp = Blueprint("sweeps", __name__, url_prefix="/api/v1/sweeps")

FIELDS = ("base", "grid", "name")
SPEC_FIELDS = set(ExperimentSpec.model_fields)
# A grid whose every point fails would otherwise answer a thousand details.
MAX_DETAILS = 20
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass
class Plan:
    """A checked sweep request: what to store and the validated spec of every point, in grid order."""

    base: dict[str, Any]
    grid: dict[str, list]
    name: str | None
    points: list[tuple[dict[str, Any], ExperimentSpec]]


def sweep_plan(body: Any) -> Plan:
    """The plan of a request body, or the 422 that names the field or the point at fault."""
    if not isinstance(body, dict):
        raise validation_failed([{"loc": [], "msg": "a sweep must be a JSON object with base and grid"}])
    unknown = [key for key in body if key not in FIELDS]
    if unknown:
        raise validation_failed(
            [{"loc": [key], "msg": "unknown field; a sweep has base, grid and name"} for key in unknown]
        )
    base, name = body.get("base", {}), body.get("name")
    if not isinstance(base, dict):
        raise validation_failed([{"loc": ["base"], "msg": "must be an object: the spec every point starts from"}])
    stray = [key for key in base if key not in SPEC_FIELDS]
    if stray:
        raise validation_failed([{"loc": ["base", key], "msg": "unknown spec field"} for key in stray])
    if name is not None and not is_name(name):
        raise validation_failed([{"loc": ["name"], "msg": f"must be a string of at most {LIMITS.name_length} characters"}])
    try:
        grid = check_grid(body.get("grid"), SPEC_FIELDS)
    except SweepInvalid as error:
        raise validation_failed(error.details) from None
    wrong = base_field_errors({field: value for field, value in base.items() if field in grid})
    if wrong:
        raise validation_failed([{**detail, "loc": ["base", *detail["loc"]]} for detail in wrong])
    every, points, failures = expand(grid), [], []
    for index, point in enumerate(every):
        try:
            points.append((point, ExperimentSpec.model_validate({**base, **point})))
        except ValidationError as error:
            failures.append((index, point, error_details(error)))
    if failures:
        raise invalid_points(failures, len(every), base, grid)
    return Plan(base=base, grid=grid, name=name, points=points)


def base_field_errors(base: dict[str, Any]) -> list[dict[str, Any]]:
    """Base values wrong in themselves (a type, a bound) that the grid replaces, so that no point shows
    them: a bad base is a bad request all the same. The rules between fields apply to points only."""
    try:
        ExperimentSpec.model_validate(base)
    except ValidationError as error:
        return [detail for detail in error_details(error) if detail["type"] not in RULE_KINDS]
    return []


def is_name(value: Any) -> bool:
    """A label as the spec's `name` takes it: a string of at most the limit's characters, all of them
    Unicode (JSON's escapes can spell a lone surrogate, which no UTF-8 encodes)."""
    if not isinstance(value, str) or len(value) > LIMITS.name_length:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def invalid_points(failures: list[tuple[int, dict, list[dict]]], total: int, base: dict, grid: dict) -> ApiError:
    """The 422 of a grid with invalid points: the first named with its values, at most MAX_DETAILS details.

    A problem with a field that only the base sets, found at every point, is the base's
    (`loc` ["base", field]); the others belong to their point (["points", index, field]).
    """
    seen = Counter((tuple(detail["loc"]), detail["msg"]) for _, _, details in failures for detail in details)
    problems: list[dict[str, Any]] = []
    for index, point, details in failures:
        for detail in details:
            field = detail["loc"][0] if detail["loc"] else None
            if field in base and field not in grid and seen[(tuple(detail["loc"]), detail["msg"])] == total:
                problem = {"loc": ["base", *detail["loc"]], "msg": detail["msg"], "type": detail["type"]}
                if problem not in problems:
                    problems.append(problem)
            else:
                problems.append({"loc": ["points", index, *detail["loc"]], "msg": detail["msg"], "type": detail["type"],
                                 "point": point})
    problems.sort(key=lambda problem: problem["loc"][0] != "base")  # stable: the base's first, then by point
    first = problems[0]
    message = f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"
    bad = len({problem["loc"][1] for problem in problems if problem["loc"][0] == "points"})
    if first["loc"][0] == "points":
        message += f" (point {json.dumps(first['point'])}; {bad} of {total} points are invalid)"
    elif bad:
        message += f" (and {bad} of {total} points are invalid on their own)"
    return ApiError(422, message, problems[:MAX_DETAILS])


def send_runs(celery: Celery, experiments: list[tuple[str, str]]) -> None:
    """One run message per (experiment id, queue), over one broker connection."""
    with celery.producer_or_acquire() as producer:
        for experiment_id, queue in experiments:
            celery.send_task(RUN_TASK, args=[experiment_id], task_id=experiment_id, queue=queue, producer=producer)


def sweep_json(sweep: dict, records: list[dict], lang: str = DEFAULT) -> dict[str, Any]:
    """The public view of a sweep: its state, counts, every experiment (its diagnosis in `lang`), and the
    aggregate over seeds."""
    rows = [row(record) for record in records]
    for item, record in zip(rows, records):
        item["summary"] = localize_summary(item["summary"], record["spec"], lang)
    found = counts([record["status"] for record in records])
    return {**_head(sweep, found), "experiments": rows, "aggregate": aggregate(rows)}


def _head(sweep: dict, found: dict[str, int]) -> dict[str, Any]:
    return {
        "id": sweep["id"],
        "name": sweep["name"],
        "created_at": sweep["created_at"],
        "status": state(found),
        "size": len(sweep["experiments"]),
        "counts": found,
        "base": sweep["base"],
        "grid": sweep["grid"],
    }


@bp.errorhandler(SweepNotFound)
def handle_sweep_not_found(error: SweepNotFound) -> Response:
    return handle_http_exception(ApiError(404, str(error)))


@bp.post("")
def create_sweep() -> tuple[dict, int, dict]:
    """Validate every point, write all records at once, answer the points whose result is cached,
    then send every other run (DESIGN.md: record first)."""
    plan = sweep_plan(json_body())
    resources = get_resources()
    sweeps, tenant, sweep_id = Sweeps(resources.store), current_tenant(), uuid.uuid4().hex
    specs = [(uuid.uuid4().hex, spec) for _, spec in plan.points]
    experiments = [
        (experiment_id, point, spec.model_dump(mode="json"), spec.queue())
        for (experiment_id, spec), (point, _) in zip(specs, plan.points)
    ]
    admission = resources.queue_cap.admit(tenant, [experiment_id for experiment_id, *_ in experiments])
    if not admission.admitted:
        raise queue_full(admission.count, resources.queue_cap.cap, len(experiments))
    sweeps.create(sweep_id, base=plan.base, grid=plan.grid, name=plan.name, experiments=experiments, tenant=tenant)
    try:
        cached = ResultCache(resources.store).serve(specs, tenant)
        runs = [(experiment_id, queue) for experiment_id, _, _, queue in experiments if experiment_id not in cached]
        send_runs(resources.celery, runs)
    except (OperationalError, redis.ConnectionError, redis.TimeoutError) as error:
        raise _unqueued(sweeps, sweep_id, tenant, error) from None
    location = url_for("sweeps.get_sweep", sweep_id=sweep_id)
    body = {"id": sweep_id, "name": plan.name, "size": len(experiments),
            "experiments": [experiment_id for experiment_id, *_ in experiments]}
    return body, 202, {"Location": location}


def _unqueued(sweeps: Sweeps, sweep_id: str, tenant: str, error: Exception) -> ApiError:
    # Some messages may be out already: deleting the records makes those no-ops (a worker's claim
    # finds nothing), so the sweep runs whole or not at all, and the client's retry is the one that runs.
    try:
        sweeps.delete(sweep_id, tenant=tenant)
    except redis.RedisError:
        return ApiError(503, f"Redis unreachable while queuing sweep {sweep_id}: {error}; its records could not be "
                             f"removed either: DELETE /api/v1/sweeps/{sweep_id} once Redis is back")
    return ApiError(503, f"Redis unreachable while queuing the sweep: {error}; nothing was created: retry")


@bp.get("")
def list_sweeps() -> dict:
    """A page of sweeps, newest first, with their counts; `next_cursor` is null on the last page."""
    limit = query_int("limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    sweeps = Sweeps(get_store())
    found = sweeps.list_sweeps(tenant=current_tenant(), limit=limit + 1, cursor=query_cursor())
    page = found[:limit]
    heads = [_head(sweep, counts(statuses)) for sweep, statuses in zip(page, sweeps.statuses(page))]
    next_cursor = encode_cursor(page[-1]["seq"]) if len(found) > limit else None
    return {"sweeps": heads, "next_cursor": next_cursor}


@bp.get("/<sweep_id>")
def get_sweep(sweep_id: str) -> dict:
    """The sweep with every experiment's point, status, verdict and figures, and the aggregate over seeds."""
    lang, sweeps = request_language(), Sweeps(get_store())
    sweep = sweeps.get(sweep_id, tenant=current_tenant())
    return sweep_json(sweep, sweeps.records(sweep), lang)


@bp.post("/<sweep_id>/cancel")
def cancel_sweep(sweep_id: str) -> tuple[dict, int]:
    """Cancel the queued experiments and stop the running ones; 409 when every one has ended."""
    lang, sweeps, tenant = request_language(), Sweeps(get_store()), current_tenant()
    if not sweeps.cancel(sweep_id, tenant=tenant):
        raise ApiError(409, f"sweep {sweep_id} has nothing left to cancel: every experiment has ended or is stopping")
    sweep = sweeps.get(sweep_id, tenant=tenant)
    return sweep_json(sweep, sweeps.records(sweep), lang), 202


@bp.delete("/<sweep_id>")
def delete_sweep(sweep_id: str) -> tuple[str, int]:
    """Remove the sweep and its experiments with their traces; running workers stop at their next write."""
    Sweeps(get_store()).delete(sweep_id, tenant=current_tenant())
    return "", 204
