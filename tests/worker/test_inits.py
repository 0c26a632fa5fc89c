"""Every init: the measured spread of the weights against its formula, and the biases."""

import math

import pytest
import torch
from torch import nn

from shared.spec import ExperimentSpec
from worker.inits import apply_init, expected_std
from worker.models import build_model

INITS = ["default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
         "lecun_normal", "orthogonal", "normal"]


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("shape", [(512, 256), (256, 512)])
def test_weight_std_matches_the_formula(init, shape):
    torch.manual_seed(0)
    fan_out, fan_in = shape
    layer = nn.Linear(fan_in, fan_out)
    apply_init([layer], init, init_std=0.03)
    std = layer.weight.detach().std().item()
    assert std == pytest.approx(expected_std(init, fan_in, fan_out, 0.03), rel=0.02)
    assert abs(layer.weight.detach().mean().item()) < 0.05 * std
    if init == "default":
        # PyTorch's own: biases from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), not zero.
        assert layer.bias.detach().abs().max().item() <= 1 / math.sqrt(fan_in)
        assert (layer.bias != 0).all()
    else:
        assert (layer.bias == 0).all()


def test_the_formulas_are_the_papers():
    assert expected_std("xavier_normal", 100, 300) == pytest.approx(math.sqrt(2 / 400))
    assert expected_std("kaiming_normal", 100, 300) == pytest.approx(math.sqrt(2 / 100))
    assert expected_std("lecun_normal", 100, 300) == pytest.approx(0.1)
    assert expected_std("normal", 100, 300, 0.01) == 0.01


def test_orthogonal_rows_are_orthonormal():
    layer = nn.Linear(128, 64)
    apply_init([layer], "orthogonal")
    w = layer.weight.detach()
    torch.testing.assert_close(w @ w.T, torch.eye(64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("init", INITS)
def test_the_model_initializes_every_weighted_layer_and_leaves_norms_alone(init):
    spec = ExperimentSpec(depth=3, width=256, init=init, init_std=0.05, norm="layernorm", dataset="random")
    model = build_model(spec)
    for layer in model.weighted_layers():
        fan_out, fan_in = layer.weight.shape
        if fan_out * fan_in >= 256 * 256:
            assert layer.weight.detach().std().item() == pytest.approx(
                expected_std(init, fan_in, fan_out, 0.05), rel=0.03
            )
        assert (layer.bias == 0).all() != (init == "default")
    for norm in model.norms:
        assert (norm.weight == 1).all() and (norm.bias == 0).all()


def test_the_model_is_the_same_for_the_same_seed_and_leaves_global_rng_alone():
    spec = ExperimentSpec(depth=2, width=16, seed=-5)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first, second = build_model(spec), build_model(spec)
    assert torch.equal(torch.random.get_rng_state(), before)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    other = build_model(spec.model_copy(update={"seed": 6}))
    assert not torch.equal(first.layers[0].weight, other.layers[0].weight)
