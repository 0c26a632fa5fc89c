"""`GET /openapi.json`: the OpenAPI 3.1 document of API.md, built from the pydantic models.

The request bodies come from the spec model itself (shared/spec.py), the answers from
api/schemas.py, the query parameters from the same tables that the views check them
against, so that the document cannot drift from what the API accepts. Every route lists
every status it can answer, and `links` say which answer's id feeds which operation, for
clients and for schemathesis' stateful tests.

Two things JSON Schema cannot say: the cost and trace-size bounds of a spec (products of
several fields) and the cross product of a sweep's grid. A spec within every field's bounds
may still be refused by them (422, `details[].type` says which rule); the spec's description
gives the figures.
"""

import copy
from typing import Any

from flask import Blueprint, current_app
from pydantic.json_schema import models_json_schema

from api import schemas
from api.docs import ASSETS
from api.experiments import ALWAYS, MAX_LIMIT
from api.experiments import DEFAULT_LIMIT as EXPERIMENTS_LIMIT
from api.sweeps import DEFAULT_LIMIT as SWEEPS_LIMIT
from api.sweeps import MAX_LIMIT as SWEEPS_MAX_LIMIT
from api.theory import PARAMETERS as THEORY_PARAMETERS
from api.trace_formats import FORMATS, METRICS
from api.validation import CURSOR_PATTERN
from shared.diagnosis_texts import LANGUAGES
from shared.limits import LIMITS
from shared.spec import ExperimentSpec
from shared.store import STATUSES
from shared.sweeps import MAX_POINTS

bp = Blueprint("openapi", __name__)
EXTENSION = "gradtrace.openapi"

REF = "#/components/schemas/{model}"
ID_SCHEMA = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
JSON = "application/json"
# Errors by status, as API.md's table words them.
ERRORS = {
    400: "the body is not valid JSON (or not UTF-8, or nests over 32 deep, or repeats a name in an object)",
    401: "tokens are configured and the request has none or a wrong one",
    404: "unknown id, or an id that belongs to another tenant",
    409: "the experiment's (or sweep's) status does not allow it; on a submit, the tenant's cap of unfinished "
         "experiments is reached (code queue_full)",
    413: "the body is larger than the configured limit (default 1 MiB)",
    415: "the Content-Type is not application/json",
    422: "not a valid spec or parameter: unknown field, wrong type, value out of range, over the cost limit",
    429: "the tenant's rate limit is reached; Retry-After says when to come back",
    503: "Redis unreachable; the message says so",
}
# Every /api/v1 route: the token check, then the tenant's rate limit.
GUARDED = (401, 429)
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
BODY_ERRORS = (400, 413, 415, 422, 503)


def component_schemas() -> dict[str, Any]:
    """The JSON Schema of the spec and of every answer, as OpenAPI components."""
    models = [(ExperimentSpec, "validation"), *((model, "validation") for model in schemas.RESPONSE_MODELS)]
    _, found = models_json_schema(models, ref_template=REF)
    components = found["$defs"]
    components["SpecFields"] = spec_fields(components["ExperimentSpec"])
    components["SweepRequest"] = sweep_request(components["SpecFields"])
    return components


def spec_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's fields without the rules between them: a sweep's base, whose points combine it with the grid."""
    fields = {key: value for key, value in copy.deepcopy(spec).items() if key not in ("allOf", "x-limits")}
    fields["description"] = "Spec fields; the rules between fields apply to each point (base and grid values together)."
    return fields


def sweep_request(fields: dict[str, Any]) -> dict[str, Any]:
    """POST /api/v1/sweeps: a base spec and a grid of values per spec field."""
    # No maxItems: the bound is on the product of the lists' lengths (MAX_POINTS), which JSON Schema cannot state.
    grid = {
        name: {"type": "array", "minItems": 1, "uniqueItems": True, "items": schema}
        for name, schema in fields["properties"].items()
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["grid"],
        "properties": {
            "base": {"$ref": REF.format(model="SpecFields")},
            "grid": {
                "type": "object", "minProperties": 1, "additionalProperties": False, "properties": grid,
                "description": f"One experiment per point of the cross product of the lists, at most {MAX_POINTS:,}.",
            },
            "name": {"anyOf": [{"type": "string", "maxLength": LIMITS.name_length}, {"type": "null"}]},
        },
        "description": "A grid over a base spec; every point is a spec (base, then the point's values) and must be valid.",
    }


def ref(model: str) -> dict[str, str]:
    return {"$ref": REF.format(model=model)}


def answer(description: str, model: str | None = None, **extra: Any) -> dict[str, Any]:
    """One response object; `model` names its JSON body's component."""
    found: dict[str, Any] = {"description": description, **extra}
    if model:
        found["content"] = {JSON: {"schema": ref(model)}}
    return found


