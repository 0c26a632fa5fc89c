"""Every traced metric of the MLP against the brute-force reference (tests/worker/reference.py) on small
seeded models, and the clipping flags.
"""

import numpy as np
import pytest

from shared.spec import ExperimentSpec
from tests.worker.reference import assert_traces_match, block_stack_trace
from worker.activations import ACTIVATIONS
from worker.train import train


SMALL = {"depth": 3, "width": 8, "steps": 4, "batch_size": 32, "seed": 7}


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_metric_matches_the_reference_for_every_activation(activation):
    spec = ExperimentSpec(**SMALL, activation=activation, init="xavier_normal")
    assert_traces_match(train(spec, device="cpu").trace, block_stack_trace(spec))


@pytest.mark.parametrize(
    "options",
    [
        {"norm": "batchnorm"},
        {"norm": "layernorm", "residual": True, "activation": "tanh"},
        # Input dim == width on `random`, so even the first block gets its skip.
        {"dataset": "random", "residual": True, "activation": "sigmoid", "init": "normal", "init_std": 0.5},
        {"optimizer": "momentum", "norm": "batchnorm", "residual": True},
        {"optimizer": "adam", "lr": 0.01, "activation": "gelu", "norm": "layernorm"},
        {"clipping": {"mode": "norm", "threshold": 0.05}, "activation": "elu"},
        {"clipping": {"mode": "value", "threshold": 0.005}, "optimizer": "momentum"},
        {"clipping": {"mode": "norm", "threshold": 0.05}, "optimizer": "adam", "lr": 0.01},
        {"dataset": "digits", "trace_every": 3, "steps": 8, "init": "kaiming_uniform"},
        {"depth": 1, "init": "orthogonal"},
    ],
    ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()),
)
def test_every_metric_matches_the_reference(options):
    spec = ExperimentSpec.model_validate({**SMALL, **options})
    assert_traces_match(train(spec, device="cpu").trace, block_stack_trace(spec))


def test_norm_clipping_traces_the_pre_clip_norm_and_steps_with_the_clipped_gradient():
    spec = ExperimentSpec(**SMALL, lr=0.1, clipping={"mode": "norm", "threshold": 0.01})
    trace = train(spec, device="cpu").trace
    assert (trace["total_grad_norm"] > 0.01).all()
    assert (trace["clipped"] == 1).all()
    # Plain SGD moves each weight by lr times its clipped gradient.
    scale = 0.01 / (trace["total_grad_norm"][:, None] + 1e-6)
    expected = spec.lr * trace["grad_norm"] * scale / trace["weight_norm"]
    np.testing.assert_allclose(trace["update_ratio"], expected, rtol=1e-3)


def test_clipping_that_does_not_bite_is_not_flagged():
    for mode in ("norm", "value"):
        spec = ExperimentSpec(**SMALL, clipping={"mode": mode, "threshold": 1e5})
        trace = train(spec, device="cpu").trace
        assert (trace["clipped"] == 0).all()
        unclipped = train(spec.model_copy(update={"clipping": None}), device="cpu").trace
        np.testing.assert_array_equal(trace["update_ratio"], unclipped["update_ratio"])


def test_value_clipping_is_flagged_when_it_bites():
    spec = ExperimentSpec(**SMALL, clipping={"mode": "value", "threshold": 1e-4})
    trace = train(spec, device="cpu").trace
    assert (trace["clipped"] == 1).all()
