"""The plain-words diagnosis of a run, from its traces: a verdict, the numbers behind it, the remedy.

Rules are checked in order of what most needs fixing first, causes before
symptoms: a run that diverged is reported as such even if its units also died on
the way; dead or saturated units before the exploding or vanishing gradient they cause.
"""

import math

import numpy as np

from shared.spec import ExperimentSpec

VERDICTS = ("healthy", "vanishing", "exploding", "dead_units", "saturated", "diverged")

# Step-0 ratios of the first hidden layer to the last: of the weight-gradient norms
# (`grad_norm`), and of the backpropagated signal (`act_grad_norm`, the gradient with
# respect to the pre-activations). The second is what mean-field theory predicts
# (chi per layer); the first is what the optimizer sees.
VANISHING_RATIO = 1e-3
VANISHING_SIGNAL = 1e-2
EXPLODING_RATIO = 1e3
EXPLODING_SIGNAL = 1e2
# Growth of the global gradient norm over the run that counts as exploding.
EXPLODING_GROWTH = 1e3
DEAD_MEAN = 0.5  # mean dead fraction over hidden layers at the end
DEAD_LAYER = 0.9  # or one hidden layer almost entirely dead
SATURATED_MEAN = 0.5
# Activations whose flat tails make "saturated" the right word; for the ReLU family
# a zero derivative on the negative side is normal operation, and dead units are the failure.
SATURATING = ("sigmoid", "tanh")
# A loss that fell by less than this share of its first value has barely moved.
STALLED = 0.02


def _number(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _ratio(row: np.ndarray, depth: int) -> float | None:
    """First hidden layer over last hidden layer, or None where it has no meaning."""
    if depth < 2:
        return None
    first, last = float(row[0]), float(row[depth - 1])
    if not (math.isfinite(first) and math.isfinite(last)) or last <= 0:
        return None
    return first / last


def evidence(trace: dict[str, np.ndarray]) -> dict[str, float | None]:
    """The numbers the rules look at, from a run's whole trace (rows x layers, output layer last)."""
    grad = trace["grad_norm"]
    depth = grad.shape[1] - 1 if grad.ndim == 2 and len(grad) else 0
    found: dict[str, float | None] = {"depth": depth}
    if not depth:
        return found
    found["step0_grad_ratio"] = _ratio(grad[0], depth)
    found["step0_signal_ratio"] = _ratio(trace["act_grad_norm"][0], depth)
    total = trace["total_grad_norm"][np.isfinite(trace["total_grad_norm"])]
    found["grad_norm_growth"] = _number(total.max() / total[0]) if len(total) and total[0] > 0 else None
    dead = trace["dead_fraction"][-1, :depth]
    saturated = trace["saturated_fraction"][-1, :depth]
    found["dead_fraction_mean"] = _number(dead.mean())
    found["dead_fraction_max"] = _number(dead.max())
    found["saturated_fraction_mean"] = _number(saturated.mean())
    found["loss_first"] = _number(trace["loss"][0])
    found["loss_last"] = _number(trace["loss"][-1])
    return found


def _above(value: float | None, bound: float) -> bool:
    return value is not None and value > bound


def _below(value: float | None, bound: float) -> bool:
    return value is not None and value < bound


def diagnose(spec: ExperimentSpec, trace: dict[str, np.ndarray], diverged_step: int | None) -> dict:
    """The verdict, the reasons with their numbers, the advice and the evidence for one run."""
    found = evidence(trace)
    depth = found["depth"]
    grad_ratio, signal_ratio = found.get("step0_grad_ratio"), found.get("step0_signal_ratio")
    growth = found.get("grad_norm_growth")
    smaller_lr = f"lower the learning rate (try lr {spec.lr / 10:.3g})"
    clip = 'clip gradients by norm (clipping: {"mode": "norm", "threshold": 1.0})'
    ratios = (
        f"at step 0 the first hidden layer's weight gradient is {_fmt(grad_ratio)}x the last hidden "
        f"layer's, and the backpropagated signal {_fmt(signal_ratio)}x"
    )

    if diverged_step is not None:
        verdict = "diverged"
        reasons = [f"the loss became NaN or infinite at step {diverged_step}"]
        if _above(growth, 1):
            reasons.append(f"the global gradient norm grew {_fmt(growth)}x before that")
        advice = [smaller_lr, clip, "add normalization (norm: batchnorm)"]
        found["diverged_step"] = diverged_step
    elif spec.activation not in SATURATING and (
        _above(found.get("dead_fraction_mean"), DEAD_MEAN) or (found.get("dead_fraction_max") or 0) >= DEAD_LAYER
    ):
        verdict = "dead_units"
        reasons = [
            f"at the end {_fmt(100 * found['dead_fraction_mean'])}% of hidden units (mean over layers) output "
            f"zero or less for every example; the worst layer has {_fmt(100 * found['dead_fraction_max'])}% dead"
        ]
        advice = [
            "use leaky_relu (or elu/gelu), whose gradient is never exactly zero",
            smaller_lr + ": large updates push units into the dead zone",
            "use kaiming_normal initialization (zero biases)",
        ]
    elif spec.activation in SATURATING and _above(found.get("saturated_fraction_mean"), SATURATED_MEAN):
        verdict = "saturated"
        reasons = [
            f"{_fmt(100 * found['saturated_fraction_mean'])}% of hidden {spec.activation} activations sit where "
            "the derivative is below 1% of its maximum: the gradient cannot pass them",
            ratios,
        ]
        advice = [
            "use xavier initialization: it keeps pre-activations in the activation's linear range",
            "add normalization before the activation (norm: batchnorm)",
            "or switch to relu with kaiming initialization",
        ]
    elif _above(grad_ratio, EXPLODING_RATIO) or _above(signal_ratio, EXPLODING_SIGNAL) or _above(
        growth, EXPLODING_GROWTH
    ):
        verdict = "exploding"
        reasons = []
        if _above(grad_ratio, EXPLODING_RATIO) or _above(signal_ratio, EXPLODING_SIGNAL):
            reasons.append(ratios + ": the gradient grows on its way back to the input")
        if _above(growth, EXPLODING_GROWTH):
            reasons.append(f"the global gradient norm grew {_fmt(growth)}x during training")
        advice = [
            "use an initialization that keeps the signal's scale: xavier for tanh/sigmoid, kaiming for ReLU",
            clip,
            smaller_lr,
        ]
    elif _below(grad_ratio, VANISHING_RATIO) or _below(signal_ratio, VANISHING_SIGNAL):
        verdict = "vanishing"
        per_layer = signal_ratio ** (-1 / (depth - 1)) if signal_ratio else None
        reasons = [ratios + f": the signal shrinks about {_fmt(per_layer)}x per layer on its way back"]
        advice = [
            "use relu (or another ReLU-family activation) with kaiming initialization",
            "add normalization (norm: batchnorm) or residual connections (residual: true)",
            "use fewer layers",
        ]
    else:
        verdict = "healthy"
        reasons = [ratios + ": the gradient reaches every layer"] if depth >= 2 else []
        advice = []
    first, last = found.get("loss_first"), found.get("loss_last")
    if verdict != "diverged" and first is not None and last is not None:
        reasons.append(f"the loss went from {_fmt(first)} to {_fmt(last)}")
        if verdict == "healthy" and last > first * (1 - STALLED):
            advice.append("the loss barely moved: try a larger learning rate, adam, or more steps")
    return {"verdict": verdict, "reasons": reasons, "advice": advice, "evidence": found}
