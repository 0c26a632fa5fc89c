"""GET /api/v1/theory: the mean-field prediction, checked as a spec is checked."""

import math

import pytest

from shared.theory import predict


def test_the_prediction_per_hidden_layer(client):
    response = client.get("/api/v1/theory?depth=4&width=128&activation=tanh&init=xavier_normal")
    assert response.status_code == 200
    body = response.get_json()
    assert body["applies"] is True and body["regime"] == "critical"
    layers = body["layers"]
    assert [layer["name"] for layer in layers] == ["hidden.0", "hidden.1", "hidden.2", "hidden.3"]
    assert set(layers[0]) >= {"q", "chi", "act_grad_log10", "regime"}
    assert layers[-1]["act_grad_log10"] == 0 and all(layer["regime"] == "critical" for layer in layers)
    expected = predict(4, 128, "tanh", "xavier_normal")
    assert [layer["q"] for layer in layers] == pytest.approx(expected.q, rel=1e-5)
    assert [layer["chi"] for layer in layers] == pytest.approx(expected.chi, rel=1e-5)
    assert [layer["act_grad_log10"] for layer in layers] == pytest.approx(expected.act_grad_log10, abs=1e-4)
    # sigma_w^2 = 1, no bias, inputs of unit variance: q_1 = 1, and chi = E[tanh'(h)^2] < 1 there.
    assert layers[0]["q"] == pytest.approx(1.0) and layers[0]["chi"] < 1


def test_relu_with_he_init_is_critical_and_flat(client):
    body = client.get("/api/v1/theory?depth=6&width=256&activation=relu&init=kaiming_normal").get_json()
    assert body["regime"] == "critical" and body["chi_star"] == 1
    assert all(layer["chi"] == pytest.approx(1) and layer["act_grad_log10"] == 0 for layer in body["layers"])


def test_defaults_are_the_specs(client):
    body = client.get("/api/v1/theory").get_json()
    assert body["spec"]["depth"] == 8 and body["spec"]["width"] == 64
    assert body["spec"]["activation"] == "relu" and body["spec"]["init"] == "default"
    # PyTorch's default: sigma_w^2 = 1/3 and a bias of variance 1 / (3 fan_in): ordered, chi* = 1/6.
    assert body["sigma_w2"] == pytest.approx(1 / 3) and body["sigma_b2"] == pytest.approx(1 / 192)
    assert body["regime"] == "ordered" and body["chi_star"] == pytest.approx(1 / 6, rel=1e-5)
    assert body["depth_scale"] == pytest.approx(1 / math.log(6), rel=1e-5)


@pytest.mark.parametrize("alias, name", [("activation=swish", "silu"), ("init=he_normal", "kaiming_normal"),
                                         ("init=he_uniform", "kaiming_uniform")])
def test_aliases_are_the_specs(client, alias, name):
    body = client.get(f"/api/v1/theory?{alias}").get_json()
    assert name in (body["spec"]["activation"], body["spec"]["init"])


def test_init_std_and_dataset(client):
    # sigma_w^2 = width * std^2 = 100 * 0.2^2 = 4 > 1: tanh is chaotic.
    body = client.get("/api/v1/theory?width=100&activation=tanh&init=normal&init_std=0.2").get_json()
    assert body["sigma_w2"] == pytest.approx(4) and body["regime"] == "chaotic"
    digits = client.get("/api/v1/theory?dataset=digits&init=xavier_normal&activation=linear").get_json()
    assert digits["inputs"] == 64 and digits["q_in"] == pytest.approx(61 / 64)
    assert digits["layers"][0]["q"] == pytest.approx(61 / 64, rel=1e-5)


@pytest.mark.parametrize(
    "query, loc",
    [
        ("depth=0", "depth"),
        ("depth=201", "depth"),
        ("width=5000", "width"),
        ("depth=three", "depth"),
        ("depth=2.5", "depth"),
        ("init_std=-1", "init_std"),
        ("init_std=inf", "init_std"),
        ("activation=relu6", "activation"),
        ("init=glorot", "init"),
        ("dataset=mnist", "dataset"),
        ("residual=maybe", "residual"),
        ("activaton=tanh", "activaton"),
    ],
)
def test_invalid_queries_are_422_naming_the_parameter(client, query, loc):
    response = client.get(f"/api/v1/theory?{query}")
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["loc"] == ["query", loc]
    assert error["message"].startswith(f"query.{loc}: ")


@pytest.mark.parametrize("query", ["norm=batchnorm", "norm=layernorm", "residual=true"])
def test_where_the_recursion_does_not_apply_it_says_so(client, query):
    body = client.get(f"/api/v1/theory?{query}").get_json()
    assert body["applies"] is False and body["note"] and body["layers"] == []


def test_the_largest_network_within_the_bounds(client):
    response = client.get("/api/v1/theory?depth=200&width=4096&activation=gelu&init=kaiming_normal")
    assert response.status_code == 200 and len(response.get_json()["layers"]) == 200


def test_it_needs_no_redis(down_app):
    response = down_app.test_client().get("/api/v1/theory?depth=3")
    assert response.status_code == 200 and len(response.get_json()["layers"]) == 3
