"""Request input (the JSON body, the query string) turned into checked values, or the ApiError that says why."""

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from flask import request
from gunicorn.http.errors import ParseException
from pydantic import ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from api.errors import ApiError
from shared.spec import ExperimentSpec, SpecError


# The deepest nesting of arrays and objects a body may have. A sweep needs 4 (body, grid,
# list, clipping object); anything deeper is no request of this API, and values nested a
# thousand deep would reach Python's recursion limit wherever they are encoded again.
MAX_NESTING = 32
# The most problems one 422 lists: a body of a hundred thousand unknown fields gets the
# first few and a count, not an answer larger than the request.
MAX_DETAILS = 20
# An experiment or sweep id: the hex of a uuid4, as the API makes them.
ID_PATTERN = re.compile(r"[0-9a-f]{32}")
ID_ARGUMENTS = {"experiment_id": "experiment", "sweep_id": "sweep"}
# Numbers in a query string are spelled as in JSON: no "+5", no "1_000", no Unicode digits, no spaces.
INTEGER = re.compile(r"-?(0|[1-9][0-9]{0,17})")
NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


class NonFiniteLiteral(ValueError):
    """NaN, Infinity and -Infinity: Python's json accepts them, JSON (RFC 8259) does not."""


def _reject_constant(name: str) -> Any:
    raise NonFiniteLiteral(f"{name} is not a JSON value")


def _number(text: str) -> float | int:
    """A JSON number with a fraction or an exponent: an int where it is whole (8.0, 1e2), else a float.

    JSON and JSON Schema do not tell 8.0 from 8 (the OpenAPI document's integers take both, and
    a client's 16 / 2 is 8.0), so neither does the API; 8.5 is no integer. A number beyond a
    double's range (1e400) would read as infinity: it is refused.
    """
    number = float(text)
    if not math.isfinite(number):
        raise NonFiniteLiteral(f"the number {text[:40]} is out of range")
    return int(number) if number.is_integer() else number


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose names are unique: of {"depth": 2, "depth": 0} neither is taken silently."""
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise ValueError(f"the name {name[:80]!r} appears twice in one object")
        seen.add(name)
    return dict(pairs)


def _too_deep(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` deep (without recursion, whatever the depth)."""
    level = [value]
    for _ in range(limit):
        level = [
            item
            for container in level
            for item in (container.values() if isinstance(container, dict) else container)
            if isinstance(item, (dict, list))
        ]
        if not level:
            return False
    return True


