"""Each activation's derivative, its maximum and its saturated outputs, against autograd and a dense grid."""

import pytest
import torch

from worker.activations import ACTIVATIONS, get_activation

GRID = torch.linspace(-40.0, 40.0, 400_001, dtype=torch.float64)


def autograd_slope(name: str, z: torch.Tensor) -> torch.Tensor:
    probe = z.clone().requires_grad_()
    (slope,) = torch.autograd.grad(ACTIVATIONS[name].module()(probe).sum(), probe)
    return slope


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_derivative_is_the_modules_own(name):
    z = GRID[GRID != 0]  # the kinks' one-sided conventions may differ at 0 itself
    # rtol: nn.Softplus turns into the identity above z = 20, where sigmoid(z) = 1 - 2e-9.
    torch.testing.assert_close(ACTIVATIONS[name].derivative(z), autograd_slope(name, z), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_derivative_leaves_its_argument_alone(name):
    z = torch.linspace(-3, 3, 7)
    before = z.clone()
    ACTIVATIONS[name].derivative(z)
    assert torch.equal(z, before)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_derivative_max_is_the_supremum_of_the_slope(name):
    activation = ACTIVATIONS[name]
    largest = activation.derivative(GRID).abs().max().item()
    assert largest <= activation.derivative_max * (1 + 1e-9)
    assert largest >= activation.derivative_max * (1 - 1e-4)


def test_the_maxima_of_the_brief():
    expected = {"relu": 1, "leaky_relu": 1, "sigmoid": 0.25, "tanh": 1, "gelu": 1.1289, "silu": 1.0998,
                "elu": 1, "selu": 1.7581, "softplus": 1, "linear": 1}
    assert {n: round(a.derivative_max, 4) for n, a in ACTIVATIONS.items()} == expected


@pytest.mark.parametrize("name", sorted(n for n, a in ACTIVATIONS.items() if a.saturated_output is not None))
def test_saturated_outputs_are_where_the_slope_is_below_one_percent(name):
    activation = ACTIVATIONS[name]
    by_slope = activation.derivative(GRID).abs() < activation.saturation_threshold()
    low, high = activation.saturated_output
    output = activation.module()(GRID)
    by_output = (output <= low) | (output >= high)
    assert torch.equal(by_slope, by_output)


@pytest.mark.parametrize("name", sorted(n for n, a in ACTIVATIONS.items() if a.monotonic))
def test_monotonic_activations_have_no_negative_slope(name):
    assert (ACTIVATIONS[name].derivative(GRID) >= 0).all()


def test_saturation_regions_are_the_textbook_ones():
    def saturated(name, z):
        activation = ACTIVATIONS[name]
        return bool(activation.derivative(torch.tensor([z])).abs() < activation.saturation_threshold())

    assert saturated("relu", -1.0) and not saturated("relu", 1.0)
    assert saturated("sigmoid", 8.0) and saturated("sigmoid", -8.0) and not saturated("sigmoid", 3.0)
    assert saturated("tanh", 4.0) and not saturated("tanh", 2.0)
    assert not saturated("leaky_relu", -100.0)
    assert not saturated("linear", 1e6)


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="swish"):
        get_activation("swish")  # aliases are the spec's business, resolved before this
