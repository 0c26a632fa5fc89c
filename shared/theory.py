"""Mean-field theory of an MLP at initialization: what each layer's signal and gradient should do.

Poole et al. 2016 ("Exponential expressivity in deep neural networks through transient
chaos"), Schoenholz et al. 2017 ("Deep information propagation"). Weights of variance
sigma_w^2 / fan_in and biases of variance sigma_b^2 make a wide MLP's pre-activations
Gaussian, with a second moment q_l per layer:

    q_1     = sigma_w1^2 q_in + sigma_b1^2                (q_in: the input's mean square per feature)
    q_{l+1} = sigma_w^2 E[phi(h)^2] + sigma_b^2,          h ~ N(0, q_l)

Backpropagation multiplies the expected squared norm of the signal dL/dz (the trace's
`act_grad_norm`) by chi_l = sigma_w^2 E[phi'(h)^2] from layer l + 1 back to layer l, and
the weight gradient's squared norm is that signal's times the layer input's
(width E[phi(h_{l-1})^2], or the input's for the first layer). chi at the fixed point q*
of the q map sets the regime: ordered (< 1, gradients vanish), chaotic (> 1, they
explode) or critical. numpy only: the API process computes it too.
"""

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from shared.spec import ExperimentSpec

LEAKY_SLOPE = 0.01
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
# Critical: |ln chi*| below this, i.e. the gradient changes by less than a factor e over 20 layers.
CRITICAL_TOLERANCE = 0.05
# sklearn's 8x8 digits have 3 pixels that are 0 in every image; standardized, they stay 0.
DIGITS_FEATURES, DIGITS_CONSTANT = 64, 3
# The fixed-point search: layers iterated at most, and where q counts as 0 or unbounded.
FIXED_POINT_LAYERS = 1000
Q_TINY, Q_HUGE = 1e-20, 1e20
BOUNDED = ("sigmoid", "tanh")  # the activations whose q cannot grow without bound


def _erf(x: np.ndarray) -> np.ndarray:
    return np.frompyfunc(math.erf, 1, 1)(x).astype(float)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))  # no overflow for large |x|


def _gaussian_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + _erf(x / math.sqrt(2)))


# phi and phi' of every activation of the spec, as worker/activations.py builds them in torch.
ACTIVATIONS = {
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(float)),
    "leaky_relu": (lambda x: np.where(x > 0, x, LEAKY_SLOPE * x), lambda x: np.where(x > 0, 1.0, LEAKY_SLOPE)),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * _sigmoid(-x)),
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "gelu": (
        lambda x: x * _gaussian_cdf(x),
        lambda x: _gaussian_cdf(x) + x * np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi),
    ),
    "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1 + x * _sigmoid(-x))),
    "elu": (lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))), lambda x: np.exp(np.minimum(x, 0))),
    "selu": (
        lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0))),
        lambda x: SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0))),
    ),
    "softplus": (lambda x: np.logaddexp(0, x), _sigmoid),
    "linear": (lambda x: x, np.ones_like),
}

# Quadrature: Gauss-Legendre panels over the pre-activation h, split at h = 0 where relu,
# leaky_relu and selu have a kink (or a jump of phi'), and geometric in |h| so that both
# the density's scale (sqrt q, from 1e-10 to 1e10) and the activation's (about 1) are resolved.
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
PANEL_RATIO = 1.25
OUTER_RATIO = 1.5
ACTIVATION_SCALE = 8.0  # beyond |h| = 8 every phi is linear or flat to 1e-6
TAILS = 12.0  # standard deviations: the density beyond is below e^-72
S2_LARGEST = 1e200  # beyond, phi(h)^2 would overflow


