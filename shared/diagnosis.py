"""The plain-words diagnosis of a run, from its traces: a verdict, the numbers behind it, the remedy.

Rules are checked in order of what most needs fixing first: a run that diverged
is reported as such even if its units also died on the way.
"""

import math

import numpy as np

from shared.spec import ExperimentSpec

VERDICTS = ("healthy", "vanishing", "exploding", "dead_units", "saturated", "diverged")

# Step-0 ratio of the first hidden layer's weight-gradient norm to the last's.
VANISHING_RATIO = 1e-3
EXPLODING_RATIO = 1e3
# Growth of the global gradient norm over the run that counts as exploding.
EXPLODING_GROWTH = 1e3
DEAD_MEAN = 0.5  # mean dead fraction over hidden layers at the end
DEAD_LAYER = 0.9  # or one hidden layer almost entirely dead
SATURATED_MEAN = 0.5
# Activations whose flat tails make "saturated" the right word; for the ReLU family
# a zero derivative on the negative side is normal operation, and dead units are the failure.
SATURATING = ("sigmoid", "tanh")


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def diagnose(spec: ExperimentSpec, trace: dict[str, np.ndarray], diverged_step: int | None) -> dict:
    """The verdict, the reasons with their numbers, the advice and the evidence for one run."""
    grad = trace["grad_norm"]
    depth = grad.shape[1] - 1 if grad.ndim == 2 else 0
    evidence: dict[str, float | int | None] = {}
    if len(grad) and depth >= 1:
        first, last = float(grad[0, 0]), float(grad[0, depth - 1])
        ratio = first / last if last > 0 else math.inf
        evidence["step0_grad_ratio"] = _finite(ratio)
        evidence["step0_grad_first"] = _finite(first)
        evidence["step0_grad_last_hidden"] = _finite(last)
    else:
        ratio = 1.0
    total = trace["total_grad_norm"]
    finite_total = total[np.isfinite(total)]
    growth = float(finite_total.max() / finite_total[0]) if len(finite_total) and finite_total[0] > 0 else 1.0
    evidence["grad_norm_growth"] = _finite(growth)
    hidden_dead = trace["dead_fraction"][-1, :depth] if len(grad) else np.zeros(0)
    hidden_sat = trace["saturated_fraction"][:, :depth] if len(grad) else np.zeros((0, 0))
    dead_mean = float(np.nanmean(hidden_dead)) if hidden_dead.size else 0.0
    dead_max = float(np.nanmax(hidden_dead)) if hidden_dead.size else 0.0
    sat_mean = float(np.nanmean(hidden_sat[-1])) if hidden_sat.size else 0.0
    evidence.update(dead_fraction_mean=_finite(dead_mean), saturated_fraction_mean=_finite(sat_mean))
    loss = trace["loss"]
    if len(loss):
        evidence["loss_first"] = _finite(float(loss[0]))
        evidence["loss_last"] = _finite(float(loss[-1]))

    if diverged_step is not None:
        verdict = "diverged"
        reasons = [f"the loss became NaN or infinite at step {diverged_step}"]
        if growth > 1:
            reasons.append(f"the global gradient norm grew {_fmt(growth)}x before that")
        advice = [
            f"lower the learning rate (try lr {_fmt(spec.lr / 10)})",
            "clip gradients by norm (clipping: {\"mode\": \"norm\", \"threshold\": 1.0})",
            "add normalization (norm: batchnorm)",
        ]
        evidence["diverged_step"] = diverged_step
    elif ratio > EXPLODING_RATIO or growth > EXPLODING_GROWTH:
        verdict = "exploding"
        reasons = []
        if ratio > EXPLODING_RATIO:
            reasons.append(
                f"at step 0 the first hidden layer's gradient is {_fmt(ratio)}x the last hidden layer's: "
                "it grows on the way back through the layers"
            )
        if growth > EXPLODING_GROWTH:
            reasons.append(f"the global gradient norm grew {_fmt(growth)}x during training")
        advice = [
            "use an initialization that keeps the signal's scale: xavier for tanh/sigmoid, kaiming for ReLU",
            "clip gradients by norm (clipping: {\"mode\": \"norm\", \"threshold\": 1.0})",
            f"lower the learning rate (try lr {_fmt(spec.lr / 10)})",
        ]
    elif dead_mean > DEAD_MEAN or dead_max >= DEAD_LAYER:
        verdict = "dead_units"
        reasons = [
            f"at the end {_fmt(100 * dead_mean)}% of hidden units (mean over layers) output zero for every "
            f"example; the worst layer has {_fmt(100 * dead_max)}% dead"
        ]
        advice = [
            "use leaky_relu (or elu/gelu), whose gradient is never exactly zero",
            f"lower the learning rate (try lr {_fmt(spec.lr / 10)}): large updates push units into the dead zone",
            "use kaiming_normal initialization and zero biases",
        ]
    elif spec.activation in SATURATING and sat_mean > SATURATED_MEAN:
        verdict = "saturated"
        reasons = [
            f"{_fmt(100 * sat_mean)}% of hidden {spec.activation} activations sit where the derivative is "
            "below 1% of its maximum: gradients cannot pass"
        ]
        advice = [
            "use xavier initialization (it keeps pre-activations in the activation's linear range)",
            "add normalization before the activation (norm: batchnorm)",
            "or switch to relu with kaiming initialization",
        ]
    elif ratio < VANISHING_RATIO:
        verdict = "vanishing"
        reasons = [
            f"at step 0 the first hidden layer's gradient is {_fmt(ratio)} of the last hidden layer's: "
            f"it shrinks about {_fmt(ratio ** (-1 / max(depth - 1, 1)))}x per layer on the way back"
        ]
        advice = [
            "use relu (or another ReLU-family activation) with kaiming initialization",
            "add normalization (norm: batchnorm) or residual connections (residual: true)",
            "use fewer layers",
        ]
    else:
        verdict = "healthy"
        reasons = [f"the step-0 gradient ratio first/last hidden layer is {_fmt(ratio)}, within [1e-3, 1e3]"]
        if len(loss) and math.isfinite(loss[0]) and math.isfinite(loss[-1]):
            reasons.append(f"the loss went from {_fmt(float(loss[0]))} to {_fmt(float(loss[-1]))}")
        advice = []
    return {"verdict": verdict, "reasons": reasons, "advice": advice, "evidence": evidence}
