"""The hidden activations of the spec: each as a module, its derivative, and that derivative's maximum.

The tracer needs the derivative to tell saturated units: a unit is saturated where
|phi'(z)| < 1 % of max phi'. The maxima are suprema over the real line (softplus and
selu approach theirs without reaching it) and are checked numerically in the tests.

For every activation but GELU and SiLU, phi' is a monotone function of the output
phi(z) on each side, so "saturated" is also "output <= low or output >= high". The
tracer uses those bounds where they exist: it then reads the activations it already
holds instead of a second copy of their inputs. The tests check that both agree.
"""

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

LEAKY_SLOPE = 0.01
# SELU's constants, as torch.nn.SELU uses them (Klambauer et al. 2017).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
# max of d/dx x*Phi(x) is at x = sqrt(2): Phi(sqrt 2) + sqrt(2) * phi(sqrt 2).
GELU_MAX = 0.5 * (1 + math.erf(1.0)) + math.sqrt(2) * math.exp(-1.0) / math.sqrt(2 * math.pi)
# max of d/dx x*sigmoid(x), found numerically at x ~ 2.39936 (no closed form).
SILU_MAX = 1.0998393201288668
# sup of SELU's slope, approached from below 0: scale * alpha * e^z -> scale * alpha.
SELU_MAX = SELU_SCALE * SELU_ALPHA
SATURATION = 0.01  # saturated: |phi'| below this share of max |phi'|
INF = math.inf

# Overwrites its argument with phi'(argument) and returns it. In place because the
# tracer calls it on a scratch copy of every block's activation input at once.
InplaceDerivative = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Activation:
    """One activation: how to build it, its derivative, and the derivative's supremum."""

    name: str
    module: Callable[[], nn.Module]
    derivative_: InplaceDerivative
    derivative_max: float
    # Saturated exactly where the output is <= low or >= high; None where the output
    # does not tell (GELU, SiLU). (-inf, inf): never saturated.
    saturated_output: tuple[float, float] | None
    # phi' >= 0 everywhere, so |phi'| needs no abs(); GELU and SiLU dip below zero.
    monotonic: bool = True

    def derivative(self, z: Tensor) -> Tensor:
        """phi'(z) as a new tensor."""
        return self.derivative_(z.clone())

    def saturation_threshold(self) -> float:
        """Below this |phi'| a unit counts as saturated: 1 % of the largest slope."""
        return SATURATION * self.derivative_max

    def saturated_intervals(self) -> tuple[list[tuple[float, float]], bool]:
        """Where a value is saturated, as closed intervals, and whether they are on the input (else the output).

        From the output bounds where they exist; for GELU and SiLU, the intervals of the
        input where |phi'| < threshold, solved numerically (`saturated_inputs`).
        """
        if self.saturated_output is None:
            return saturated_inputs(self.name), True
        low, high = self.saturated_output
        intervals = [(-INF, low)] if low > -INF else []
        return intervals + ([(high, INF)] if high < INF else []), False


def _relu_derivative_(z: Tensor) -> Tensor:
    # An in-place comparison writes 1./0. into the float tensor itself.
    return z.gt_(0)


def _leaky_relu_derivative_(z: Tensor) -> Tensor:
    return z.gt_(0).mul_(1 - LEAKY_SLOPE).add_(LEAKY_SLOPE)


def _sigmoid_derivative_(z: Tensor) -> Tensor:
    s = z.sigmoid_()
    return s.addcmul_(s, s, value=-1)  # s - s^2


def _tanh_derivative_(z: Tensor) -> Tensor:
    t = z.tanh_()
    return t.mul_(t).neg_().add_(1)  # 1 - tanh^2


def _gelu_derivative_(z: Tensor) -> Tensor:
    # The exact (erf) GELU that nn.GELU() computes: Phi(z) + z * phi(z).
    cdf = torch.erf(z * (1 / math.sqrt(2))).add_(1).mul_(0.5)
    pdf = torch.exp(z.square().mul_(-0.5)).mul_(1 / math.sqrt(2 * math.pi))
    return z.mul_(pdf).add_(cdf)