def parse_json(raw: bytes) -> Any:
    """The JSON value of a body, or the 400 that says why it is none: strict RFC 8259 (no NaN or
    Infinity, no number beyond a double, no name twice in an object), UTF-8, at most MAX_NESTING deep."""
    try:
        value = json.loads(
            raw.decode("utf-8"),
            parse_constant=_reject_constant,
            parse_float=_number,
            object_pairs_hook=_unique_keys,
        )
    except UnicodeDecodeError:  # before ValueError, of which it is one
        raise ApiError(400, "the request body is not UTF-8 text") from None
    except RecursionError:
        raise ApiError(400, "the request body is not valid JSON: nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, NaN literals, integers of thousands of digits
        raise ApiError(400, f"the request body is not valid JSON: {error}") from None
    if isinstance(value, (dict, list)) and _too_deep(value, MAX_NESTING):
        raise ApiError(400, f"the request body nests arrays and objects more than {MAX_NESTING} deep")
    return value


def json_body() -> Any:
    """The request's JSON value: 415 unless it says JSON, 413 over the limit, 400 unless it is JSON."""
    if request.mimetype != "application/json":
        raise ApiError(415, f"Content-Type must be application/json, not {request.mimetype[:100] or 'none'}")
    # A compressed body would be read as the bytes it is and refused as not JSON: say why instead.
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ApiError(415, f"Content-Encoding {encoding[:40]!r} is not supported: send the JSON uncompressed")
    try:
        raw = request.get_data(cache=False)  # Werkzeug raises the 413 of a Content-Length over the limit
    except (ParseException, OSError) as error:
        # gunicorn reads a chunked body as the view asks for it: a bad chunk is found here.
        raise ApiError(400, f"the request body could not be read: {str(error)[:100] or type(error).__name__}") from None
    # A chunked body has no Content-Length, and Werkzeug stops reading it at the limit without
    # a word: one that reaches the limit is taken to be over it, not parsed truncated.
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        raise RequestEntityTooLarge()
    return parse_json(raw)


def validation_failed(details: list[dict[str, Any]]) -> ApiError:
    """A 422 whose message names the first problem and whose details list them all."""
    first = details[0]
    where = ".".join(str(part) for part in first["loc"])
    message = f"{where}: {first['msg']}" if where else first["msg"]
    if len(details) > 1:
        message += f" (and {len(details) - 1} more)"
    return ApiError(422, message, details[:MAX_DETAILS])


def error_details(error: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as API.md's details, each with its `type` (pydantic's, or the spec rule's);
    a SpecError of the spec's own checks names its field."""
    details = []
    for item in error.errors(include_url=False):
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, SpecError):
            details.append({"loc": [cause.loc], "msg": str(cause), "type": cause.kind})
        else:
            details.append({"loc": list(item["loc"]), "msg": item["msg"], "type": item["type"]})
    return details


def experiment_spec(body: Any) -> ExperimentSpec:
    """The validated spec of a request body, every default filled in and every alias resolved."""
    if not isinstance(body, dict):
        raise validation_failed([{"loc": [], "msg": f"the spec must be a JSON object, not {_json_type(body)}"}])
    try:
        return ExperimentSpec.model_validate(body)
    except ValidationError as error:
        raise validation_failed(error_details(error)) from None


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def check_ids(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """404 for an experiment or sweep id that the API cannot have made, before any Redis round trip."""
    for name, noun in ID_ARGUMENTS.items():
        value = (values or {}).get(name)
        if value is not None and not ID_PATTERN.fullmatch(value):
            raise ApiError(404, f"no {noun} {value[:100]}")


def query_error(name: str, message: str) -> ApiError:
    """A 422 about one query parameter."""
    return validation_failed([{"loc": ["query", name], "msg": message}])


def query_value(name: str) -> str | None:
    """The one value of a query parameter; a 422 when it is given twice, as ?limit=5&limit=500, or
    given empty (?limit=): no parameter has an empty value, and a default is had by leaving it out."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise query_error(name, f"given {len(values)} times; give it once")
    if values == [""]:
        raise query_error(name, "empty; leave the parameter out for its default")
    return values[0] if values else None


def query_choice(name: str, choices: Sequence[str], default: str | None = None) -> str | None:
    """A query parameter that must be one of `choices`."""
    value = query_value(name)
    if value is None:
        return default
    if value not in choices:
        raise query_error(name, f"must be one of {', '.join(choices)}, not {value!r}")
    return value


def query_int(name: str, low: int, high: int, default: int) -> int:
    """An integer query parameter within [low, high]."""
    value = query_value(name)
    if value is None:
        return default
    if not INTEGER.fullmatch(value) or not low <= int(value) <= high:
        raise query_error(name, f"must be an integer from {low} to {high}, not {value!r}")
    return int(value)


def query_list(name: str, choices: Sequence[str]) -> list[str] | None:
    """A comma-separated query parameter of names from `choices` (each once kept); None when absent."""
    value = query_value(name)
    if value is None:
        return None
    names = [part.strip() for part in value.split(",")]
    unknown = [part for part in names if part not in choices]
    if unknown:
        raise query_error(name, f"unknown {', '.join(map(repr, unknown))}; known: {', '.join(choices)}")
    return list(dict.fromkeys(names))


# A cursor is opaque to clients: the last sequence number they saw, in decimal.
CURSOR_PATTERN = "^[0-9]{1,18}$"


def encode_cursor(seq: int) -> str:
    """The `next_cursor` that continues a listing after the experiment with this sequence number."""
    return str(seq)


def query_cursor() -> int | None:
    """The sequence number that the `cursor` query parameter continues after."""
    value = query_value("cursor")
    if value is None:
        return None
    if not re.fullmatch(CURSOR_PATTERN, value):
        raise query_error("cursor", "not a cursor of this API: pass next_cursor of the previous page as is")
    return int(value)
