"""Each verdict on a run built to produce it, trained for real (no Celery, no Redis)."""

import pytest

from shared.diagnosis import diagnose
from shared.spec import ExperimentSpec
from worker.train import train

CASES = {
    # Glorot & Bengio (2010): sigmoid's derivative is at most 1/4, so the signal fades through depth.
    "vanishing": dict(depth=20, width=32, activation="sigmoid", steps=5),
    # He et al. (2015): kaiming init keeps a ReLU net's signal at scale.
    "healthy": dict(depth=10, width=64, init="kaiming_normal", steps=40),
    # Large weights push tanh into its flat tails.
    "saturated": dict(depth=10, width=64, activation="tanh", init="normal", init_std=1.0, steps=5),
    # sigma_w^2 * width / 2 = 5.1 > 1 per layer: the chaotic side for ReLU, the gradient grows.
    "exploding": dict(depth=10, width=64, init="normal", init_std=0.4, steps=3, lr=1e-6),
    # A large Adam step knocks ReLU units into the region where they never fire again.
    "dead_units": dict(depth=6, width=64, init="kaiming_normal", optimizer="adam", lr=0.1, steps=300),
    "diverged": dict(depth=6, width=64, lr=100.0, steps=100),
}


@pytest.mark.parametrize("verdict", CASES)
def test_verdict_on_a_run_built_for_it(verdict):
    spec = ExperimentSpec(**CASES[verdict])
    result = train(spec)
    diagnosis = diagnose(spec, result.trace, result.diverged_step)
    assert diagnosis["verdict"] == verdict, diagnosis
    assert diagnosis["reasons"], "a verdict comes with its numbers"
    if verdict != "healthy":
        assert diagnosis["advice"], "a problem comes with a remedy"


def test_diverged_names_the_step():
    spec = ExperimentSpec(**CASES["diverged"])
    result = train(spec)
    diagnosis = diagnose(spec, result.trace, result.diverged_step)
    assert result.diverged_step is not None
    assert f"step {result.diverged_step}" in diagnosis["reasons"][0]
    assert diagnosis["evidence"]["diverged_step"] == result.diverged_step


def test_vanishing_reports_the_ratio():
    spec = ExperimentSpec(**CASES["vanishing"])
    result = train(spec)
    evidence = diagnose(spec, result.trace, None)["evidence"]
    assert evidence["step0_grad_ratio"] < 1e-3
    assert evidence["step0_signal_ratio"] < 1e-2


@pytest.mark.parametrize("verdict", ["vanishing", "saturated", "exploding"])
def test_the_suggested_spec_is_submittable_and_fixes_the_problem(verdict):
    spec = ExperimentSpec(**CASES[verdict])
    suggested = diagnose(spec, train(spec).trace, None)["suggested_spec"]
    assert suggested is not None and suggested != spec.model_dump(mode="json")
    fixed = ExperimentSpec.model_validate(suggested)  # valid as it stands, strict types and all
    result = train(fixed)
    assert diagnose(fixed, result.trace, result.diverged_step)["verdict"] != verdict


def test_healthy_runs_suggest_nothing():
    spec = ExperimentSpec(**CASES["healthy"])
    assert diagnose(spec, train(spec).trace, None)["suggested_spec"] is None


def test_clipping_on_every_step_is_called_out():
    spec = ExperimentSpec(depth=4, width=16, steps=20, clipping={"mode": "norm", "threshold": 1e-4})
    diagnosis = diagnose(spec, train(spec).trace, None)
    assert diagnosis["evidence"]["clipped_share"] == 1.0
    assert any("clipping changed the gradient on 100% of traced steps" in r for r in diagnosis["reasons"])


# Through time (arch rnn), seq_len 30 on the adding problem.
RNN = dict(arch="rnn", depth=1, width=32, seq_len=30, steps=20)


def test_a_plain_rnn_vanishes_through_time_and_orthogonal_init_is_the_fix():
    spec = ExperimentSpec(**RNN)
    diagnosis = diagnose(spec, train(spec).trace, None)
    assert diagnosis["verdict"] == "vanishing"
    assert diagnosis["evidence"]["step0_time_ratio"] < 1e-3
    assert "through time" in diagnosis["reasons"][0]
    assert diagnosis["suggested_spec"]["init"] == "orthogonal"
    fixed = ExperimentSpec.model_validate(diagnosis["suggested_spec"])
    assert diagnose(fixed, train(fixed).trace, None)["evidence"]["step0_time_ratio"] > 1e-3


def test_an_exploding_rnn_is_told_to_clip_and_clipping_keeps_it_finite():
    spec = ExperimentSpec(**{**RNN, "init": "normal", "init_std": 0.5, "steps": 60})
    result = train(spec)
    diagnosis = diagnose(spec, result.trace, result.diverged_step)
    assert diagnosis["verdict"] in ("exploding", "diverged")
    assert diagnosis["evidence"]["step0_time_ratio"] > 1e3
    assert diagnosis["suggested_spec"]["clipping"] == {"mode": "norm", "threshold": 1.0}
    clipped = ExperimentSpec.model_validate(diagnosis["suggested_spec"])
    rescued = train(clipped)
    assert rescued.diverged_step is None and rescued.final_loss is not None
    assert diagnose(clipped, rescued.trace, None)["verdict"] == "exploding"  # still explodes, but trains
