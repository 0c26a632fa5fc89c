"""The plain-words diagnosis of a run, from its traces: a verdict, the numbers behind it, the remedy.

Rules are checked in order of what most needs fixing first, causes before
symptoms: a run that diverged is reported as such even if its units also died on
the way; dead or saturated units before the exploding or vanishing gradient they
cause. Each finding carries a spec change that can be submitted as is.

A finding's reasons and advice are texts of shared/diagnosis_texts.py by name, with their
numbers: the summary stores them in English, and `explain` words a stored verdict again, in
any language, from the run's spec and evidence alone, so old and cached records read the
same figures in every language.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from shared.diagnosis_texts import DEFAULT, Text, render, verdict_text
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
# Clipping that changes the gradient this often is a smaller learning rate in disguise.
CLIPPED_MOSTLY = 0.9
NORM_CLIPPING = {"mode": "norm", "threshold": 1.0}

# The init that keeps each activation's signal at scale (Glorot & Bengio 2010; He et al. 2015;
# Klambauer et al. 2017 for SELU).
MATCHED_INIT = {"sigmoid": "xavier_normal", "tanh": "xavier_normal", "linear": "xavier_normal",
                "selu": "lecun_normal"}
# Through time (arch rnn): the ratio of the loss gradient at the first time step's hidden
# state to the last's, at step 0 and at the end (Bengio et al. 1994; Pascanu et al. 2013).
VANISHING_TIME = 1e-3
EXPLODING_TIME = 1e3


def matched_init(activation: str) -> str:
    return MATCHED_INIT.get(activation, "kaiming_normal")


def effective_activation(spec: ExperimentSpec) -> str:
    """The hidden nonlinearity that the statistics see: recurrent cells squash with tanh whatever `activation` says."""
    return "tanh" if spec.arch == "rnn" else spec.activation


@dataclass
class Finding:
    verdict: str
    reasons: list[Text]
    advice: list[Text] = field(default_factory=list)
    fix: dict = field(default_factory=dict)  # spec fields to change


def _number(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _ratio(row: np.ndarray, depth: int) -> float | None:
    """First hidden layer over last hidden layer, or None where it has no meaning."""
    if depth < 2:
        return None
    first, last = float(row[0]), float(row[depth - 1])
    if not (math.isfinite(first) and math.isfinite(last)) or last <= 0:
        return None
    return first / last


def _above(value: float | None, bound: float) -> bool:
    return value is not None and value > bound


def _below(value: float | None, bound: float) -> bool:
    return value is not None and value < bound


def evidence(trace: dict[str, np.ndarray], diverged_step: int | None = None) -> dict[str, float | None]:
    """The numbers the rules look at, from a run's whole trace (rows x layers, output layer last)."""
    grad = trace["grad_norm"]
    depth = grad.shape[1] - 1 if grad.ndim == 2 and len(grad) else 0
    found: dict[str, float | None] = {"depth": depth}
    if diverged_step is not None:
        found["diverged_step"] = diverged_step
    if not depth:
        return found
    found["step0_grad_ratio"] = _ratio(grad[0], depth)
    found["step0_signal_ratio"] = _ratio(trace["act_grad_norm"][0], depth)
    found["final_grad_ratio"] = _ratio(grad[-1], depth)
    total = trace["total_grad_norm"][np.isfinite(trace["total_grad_norm"])]
    found["grad_norm_growth"] = _number(total.max() / total[0]) if len(total) and total[0] > 0 else None
    found["grad_norm_median"] = _number(np.median(total)) if len(total) else None
    found["clipped_share"] = _number(np.mean(trace["clipped"])) if len(trace["clipped"]) else None
    dead = trace["dead_fraction"][-1, :depth]
    saturated = trace["saturated_fraction"][-1, :depth]
    found["dead_fraction_mean"] = _number(dead.mean())
    found["dead_fraction_max"] = _number(dead.max())
    found["saturated_fraction_mean"] = _number(saturated.mean())
    found["loss_first"] = _number(trace["loss"][0])
    found["loss_last"] = _number(trace["loss"][-1])
    through_time = trace.get("time_grad_norm")
    if through_time is not None and through_time.ndim == 2 and through_time.shape[1] >= 2:
        found["step0_time_ratio"] = _time_ratio(through_time[0])
        found["final_time_ratio"] = _time_ratio(through_time[-1])
    return found


def _time_ratio(row: np.ndarray) -> float | None:
    """The gradient at the first time step's hidden state over the last's."""
    first, last = float(row[0]), float(row[-1])
    if not (math.isfinite(first) and math.isfinite(last)) or last <= 0:
        return None
    return first / last


def _ratios(key: str, found: dict, **more: float | None) -> Text:
    """A text that opens with the step-0 ratios of the first hidden layer to the last."""
    return Text(key, {"grad": found.get("step0_grad_ratio"), "signal": found.get("step0_signal_ratio"), **more})