def responses(success: dict[int, dict[str, Any]], errors: tuple[int, ...]) -> dict[str, Any]:
    """The success answers and the error answers (API.md's JSON error body) of one operation."""
    found = {str(status): value for status, value in success.items()}
    for status in sorted(errors):
        found[str(status)] = answer(ERRORS[status], "ErrorBody")
    return found


def path_id(name: str, noun: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": ID_SCHEMA,
            "description": f"the {noun}'s id, as the API made it (32 hex digits)"}


def query(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description, **extra}


def page_parameters(default: int, maximum: int) -> list[dict[str, Any]]:
    return [
        query("limit", {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}, "page size"),
        query("cursor", {"type": "string", "pattern": CURSOR_PATTERN},
              "next_cursor of the previous page, as is; left out: the first page"),
    ]


def spec_body(model: str, description: str) -> dict[str, Any]:
    return {"required": True, "description": description, "content": {JSON: {"schema": ref(model)}}}


# The answers that hold a diagnosis word it in the language asked for.
LANG = {"name": "lang", "in": "query", "required": False, "schema": {"type": "string", "enum": list(LANGUAGES)},
        "description": "the language of the diagnosis' words (title, explanation, reasons, advice): en or zh "
                       "(Simplified Chinese); left out: the Accept-Language header's choice, else en"}


def links(id_pointer: str, operations: dict[str, str], parameter: str) -> dict[str, Any]:
    """Links from an answer whose body holds an id to the operations that take it."""
    return {
        name: {"operationId": operation, "parameters": {parameter: f"$response.body#{id_pointer}"}}
        for name, operation in operations.items()
    }


EXPERIMENT_LINKS = {
    "GetExperiment": "getExperiment", "CancelExperiment": "cancelExperiment",
    "DeleteExperiment": "deleteExperiment", "GetTraces": "getTraces",
}
SWEEP_LINKS = {"GetSweep": "getSweep", "CancelSweep": "cancelSweep", "DeleteSweep": "deleteSweep"}
LOCATION = {"Location": {"required": True, "description": "the new resource's URL", "schema": {"type": "string"}}}


def theory_parameters(fields: dict[str, Any]) -> list[dict[str, Any]]:
    """The spec fields that /theory reads from the query string, with the spec's bounds."""
    found = []
    for name in THEORY_PARAMETERS:
        schema = {key: value for key, value in fields[name].items() if key not in ("title", "description")}
        if name == "dataset":
            schema = {"type": "string", "enum": schema["anyOf"][0]["enum"]}
        found.append(query(name, schema, f"the spec field {name}; left out: its default"))
    return found


