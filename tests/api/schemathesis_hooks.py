"""The one schemathesis hook of gradtrace (schemathesis.toml loads it): what JSON Schema cannot say.

A spec within every field's bounds can still be over the cost or trace-size bound (a
product of several fields), and a sweep's points combine its base with the grid's values,
so that rules between fields (or the number of points) refuse some requests that the
OpenAPI document, which cannot state those rules, calls valid. Those 422s, and only
those, are not failures of positive_data_acceptance: every detail of the answer must
name such a rule (`details[].type`), so that a 422 for anything else is still caught.
Nor is a 429 of the rate limit, which refuses a request's rate and not its data (it
applies where tokens are configured; schemathesis sends far more than 20 a second).
"""

import json

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

from shared.spec import RULE_KINDS

# The rules that the spec's own checks apply across fields, and a sweep's number of points
# (shared/sweeps.py): nothing a single field's schema can express.
BEYOND_JSON_SCHEMA = {*RULE_KINDS, "grid_size"}


def refused_by_a_rule_between_fields(response) -> bool:
    """Whether a 422 names only rules between fields as its reasons."""
    if response.status_code != 422:
        return False
    try:
        details = json.loads(response.content)["error"]["details"]
    except (ValueError, KeyError, TypeError):
        return False
    return bool(details) and all(detail.get("type") in BEYOND_JSON_SCHEMA for detail in details)


def rate_limited(response) -> bool:
    """A 429 of the tenant's rate limit (tokens configured): the request's rate refused, not its data."""
    return response.status_code == 429 and "Retry-After" in response.headers


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    """Keep every failure except a valid-looking request refused by a rule that no schema states, or by the
    rate limit."""
    return not (isinstance(failure, RejectedPositiveData)
                and (refused_by_a_rule_between_fields(response) or rate_limited(response)))