def _silu_derivative_(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    # s * (1 + z * (1 - s))
    return z.mul_(1 - s).add_(1).mul_(s)


def _elu_derivative_(z: Tensor) -> Tensor:
    # alpha = 1: e^z on the negative side, and e^0 = 1 on the positive one.
    return z.clamp_(max=0).exp_()


def _selu_derivative_(z: Tensor) -> Tensor:
    positive = z > 0
    slope = z.clamp_(max=0).exp_().mul_(SELU_MAX)
    return slope.masked_fill_(positive, SELU_SCALE)


def _softplus_derivative_(z: Tensor) -> Tensor:
    return z.sigmoid_()


def _linear_derivative_(z: Tensor) -> Tensor:
    return z.fill_(1)


# Where phi' < SATURATION * max phi', solved for the output a = phi(z):
# sigmoid: a (1 - a) < t/4 outside the roots (1 -+ sqrt(1 - t)) / 2;  tanh: 1 - a^2 < t;
# softplus: phi' = 1 - e^-a < t;  elu: phi' = a + 1 on a <= 0;  selu: phi' = a + scale alpha on a <= 0.
_SIGMOID_ROOT = math.sqrt(1 - SATURATION) / 2
_TANH_BOUND = math.sqrt(1 - SATURATION)
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("relu", nn.ReLU, _relu_derivative_, 1.0, (0.0, INF)),
        Activation("leaky_relu", lambda: nn.LeakyReLU(LEAKY_SLOPE), _leaky_relu_derivative_, 1.0, (-INF, INF)),
        Activation("sigmoid", nn.Sigmoid, _sigmoid_derivative_, 0.25, (0.5 - _SIGMOID_ROOT, 0.5 + _SIGMOID_ROOT)),
        Activation("tanh", nn.Tanh, _tanh_derivative_, 1.0, (-_TANH_BOUND, _TANH_BOUND)),
        Activation("gelu", nn.GELU, _gelu_derivative_, GELU_MAX, None, monotonic=False),
        Activation("silu", nn.SiLU, _silu_derivative_, SILU_MAX, None, monotonic=False),
        Activation("elu", nn.ELU, _elu_derivative_, 1.0, (SATURATION - 1, INF)),
        Activation("selu", nn.SELU, _selu_derivative_, SELU_MAX, ((SATURATION - 1) * SELU_MAX, INF)),
        # softplus' derivative is the sigmoid: it tends to 1 and never reaches it.
        Activation("softplus", nn.Softplus, _softplus_derivative_, 1.0, (-math.log1p(-SATURATION), INF)),
        Activation("linear", nn.Identity, _linear_derivative_, 1.0, (-INF, INF)),
    )
}


@functools.cache
def saturated_inputs(name: str, span: float = 40.0, step: float = 1e-3) -> list[tuple[float, float]]:
    """The closed intervals of z where |phi'(z)| < threshold, for an activation whose output does not tell.

    Sign changes of |phi'(z)| - threshold on a float64 grid over [-span, span], each refined by
    bisection to float64 precision; outside the grid phi' has reached its limits (0 or 1).
    """
    activation = ACTIVATIONS[name]
    threshold = activation.saturation_threshold()

    def below(z: Tensor) -> Tensor:
        return activation.derivative_(z.clone()).abs_() < threshold

    grid = torch.arange(-span, span + step, step, dtype=torch.float64)
    inside = below(grid)
    edges = torch.nonzero(inside[1:] != inside[:-1]).flatten().tolist()
    crossings = []
    for i in edges:
        low, high = grid[i].item(), grid[i + 1].item()
        for _ in range(60):
            middle = (low + high) / 2
            if below(torch.tensor([middle], dtype=torch.float64)).item() == inside[i].item():
                low = middle
            else:
                high = middle
        crossings.append(low if inside[i] else high)  # the last z inside, or the first
    starts = ([-INF] if inside[0] else []) + [z for z, i in zip(crossings, edges) if not inside[i]]
    ends = [z for z, i in zip(crossings, edges) if inside[i]] + ([INF] if inside[-1] else [])
    return list(zip(starts, ends))


def get_activation(name: str) -> Activation:
    """The activation that a spec names; the spec has already resolved aliases."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}") from None