def _panels(s: float, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights over the real line for h = g + b, g ~ N(0, s^2), b ~ U(-bound, bound)."""
    reach = bound + TAILS * s
    low = 1e-3 * min(max(s, bound), 1.0)
    # Fine up to where every activation is nearly linear or flat, coarser beyond.
    middle = min(reach, max(ACTIVATION_SCALE, 2 * low))
    fine = max(1, math.ceil(math.log(middle / low) / math.log(PANEL_RATIO)))
    coarse = max(0, math.ceil(math.log(reach / middle) / math.log(OUTER_RATIO)))
    edges = np.concatenate([
        [0.0], low * PANEL_RATIO ** np.arange(fine), middle * OUTER_RATIO ** np.arange(coarse + 1),
    ])
    if 0 < bound < edges[-1]:
        edges = np.union1d(edges, [bound])
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    right = (mid[:, None] + half[:, None] * _GL_NODES).ravel()
    weights = (half[:, None] * _GL_WEIGHTS).ravel()
    return np.concatenate([-right[::-1], right]), np.concatenate([weights[::-1], weights])


def expectations(activation: str, s2: float, bias_bound: float = 0.0) -> tuple[float, float]:
    """E[phi(h)^2] and E[phi'(h)^2] for h = g + b, g ~ N(0, s2) and b ~ U(-bias_bound, bias_bound)."""
    unbounded = s2 > S2_LARGEST and activation not in BOUNDED
    s = math.sqrt(min(max(s2, 1e-300), S2_LARGEST))  # phi'^2 has its limit there; phi^2 of most grows on
    x, w = _panels(s, bias_bound)
    if bias_bound > 0:
        # The density of a Gaussian plus a uniform bias: a box smoothed by the Gaussian.
        root = s * math.sqrt(2)
        density = (_erf((x + bias_bound) / root) - _erf((x - bias_bound) / root)) / (4 * bias_bound)
    else:
        density = np.exp(-0.5 * (x / s) ** 2) / (s * math.sqrt(2 * math.pi))
    w = w * density
    w /= w.sum()
    phi, dphi = ACTIVATIONS[activation]
    return math.inf if unbounded else float(w @ phi(x) ** 2), float(w @ dphi(x) ** 2)


@dataclass(frozen=True)
class Scales:
    """How an init draws one weighted layer: sigma_w^2 = fan_in Var(W), and the bias."""

    sigma_w2: float
    sigma_b2: float = 0.0
    bias_bound: float = 0.0  # PyTorch's default bias is U(-bound, bound); 0 for named inits


def layer_scales(init: str, fan_in: int, fan_out: int, init_std: float = 0.01) -> Scales:
    """sigma_w^2 and sigma_b^2 of one layer (fan_in -> fan_out) as the spec's init draws it."""
    if init == "default":
        # nn.Linear: kaiming_uniform_(a=sqrt 5) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and
        # the bias the same bound: both have variance 1 / (3 fan_in).
        bound = 1 / math.sqrt(fan_in)
        return Scales(1 / 3, bound**2 / 3, bound)
    variance = {
        "xavier_uniform": 2 / (fan_in + fan_out),
        "xavier_normal": 2 / (fan_in + fan_out),
        "kaiming_uniform": 2 / fan_in,
        "kaiming_normal": 2 / fan_in,
        "lecun_normal": 1 / fan_in,
        # Orthonormal rows or columns: a square layer keeps norms exactly (sigma_w^2 = 1).
        "orthogonal": 1 / max(fan_in, fan_out),
        "normal": init_std**2,
    }[init]
    return Scales(fan_in * variance)


def input_second_moment(dataset: str) -> float:
    """q_in: the mean over input features of E[x^2], for the MLP's datasets."""
    if dataset == "digits":  # standardized, but its constant pixels stay 0
        return (DIGITS_FEATURES - DIGITS_CONSTANT) / DIGITS_FEATURES
    return 1.0  # spirals: standardized; random: standard normal


def regime(chi: float) -> str:
    """ordered, critical or chaotic, from the backward gain at the fixed point."""
    if chi > 0 and abs(math.log(chi)) < CRITICAL_TOLERANCE:
        return "critical"
    return "ordered" if chi < 1 else "chaotic"


def not_applicable(spec: ExperimentSpec) -> str | None:
    """Why the MLP recursion does not describe this spec, or None where it does."""
    if spec.arch != "mlp":
        return f"the mean-field recursion here is for arch 'mlp', not {spec.arch!r}"
    if spec.norm != "none":
        return f"norm {spec.norm!r} rescales every block to unit variance: the q recursion does not apply"
    if spec.residual:
        return "residual connections add each block's input to its output: the plain recursion does not apply"
    return None


def _finite(value: float | None, digits: int = 6) -> float | None:
    """A JSON number of `digits` significant digits; None for what JSON cannot hold."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _log(value: float | None) -> float | None:
    """A log10 to 4 decimals (a 0.01 % difference); None for what JSON cannot hold."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 4) + 0.0  # + 0.0: no -0.0


@dataclass(frozen=True)
class Prediction:
    """Per hidden layer (input side first) and at the fixed point, for one MLP."""

    q: np.ndarray  # second moment of the pre-activation
    chi: np.ndarray  # sigma_w^2 E[phi'(h)^2] = E||delta_l||^2 / E||delta_{l+1}||^2
    act_grad_log10: np.ndarray  # log10 act_grad_norm relative to the last hidden layer
    grad_log10: np.ndarray  # log10 grad_norm relative to the last hidden layer
    q_star: float | None  # where q goes with depth; inf: without bound
    chi_star: float
    depth_scale_q: float | None  # layers over which q - q* shrinks by e
    scales: dict = field(default_factory=dict)

    @property
    def regime(self) -> str:
        return regime(self.chi_star)

    @property
    def depth_scale(self) -> float | None:
        """Layers over which the gradient's norm changes by a factor e: 1 / |ln chi*| (None: infinite)."""
        rate = abs(math.log(self.chi_star)) if self.chi_star > 0 else math.inf
        return 1 / rate if rate > 1e-6 else None

    def layers(self) -> list[dict]:
        """The per-layer fields of API.md, named as the trace's layers."""
        return [
            {
                "name": f"hidden.{i}",
                "q": _finite(self.q[i]),
                "chi": _finite(self.chi[i]),
                "act_grad_log10": _log(self.act_grad_log10[i]),
                "grad_log10": _log(self.grad_log10[i]),
                "regime": self.regime,
            }
            for i in range(len(self.q))
        ]

    def overview(self) -> dict:
        """The network's phase: regime, the fixed point and the depth scales."""
        return {
            "regime": self.regime,
            "chi_star": _finite(self.chi_star),
            "q_star": _finite(self.q_star) if self.q_star != math.inf else None,
            "depth_scale": _finite(self.depth_scale),
            "depth_scale_q": _finite(self.depth_scale_q),
        }


def _fixed_point(activation: str, scales: Scales, s2: float) -> tuple[float, float, float | None]:
    """Iterate the q map from a pre-activation's weight part s2: q*, chi* and the depth scale of q."""
    def q_map(s2: float) -> float:  # the weight part of the next layer's q
        return scales.sigma_w2 * expectations(activation, s2, scales.bias_bound)[0]

    q, settled = s2 + scales.sigma_b2, False
    for _ in range(FIXED_POINT_LAYERS):
        s2_next = q_map(s2)
        q_next = s2_next + scales.sigma_b2
        settled = abs(q_next - q) <= 1e-10 * q
        s2, q = s2_next, q_next
        if settled or not Q_TINY < q < Q_HUGE:
            break
    else:  # still moving slowly at the cap: marginal, so take the limit it creeps towards
        growing = q_map(s2) + scales.sigma_b2 > q
        if not growing and scales.sigma_b2 == 0 and ACTIVATIONS[activation][0](np.zeros(1))[0] == 0:
            s2 = q = Q_TINY
        elif growing and activation not in BOUNDED:
            s2 = q = Q_HUGE
    chi_star = scales.sigma_w2 * expectations(activation, s2, scales.bias_bound)[1]
    q_star = 0.0 if q <= Q_TINY else math.inf if q >= Q_HUGE else q
    depth_scale_q = None
    step = 1e-4 * s2
    # No slope to take where the weights' variance underflows to 0 (init_std 1e-300): step is 0.
    if (settled or q_star == 0) and step > 0:
        slope = (q_map(s2 + step) - q_map(s2 - step)) / (2 * step)
        if 0 < slope < 1 - 1e-9:
            depth_scale_q = -1 / math.log(slope)
    return q_star, chi_star, depth_scale_q


# Cached: the fixed point's quadratures cost milliseconds, more than a tiny run's training,
# and the runs of a sweep share their shape across seeds (predictions are never mutated).
@lru_cache(maxsize=256)
def predict(
    depth: int, width: int, activation: str, init: str, *, init_std: float = 0.01, inputs: int | None = None,
    q_in: float = 1.0,
) -> Prediction:
    """The mean-field profile of an MLP of `depth` hidden layers of `width` units at initialization."""
    inputs = width if inputs is None else inputs
    first = layer_scales(init, inputs, width, init_std)
    hidden = layer_scales(init, width, width, init_std)
    q, chi, input_square = [], [], []  # input_square: E||layer input||^2
    scales, mean_square, fan_in = first, q_in, inputs
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(depth):
            s2 = scales.sigma_w2 * mean_square
            phi2, dphi2 = expectations(activation, s2, scales.bias_bound)
            q.append(s2 + scales.sigma_b2)
            # The signal reaches this layer through the next hidden layer's weights (width -> width).
            chi.append(hidden.sigma_w2 * dphi2)
            input_square.append(fan_in * mean_square)
            scales, mean_square, fan_in = hidden, phi2, width
        q_star, chi_star, depth_scale_q = _fixed_point(activation, hidden, hidden.sigma_w2 * mean_square)
        # E||d_l||^2 = chi_l E||d_{l+1}||^2: the last hidden layer is the reference.
        log_chi = np.log10(np.asarray(chi))
        act_grad = 0.5 * np.concatenate([np.cumsum(log_chi[-2::-1])[::-1], [0.0]]) if depth > 1 else np.zeros(1)
        log_input = 0.5 * np.log10(np.asarray(input_square))
        grad = act_grad + log_input - log_input[-1]
    return Prediction(
        q=np.asarray(q), chi=np.asarray(chi), act_grad_log10=act_grad, grad_log10=grad,
        q_star=q_star, chi_star=chi_star, depth_scale_q=depth_scale_q,
        scales={
            "sigma_w2": hidden.sigma_w2, "sigma_b2": hidden.sigma_b2,
            "first_layer": {"sigma_w2": first.sigma_w2, "sigma_b2": first.sigma_b2},
            "inputs": inputs, "q_in": q_in,
        },
    )


def predict_spec(spec: ExperimentSpec) -> Prediction:
    """The prediction for an MLP spec: its depth, width, activation, init and dataset's input."""
    inputs, _ = spec.dims()
    return predict(
        spec.depth, spec.width, spec.activation, spec.init,
        init_std=spec.init_std, inputs=inputs, q_in=input_second_moment(spec.dataset),
    )


def _log10_relative(row: np.ndarray, depth: int) -> list[float | None]:
    """log10 of each hidden layer's value over the last hidden layer's; None where it has no logarithm."""
    values = np.asarray(row[:depth], dtype=float)
    reference = values[-1]
    out = []
    for value in values:
        finite = math.isfinite(value) and math.isfinite(reference) and value > 0 and reference > 0
        out.append(math.log10(value / reference) if finite else None)
    return out


def _deviation(predicted: np.ndarray, measured: list[float | None]) -> dict[str, float | None]:
    """RMS and largest |predicted - measured| in log10 over the hidden layers but the last (0 in both)."""
    gaps = [abs(p - m) for p, m in zip(predicted[:-1], measured[:-1]) if m is not None and math.isfinite(p)]
    if not gaps:
        return {"rms": None, "max": None}
    return {"rms": _log(math.sqrt(sum(g * g for g in gaps) / len(gaps))), "max": _log(max(gaps))}


def compare(spec: ExperimentSpec, trace: dict[str, np.ndarray]) -> dict:
    """The summary's `theory`: predicted beside measured at step 0 (trace row 0), with the deviation.

    `trace` holds `act_grad_norm` and `grad_norm` of shape (rows, layers), the output layer last.
    """
    reason = not_applicable(spec)
    if reason is not None:
        return {"applies": False, "note": reason}
    prediction = predict_spec(spec)
    rows = trace["act_grad_norm"]
    measured = {"act_grad_log10": [None] * spec.depth, "grad_log10": [None] * spec.depth}
    if len(rows):
        measured = {
            "act_grad_log10": _log10_relative(trace["act_grad_norm"][0], spec.depth),
            "grad_log10": _log10_relative(trace["grad_norm"][0], spec.depth),
        }
    layers = []
    for i, layer in enumerate(prediction.layers()):
        del layer["regime"]  # the network's, given once below
        layer["measured_act_grad_log10"] = _log(measured["act_grad_log10"][i])
        layer["measured_grad_log10"] = _log(measured["grad_log10"][i])
        layers.append(layer)
    return {
        "applies": True,
        **prediction.overview(),
        "layers": layers,
        "deviation": {
            "act_grad_log10": _deviation(prediction.act_grad_log10, measured["act_grad_log10"]),
            "grad_log10": _deviation(prediction.grad_log10, measured["grad_log10"]),
        },
    }


def report(spec: ExperimentSpec) -> dict:
    """The answer of GET /api/v1/theory: the prediction for the spec's network, per hidden layer and overall."""
    asked = spec.model_dump(include={"arch", "depth", "width", "activation", "init", "init_std", "dataset", "norm",
                                     "residual"})
    reason = not_applicable(spec)
    if reason is not None:
        return {"spec": asked, "applies": False, "note": reason, "layers": []}
    prediction = predict_spec(spec)
    return {
        "spec": asked,
        "applies": True,
        **prediction.scales,
        "layers": prediction.layers(),
        **prediction.overview(),
        "critical_tolerance": CRITICAL_TOLERANCE,
    }
