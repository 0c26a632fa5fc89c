"""GET /openapi.json: every route of the app is in it, every reference and link resolves, and it
says what the API checks (test_schemathesis.py holds the app to it)."""

import re

import pytest

DOCUMENT = "/openapi.json"
# Flask answers these for every route by itself.
IMPLICIT = {"HEAD", "OPTIONS"}


@pytest.fixture
def document(client) -> dict:
    response = client.get(DOCUMENT)
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def test_every_route_of_the_app_is_documented_with_its_methods(app, document):
    documented = {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item if method != "parameters"
    }
    routed = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method)
        for rule in app.url_map.iter_rules() if rule.endpoint != "static"
        for method in rule.methods - IMPLICIT
    }
    assert documented == routed
    assert document["openapi"].startswith("3.1")


def test_operation_ids_are_unique_and_links_name_them(document):
    operations = [operation for item in document["paths"].values()
                  for method, operation in item.items() if method != "parameters"]
    ids = [operation["operationId"] for operation in operations]
    assert len(ids) == len(set(ids))
    links = [link for operation in operations for response in operation["responses"].values()
             for link in response.get("links", {}).values()]
    assert {link["operationId"] for link in links} >= {"getExperiment", "cancelExperiment", "deleteExperiment",
                                                        "getTraces", "getSweep", "cancelSweep", "deleteSweep"}
    assert set(link["operationId"] for link in links) <= set(ids)


def test_every_reference_resolves(document):
    schemas = document["components"]["schemas"]
    text = str(document)
    refs = set(re.findall(r"#/components/schemas/(\w+)", text))
    assert refs and refs <= set(schemas)
    assert "#/$defs/" not in text


def test_every_route_with_redis_documents_503_and_every_body_its_errors(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters" or not path.startswith("/api/v1/") or path == "/api/v1/theory":
                continue
            assert "503" in operation["responses"], (method, path)
            if "requestBody" in operation:
                assert {"400", "413", "415", "422"} <= set(operation["responses"]), (method, path)
            if "{" in path:
                assert "404" in operation["responses"], (method, path)


def test_the_spec_schema_states_bounds_rules_and_refuses_unknown_fields(document):
    spec = document["components"]["schemas"]["ExperimentSpec"]
    assert spec["additionalProperties"] is False
    assert spec["properties"]["depth"]["maximum"] >= 100 and spec["properties"]["depth"]["minimum"] == 1
    assert "swish" in spec["properties"]["activation"]["enum"] and "he_normal" in spec["properties"]["init"]["enum"]
    assert spec["x-limits"]["cost"] > 0 and "cost" in spec["description"]
    rules = str(spec["allOf"])
    assert "batchnorm" in rules and "rnn" in rules and "copy_first" in rules


def test_the_document_is_built_once(client, app):
    first = client.get(DOCUMENT).get_json()
    assert client.get(DOCUMENT).get_json() == first
    assert app.extensions["gradtrace.openapi"] is not None