def _time_ratios(key: str, found: dict) -> Text:
    """A text that opens with the ratios of the first time step's gradient to the last's."""
    return Text(key, {"step0": found.get("step0_time_ratio"), "final": found.get("final_time_ratio")})


def _smaller_lr(spec: ExperimentSpec, key: str = "smaller_lr") -> Text:
    return Text(key, {"lr": spec.lr / 10})


CLIP_NORM = Text("clip_norm")


def _diverged(spec: ExperimentSpec, found: dict) -> Finding | None:
    if "diverged_step" not in found:
        return None
    reasons = [Text("diverged_at", {"step": found["diverged_step"]})]
    if _above(found.get("grad_norm_growth"), 1):
        reasons.append(Text("growth_before", {"growth": found["grad_norm_growth"]}))
    advice = [_smaller_lr(spec), CLIP_NORM, Text("batchnorm")]
    if spec.arch == "rnn" and spec.clipping is None:
        # Pascanu et al. (2013): a recurrent net's gradient explodes through time; clipping rescues it.
        return Finding("diverged", reasons, [advice[1], advice[0], Text("orthogonal")], {"clipping": NORM_CLIPPING})
    return Finding("diverged", reasons, advice, {"lr": spec.lr / 10})


def _dead_units(spec: ExperimentSpec, found: dict) -> Finding | None:
    if effective_activation(spec) in SATURATING or not (
        _above(found.get("dead_fraction_mean"), DEAD_MEAN) or (found.get("dead_fraction_max") or 0) >= DEAD_LAYER
    ):
        return None
    reasons = [Text("dead", {"mean": 100 * found["dead_fraction_mean"], "worst": 100 * found["dead_fraction_max"]})]
    advice = [Text("leaky_relu"), _smaller_lr(spec, "smaller_lr_dead"), Text("kaiming_dead")]
    fix = {"activation": "leaky_relu"} if spec.activation == "relu" else {"lr": spec.lr / 10}
    return Finding("dead_units", reasons, advice, fix)


def _saturated(spec: ExperimentSpec, found: dict) -> Finding | None:
    activation = effective_activation(spec)
    if activation not in SATURATING or not _above(found.get("saturated_fraction_mean"), SATURATED_MEAN):
        return None
    reasons = [
        Text("saturated", {"share": 100 * found["saturated_fraction_mean"], "activation": activation}),
        _ratios("ratios", found),
    ]
    advice = [Text("xavier"), Text("batchnorm_before"), Text("or_relu")]
    fix = {"init": "xavier_normal"} if not spec.init.startswith("xavier") else {"norm": "batchnorm"}
    return Finding("saturated", reasons, advice, fix)


def _exploding(spec: ExperimentSpec, found: dict) -> Finding | None:
    by_depth = _above(found.get("step0_grad_ratio"), EXPLODING_RATIO) or _above(
        found.get("step0_signal_ratio"), EXPLODING_SIGNAL
    )
    by_growth = _above(found.get("grad_norm_growth"), EXPLODING_GROWTH)
    by_time = _above(found.get("step0_time_ratio"), EXPLODING_TIME) or _above(
        found.get("final_time_ratio"), EXPLODING_TIME
    )
    if not (by_depth or by_growth or by_time):
        return None
    reasons = []
    if by_depth:
        reasons.append(_ratios("ratios_grow", found))
    if by_time:
        reasons.append(_time_ratios("time_grow", found))
    if by_growth:
        reasons.append(Text("growth_during", {"growth": found["grad_norm_growth"]}))
    advice = [Text("matched_init"), CLIP_NORM, _smaller_lr(spec)]
    if spec.arch == "rnn":
        # Pascanu et al. (2013): clipping is the rescue from exploding gradients through time.
        advice = [CLIP_NORM, Text("recurrent_init"), _smaller_lr(spec)]
        if spec.clipping is None:
            fix = {"clipping": NORM_CLIPPING}
        elif spec.init != "orthogonal":
            fix = {"init": "orthogonal"}
        else:
            fix = {"lr": spec.lr / 10}
    else:
        init = matched_init(spec.activation)
        fix = {"init": init} if spec.init != init else {"clipping": NORM_CLIPPING}
    return Finding("exploding", reasons, advice, fix)


