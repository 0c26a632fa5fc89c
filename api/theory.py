"""GET /api/v1/theory: the mean-field prediction for an MLP at initialization, from the query string.

The query is checked as a spec is (shared.spec: same bounds, same aliases), after the
strings have been turned into the spec's types; the numbers come from shared.theory.
"""

import math
from typing import Any

from flask import Blueprint, request
from pydantic import ValidationError

from api.validation import INTEGER, NUMBER, error_details, query_error, query_value, validation_failed
from shared.spec import ExperimentSpec
from shared.theory import report

bp = Blueprint("theory", __name__, url_prefix="/api/v1/theory")

INTEGERS = ("depth", "width")
NUMBERS = ("init_std",)
# Spelled as in JSON, as the OpenAPI document's boolean and number parameters are.
BOOLEANS = {"true": True, "false": False}
TEXTS = ("arch", "activation", "init", "dataset", "norm")
PARAMETERS = (*INTEGERS, *NUMBERS, "residual", *TEXTS)
# What the spec needs besides the network and has no bearing on the prediction: the
# smallest run, so that no cost bound refuses a network the service could build.
NO_TRAINING = {"steps": 1, "batch_size": 2}


def _typed(name: str, value: str) -> Any:
    """A query string as the spec field's type; a 422 naming the parameter where it is not one."""
    if name in INTEGERS:
        if not INTEGER.fullmatch(value):
            raise query_error(name, f"must be an integer, not {value[:100]!r}")
        return int(value)
    if name in NUMBERS:
        number = float(value) if NUMBER.fullmatch(value) else math.nan
        if not math.isfinite(number):
            raise query_error(name, f"must be a finite number, not {value[:100]!r}")
        return number
    if name == "residual":
        if value not in BOOLEANS:
            raise query_error(name, f"must be true or false, not {value[:100]!r}")
        return BOOLEANS[value]
    return value


def theory_spec() -> ExperimentSpec:
    """The spec that the query describes; an MLP's input defaults to `random` (width features of unit variance)."""
    unknown = [name for name in request.args if name not in PARAMETERS]
    if unknown:
        raise query_error(unknown[0], f"unknown parameter; known: {', '.join(PARAMETERS)}")
    texts = {name: query_value(name) for name in request.args}
    fields = {name: _typed(name, value) for name, value in texts.items()}
    if fields.get("arch", "mlp") == "mlp":
        fields.setdefault("dataset", "random")
    try:
        return ExperimentSpec.model_validate({**fields, **NO_TRAINING})
    except ValidationError as error:
        details = error_details(error)
        raise validation_failed([{**item, "loc": ["query", *item["loc"]]} for item in details]) from None


@bp.get("")
def get_theory() -> dict:
    """Per hidden layer, input side first: q, chi, act_grad_log10, regime; and the network's phase."""
    return report(theory_spec())
