"""The experiments resource of API.md: submit, read, list, cancel, delete, and read the traces.

Views are thin: input checks live in api.validation, rendering of traces in
api.trace_formats, errors (unknown id, finished run, Redis away) in api.errors.
Every store call passes the request's tenant, so that an auth layer only has to set `g.tenant`.
"""

import contextlib
import uuid
from typing import Any

import redis
from flask import Blueprint, Response, url_for
from kombu.exceptions import OperationalError

from api.errors import queue_full, redis_unavailable
from api.language import localize_summary, request_language
from api.resources import current_tenant, get_resources, get_store
from api.trace_formats import FORMATS, METRICS, RENDERERS
from api.validation import (
    encode_cursor,
    experiment_spec,
    json_body,
    query_choice,
    query_cursor,
    query_int,
    query_list,
)
from shared.cache import ResultCache
from shared.diagnosis_texts import DEFAULT
from shared.celery_app import RUN_TASK
from shared.store import STATUSES

bp = Blueprint("experiments", __name__, url_prefix="/api/v1/experiments")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# Always in a traces answer; accepted in ?metrics= so that naming them is no error.
ALWAYS = ("steps", "layers")


def experiment_json(record: dict[str, Any], lang: str = DEFAULT) -> dict[str, Any]:
    """The public view of a store record (API.md), its diagnosis in `lang`: internal fields such as tenant
    or seq stay inside."""
    spec = record["spec"]
    error = record.get("error")
    return {
        "id": record["id"],
        "status": record["status"],
        "spec": spec,
        "created_at": record["created_at"],
        "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
        "progress": {"step": record.get("step", 0), "steps": record.get("steps", spec["steps"])},
        "summary": localize_summary(record.get("summary"), spec, lang),
        "error": {"message": error} if isinstance(error, str) else error,
        "name": spec.get("name"),
        "queue": record.get("queue"),
        "device": record.get("device"),
        "attempts": record.get("attempts", 0),
        "cancel_requested": record.get("cancel") == "1",
        # The sweep that created the experiment and its point of the grid; null for one submitted alone.
        "sweep": record.get("sweep"),
        "point": record.get("point"),
    }


@bp.post("")
def create_experiment() -> tuple[dict, int, dict]:
    """Validate the spec, write the record, then answer it from the result cache or enqueue the run
    by name (DESIGN.md: record first)."""
    lang = request_language()
    spec = experiment_spec(json_body())
    resources = get_resources()
    experiment_id, tenant, queue = uuid.uuid4().hex, current_tenant(), spec.queue()
    admission = resources.queue_cap.admit(tenant, [experiment_id])
    if not admission.admitted:
        raise queue_full(admission.count, resources.queue_cap.cap, 1)
    record = resources.store.create(experiment_id, spec.model_dump(mode="json"), tenant=tenant, queue=queue)
    try:
        cached = ResultCache(resources.store).serve([(experiment_id, spec)], tenant)
        if not cached:
            resources.celery.send_task(RUN_TASK, args=[experiment_id], task_id=experiment_id, queue=queue)
    except (OperationalError, redis.ConnectionError, redis.TimeoutError) as error:
        # The client is told 503 and will retry: take the record back, so that the retry is the one
        # that runs (left queued, the sweeper would find it without a message and run it too).
        with contextlib.suppress(redis.RedisError):
            resources.store.delete(experiment_id)
            resources.queue_cap.release(tenant, [experiment_id])
        raise redis_unavailable(error) from None
    if cached:
        record = resources.store.get(experiment_id)
    location = url_for("experiments.get_experiment", experiment_id=experiment_id)
    return experiment_json(record, lang), 202, {"Location": location}


@bp.get("")
def list_experiments() -> dict:
    """A page of experiments, newest first; `next_cursor` is null on the last page."""
    lang = request_language()
    status = query_choice("status", STATUSES)
    limit = query_int("limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    cursor = query_cursor()
    # One more than the page tells whether another page follows, so the last page says so.
    records, _ = get_store().list_experiments(
        tenant=current_tenant(), status=status, limit=limit + 1, cursor=cursor
    )
    page = records[:limit]
    next_cursor = encode_cursor(page[-1]["seq"]) if len(records) > limit else None
    return {"experiments": [experiment_json(record, lang) for record in page], "next_cursor": next_cursor}


@bp.get("/<experiment_id>")
def get_experiment(experiment_id: str) -> dict:
    """One experiment: status, progress, and summary once it has succeeded."""
    lang = request_language()
    return experiment_json(get_store().get(experiment_id, tenant=current_tenant()), lang)


@bp.post("/<experiment_id>/cancel")
def cancel_experiment(experiment_id: str) -> tuple[dict, int]:
    """Cancel a queued run at once or ask a running one to stop; 409 once it has ended."""
    lang, store = request_language(), get_store()
    store.request_cancel(experiment_id, tenant=current_tenant())
    return experiment_json(store.get(experiment_id, tenant=current_tenant()), lang), 202


@bp.delete("/<experiment_id>")
def delete_experiment(experiment_id: str) -> tuple[str, int]:
    """Remove the experiment and its traces; a running worker stops at its next write."""
    get_store().delete(experiment_id, tenant=current_tenant())
    return "", 204


@bp.get("/<experiment_id>/traces")
def get_traces(experiment_id: str) -> Response:
    """What has been traced so far, as JSON (default), npz or csv; `?metrics=` selects."""
    render = RENDERERS[query_choice("format", FORMATS, default="json")]
    chosen = query_list("metrics", METRICS + ALWAYS)
    metrics = [name for name in chosen if name not in ALWAYS] if chosen else list(METRICS)
    layers, arrays = get_store().read_traces(experiment_id, metrics, tenant=current_tenant())
    return render(experiment_id, layers, arrays)