def _vanishing(spec: ExperimentSpec, found: dict) -> Finding | None:
    signal = found.get("step0_signal_ratio")
    by_depth = _below(found.get("step0_grad_ratio"), VANISHING_RATIO) or _below(signal, VANISHING_SIGNAL)
    # Through time it counts only if training did not open a path: an LSTM starts as vanishing
    # as a plain RNN (its forget gate near 0.5) and learns to carry the gradient.
    by_time = _below(found.get("step0_time_ratio"), VANISHING_TIME) and not _above(
        found.get("final_time_ratio"), VANISHING_TIME
    )
    if not (by_depth or by_time):
        return None
    if by_time and not by_depth:
        reasons = [_time_ratios("time_fade", found)]
        advice = [Text("gated_cell"), Text("orthogonal_gain"), Text("shorter_sequences")]
        return Finding("vanishing", reasons, advice, _recurrent_fix(spec))
    per_layer = signal ** (-1 / (found["depth"] - 1)) if signal else None
    reasons = [_ratios("ratios_shrink", found, per_layer=per_layer)]
    if found.get("final_grad_ratio") is not None:
        reasons.append(Text("final_ratio", {"ratio": found["final_grad_ratio"]}))
    advice = [Text("relu_kaiming"), Text("batchnorm_or_residual"), Text("fewer_layers")]
    if spec.arch == "rnn":
        fix = _recurrent_fix(spec)
    elif spec.activation in SATURATING:
        fix = {"activation": "relu", "init": "kaiming_normal"}
    elif spec.init != matched_init(spec.activation):
        fix = {"init": matched_init(spec.activation)}
    elif spec.norm == "none":
        fix = {"norm": "batchnorm"}
    else:
        fix = {"residual": True}
    return Finding("vanishing", reasons, advice, fix)


def _recurrent_fix(spec: ExperimentSpec) -> dict:
    """For a vanishing RNN: orthogonal recurrence first (gain near 1), then gates, then shorter sequences."""
    if spec.init != "orthogonal":
        return {"init": "orthogonal"}
    if spec.cell == "rnn":
        return {"cell": "lstm"}
    return {"seq_len": max(2, spec.seq_len // 2)}


def _healthy(spec: ExperimentSpec, found: dict) -> Finding:
    reasons = [_ratios("ratios_reach", found)] if found["depth"] >= 2 else []
    return Finding("healthy", reasons)


RULES: dict[str, Callable[[ExperimentSpec, dict], Finding | None]] = {
    "diverged": _diverged, "dead_units": _dead_units, "saturated": _saturated,
    "exploding": _exploding, "vanishing": _vanishing,
}


def _suggested_spec(spec: ExperimentSpec, fix: dict) -> dict | None:
    """The run's spec with the fix applied, valid as it stands, or None if there is none."""
    if not fix:
        return None
    try:
        return ExperimentSpec.model_validate({**spec.model_dump(mode="json"), **fix}).model_dump(mode="json")
    except ValidationError:
        return None


def _with_remarks(spec: ExperimentSpec, found: dict, finding: Finding) -> Finding:
    """The finding with what holds whatever the verdict: how the loss moved, and clipping that always acted."""
    first, last = found.get("loss_first"), found.get("loss_last")
    if finding.verdict != "diverged" and first is not None and last is not None:
        finding.reasons.append(Text("loss", {"first": first, "last": last}))
        if finding.verdict == "healthy" and last > first * (1 - STALLED):
            finding.advice.append(Text("stalled"))
    if spec.clipping is not None and _above(found.get("clipped_share"), CLIPPED_MOSTLY):
        finding.reasons.append(Text("clipped", {
            "share": 100 * found["clipped_share"], "median": found.get("grad_norm_median"),
            "threshold": spec.clipping.threshold,
        }))
        finding.advice.append(Text("clip_too_low"))
    return finding


def find(spec: ExperimentSpec, found: dict) -> Finding:
    """The first rule that matches the evidence, or healthy, with the remarks that hold whatever the verdict."""
    finding = next((f for rule in RULES.values() if (f := rule(spec, found)) is not None), None)
    return _with_remarks(spec, found, finding or _healthy(spec, found))


def diagnose(spec: ExperimentSpec, trace: dict[str, np.ndarray], diverged_step: int | None) -> dict:
    """The verdict, the reasons with their numbers, the advice (in English), the evidence and a spec to try next."""
    found = evidence(trace, diverged_step)
    finding = find(spec, found)
    return {
        "verdict": finding.verdict,
        "reasons": [render(text) for text in finding.reasons],
        "advice": [render(text) for text in finding.advice],
        "evidence": found,
        "suggested_spec": _suggested_spec(spec, finding.fix),
    }


def explain(verdict: str, spec: ExperimentSpec, found: dict, lang: str = DEFAULT) -> dict | None:
    """A stored verdict in words: title, explanation, reasons and advice in `lang`, from the spec and the
    evidence that decided it. None where the rule no longer finds that verdict in that evidence (a record
    of older rules): its stored words stand."""
    rule = RULES.get(verdict) if verdict != "healthy" else _healthy
    finding = rule(spec, found) if rule is not None else None
    if finding is None:
        return None
    finding = _with_remarks(spec, found, finding)
    title, explanation = verdict_text(verdict, lang)
    return {
        "title": title,
        "explanation": explanation,
        "reasons": [render(text, lang) for text in finding.reasons],
        "advice": [render(text, lang) for text in finding.advice],
    }