def paths(components: dict[str, Any]) -> dict[str, Any]:
    """Every route of API.md with its parameters, body, answers and links."""
    experiment_id, sweep_id = path_id("experiment_id", "experiment"), path_id("sweep_id", "sweep")
    experiment = answer("the experiment", "Experiment")
    return {
        "/api/v1/experiments": {
            "post": {
                "operationId": "createExperiment", "summary": "Submit an experiment",
                "parameters": [LANG],
                "requestBody": spec_body("ExperimentSpec", "the spec; every field is optional"),
                "responses": responses({202: answer(
                    "accepted: queued (or answered at once from the result cache)", "Experiment",
                    headers=LOCATION, links=links("/id", EXPERIMENT_LINKS, "experiment_id"),
                )}, BODY_ERRORS + (409,) + GUARDED),
            },
            "get": {
                "operationId": "listExperiments", "summary": "Experiments, newest first",
                "parameters": [
                    query("status", {"type": "string", "enum": list(STATUSES)}, "only this status; left out: all"),
                    LANG,
                    *page_parameters(EXPERIMENTS_LIMIT, MAX_LIMIT),
                ],
                "responses": responses({200: answer("a page of experiments", "ExperimentPage")}, (422, 503) + GUARDED),
            },
        },
        "/api/v1/experiments/{experiment_id}": {
            "parameters": [experiment_id],
            "get": {
                "operationId": "getExperiment", "summary": "One experiment",
                "parameters": [LANG],
                "responses": responses({200: experiment}, (404, 422, 503) + GUARDED),
            },
            "delete": {
                "operationId": "deleteExperiment", "summary": "Remove an experiment and its traces",
                "responses": responses({204: answer("deleted")}, (404, 503) + GUARDED),
            },
        },
        "/api/v1/experiments/{experiment_id}/cancel": {
            "parameters": [experiment_id],
            "post": {
                "operationId": "cancelExperiment", "summary": "Cancel a queued run, or stop a running one",
                "parameters": [LANG],
                "responses": responses({202: experiment}, (404, 409, 422, 503) + GUARDED),
            },
        },
        "/api/v1/experiments/{experiment_id}/traces": {
            "parameters": [experiment_id],
            "get": {
                "operationId": "getTraces", "summary": "What has been traced so far",
                "parameters": [
                    query("metrics", {"type": "array", "minItems": 1,
                                      "items": {"type": "string", "enum": [*METRICS, *ALWAYS]}},
                          "comma-separated metrics; left out: all", style="form", explode=False),
                    query("format", {"type": "string", "enum": list(FORMATS)}, "json (default), npz or csv"),
                ],
                "responses": responses({200: {
                    "description": "the traces: JSON, or a download (npz, csv) that keeps NaN and infinities",
                    "content": {
                        JSON: {"schema": ref("Traces")},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                }}, (404, 422, 503) + GUARDED),
            },
        },
        "/api/v1/sweeps": {
            "post": {
                "operationId": "createSweep", "summary": "Submit one experiment per point of a grid",
                "requestBody": spec_body("SweepRequest", "base spec and grid"),
                "responses": responses({202: answer(
                    "accepted: every point queued", "SweepCreated", headers=LOCATION,
                    links={**links("/id", SWEEP_LINKS, "sweep_id"),
                           **links("/experiments/0", {"GetFirstExperiment": "getExperiment"}, "experiment_id")},
                )}, BODY_ERRORS + (409,) + GUARDED),
            },
            "get": {
                "operationId": "listSweeps", "summary": "Sweeps, newest first",
                "parameters": page_parameters(SWEEPS_LIMIT, SWEEPS_MAX_LIMIT),
                "responses": responses({200: answer("a page of sweeps", "SweepPage")}, (422, 503) + GUARDED),
            },
        },
        "/api/v1/sweeps/{sweep_id}": {
            "parameters": [sweep_id],
            "get": {
                "operationId": "getSweep", "summary": "A sweep: counts, every experiment, aggregates",
                "parameters": [LANG],
                "responses": responses({200: answer("the sweep", "Sweep")}, (404, 422, 503) + GUARDED),
            },
            "delete": {
                "operationId": "deleteSweep", "summary": "Remove a sweep and its experiments",
                "responses": responses({204: answer("deleted")}, (404, 503) + GUARDED),
            },
        },
        "/api/v1/sweeps/{sweep_id}/cancel": {
            "parameters": [sweep_id],
            "post": {
                "operationId": "cancelSweep", "summary": "Cancel every experiment of a sweep that has not ended",
                "parameters": [LANG],
                "responses": responses({202: answer("the sweep", "Sweep")}, (404, 409, 422, 503) + GUARDED),
            },
        },
        "/api/v1/theory": {
            "get": {
                "operationId": "getTheory", "summary": "Mean-field prediction at initialization (no training)",
                "parameters": theory_parameters(components["ExperimentSpec"]["properties"]),
                "responses": responses({200: answer("per hidden layer: q, chi, act_grad_log10, regime", "Theory")},
                                       (422,) + GUARDED),
            },
        },
        "/api/v1/workers": {
            "get": {
                "operationId": "listWorkers", "summary": "Live worker nodes",
                "responses": responses({200: answer("the live nodes", "Workers")}, (503,) + GUARDED),
            },
        },
        "/api/v1/lessons": {
            "get": {
                "operationId": "listLessons", "summary": "The lessons of examples/, each with the body that submits it",
                "responses": responses({200: {"description": "the lessons in teaching order; POST `body` to "
                                                             "/api/v1/experiments or /api/v1/sweeps by `kind`",
                                              "content": {JSON: {"schema": {"type": "object"}}}}},
                                       (503,) + GUARDED),
            },
        },
        "/": {"get": {"operationId": "dashboard", "summary": "The web dashboard (README: Dashboard)",
                      "responses": {"200": {"description": "the page",
                                            "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/vendor/plotly.min.js": {"get": {
            "operationId": "plotlyJs", "summary": "The dashboard's plotting library, from the installed plotly package",
            "responses": {"200": {"description": "JavaScript",
                                  "content": {"text/javascript": {"schema": {"type": "string"}}}},
                          **responses({}, (404,))},
        }},
        "/healthz": {"get": {"operationId": "healthz", "summary": "Liveness (no Redis)",
                             "responses": responses({200: answer("alive", "Health")}, ())}},
        "/readyz": {"get": {"operationId": "readyz", "summary": "Readiness: Redis answers",
                            "responses": responses({200: answer("ready", "Ready")}, (503,))}},
        "/metrics": {"get": {
            "operationId": "metrics", "summary": "Prometheus metrics (README: Operators)",
            "description": "Open, unless GRADTRACE_METRICS_TOKEN is set: then a bearer token equal to it.",
            "security": [{"bearer": []}, {}],
            "responses": {
                "200": {"description": "the Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}}},
                **responses({}, (401, 503)),
            },
        }},
        "/docs": {"get": {"operationId": "docs", "summary": "This document in Swagger UI (offline: no CDN)",
                          "responses": {"200": {"description": "the page",
                                                "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/docs/{name}": {"get": {
            "operationId": "docsAsset", "summary": "A file of the Swagger UI page",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": list(ASSETS)}, "description": "the file"}],
            "responses": {
                "200": {"description": "the file",
                        "content": {mimetype: {"schema": {"type": "string"}} for mimetype in ASSETS.values()}},
                **responses({}, (404,)),
            },
        }},
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                                  "responses": {"200": {"description": "OpenAPI 3.1",
                                                        "content": {JSON: {"schema": {"type": "object"}}}}}}},
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    components = component_schemas()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gradtrace",
            "version": "1",
            "description": "Per-layer gradient traces of small PyTorch models, served over HTTP. Every error is "
                           "`{\"error\": {\"code\", \"message\", \"details\": [{\"loc\", \"msg\"}]}}`; a wrong "
                           "method is 405 with Allow, an unknown route 404, both in that form.",
        },
        "paths": secured(paths(components)),
        "components": {"schemas": components, "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "an API token, when the service has tokens configured (GRADTRACE_API_TOKENS); "
                           "each token is a tenant and sees only its own experiments and sweeps",
        }}},
    }


def secured(routes: dict[str, Any]) -> dict[str, Any]:
    """Every /api/v1 operation takes a bearer token, or none where the service has no tokens configured."""
    for path, operations in routes.items():
        if path.startswith("/api/v1"):
            for method, operation in operations.items():
                if method in METHODS:
                    operation["security"] = [{"bearer": []}, {}]
    return routes


@bp.get("/openapi.json")
def openapi_json() -> dict:
    """The document, built once per app: it depends on nothing but the code."""
    if EXTENSION not in current_app.extensions:
        current_app.extensions[EXTENSION] = document()
    return current_app.extensions[EXTENSION]
