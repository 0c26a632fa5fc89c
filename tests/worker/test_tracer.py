"""Every traced metric against a brute-force reference on small seeded models.

The reference trains its own copy of the model, step by step, the slow and obvious
way: a hand-written forward pass, `torch.autograd.grad` for the gradients at every
pre-activation, the activation's slope from autograd too (not from worker.activations),
float64 sums in Python loops, clipping done by hand, and the weights copied before
and after each optimizer step.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shared.spec import ExperimentSpec
from shared.traces import DTYPES, LAYER_METRICS, STEP_METRICS
from worker.activations import ACTIVATIONS
from worker.datasets import Batches, load_dataset
from worker.models import build_model
from worker.train import make_optimizer, train


def norm64(tensors) -> float:
    """L2 norm over all the tensors' entries, in float64."""
    return math.sqrt(sum(float(t.detach().double().square().sum()) for t in tensors))


def reference_trace(spec: ExperimentSpec) -> dict[str, np.ndarray]:
    """The spec's trace, recomputed by brute force."""
    model = build_model(spec)
    model.train()
    data = load_dataset(spec, "cpu")
    batches = Batches(len(data), spec.batch_size, spec.seed, "cpu")
    params = list(model.parameters())
    optimizer = make_optimizer(spec, params)
    weights = [layer.weight for layer in model.weighted_layers()]
    threshold = 0.01 * ACTIVATIONS[spec.activation].derivative_max
    traced = set(spec.traced_steps())
    rows = []
    for step in range(spec.steps):
        index = batches.indices(step)
        x, y = data.x[index], data.y[index]

        pre_activations, activation_inputs, activations = [], [], []
        h = x
        for i, layer in enumerate(model.layers):
            z = layer(h)
            z_in = model.norms[i](z) if model.norms is not None else z
            a = model.activation(z_in)
            pre_activations.append(z)
            activation_inputs.append(z_in)
            activations.append(a)
            h = h + a if h.shape == a.shape and spec.residual else a
        logits = model.output(h)
        pre_activations.append(logits)
        loss = F.cross_entropy(logits, y)
        grads = torch.autograd.grad(loss, params + pre_activations)
        param_grads, pre_activation_grads = grads[: len(params)], grads[len(params) :]
        for p, g in zip(params, param_grads):
            p.grad = g.clone()

        accuracy = float((logits.argmax(1) == y).double().mean())
        row = {"step": step, "loss": float(loss.detach()), "accuracy": accuracy}
        row["total_grad_norm"] = norm64(p.grad for p in params)
        row["grad_norm"] = [norm64([w.grad]) for w in weights]
        row["weight_norm"] = [norm64([w]) for w in weights]
        row["act_grad_norm"] = [norm64([g]) for g in pre_activation_grads]
        row["act_mean"], row["act_std"], row["dead_fraction"], row["saturated_fraction"] = [], [], [], []
        for z_in, a in zip(activation_inputs, activations):
            values = a.detach().double().numpy()
            row["act_mean"].append(values.mean())
            row["act_std"].append(values.std())
            row["dead_fraction"].append((values <= 0).all(axis=0).mean())
            probe = z_in.detach().double().requires_grad_()
            (slope,) = torch.autograd.grad(model.activation(probe).sum(), probe)
            row["saturated_fraction"].append((slope.abs() < threshold).double().mean().item())

        row["clipped"] = 0
        with torch.no_grad():
            if spec.clipping is not None and spec.clipping.mode == "norm":
                scale = spec.clipping.threshold / (row["total_grad_norm"] + 1e-6)
                if scale < 1:
                    row["clipped"] = 1
                    for p in params:
                        p.grad.mul_(scale)
            elif spec.clipping is not None:
                t = spec.clipping.threshold
                row["clipped"] = int(any(bool((p.grad.abs() > t).any()) for p in params))
                for p in params:
                    p.grad.clamp_(-t, t)
            before = [w.detach().clone() for w in weights]
            optimizer.step()
            row["update_ratio"] = [norm64([w - b]) / norm64([b]) for w, b in zip(weights, before)]
        optimizer.zero_grad(set_to_none=True)
        if step in traced:
            rows.append(row)

    trace = {name: np.array([r[name] for r in rows]) for name in ("step",) + STEP_METRICS + LAYER_METRICS}
    for name in ("act_mean", "act_std", "dead_fraction", "saturated_fraction"):
        # The output layer has no activation: NaN, as the tracer writes it.
        trace[name] = np.concatenate([trace[name], np.full((len(rows), 1), np.nan)], axis=1)
    return trace


def assert_traces_match(traced: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    for name in ("step",) + STEP_METRICS + LAYER_METRICS:
        assert traced[name].dtype == DTYPES[name], name
        assert traced[name].shape == reference[name].shape, name
        np.testing.assert_allclose(traced[name], reference[name], rtol=2e-4, atol=1e-6, err_msg=name)


SMALL = {"depth": 3, "width": 8, "steps": 4, "batch_size": 32, "seed": 7}


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_metric_matches_the_reference_for_every_activation(activation):
    spec = ExperimentSpec(**SMALL, activation=activation, init="xavier_normal")
    assert_traces_match(train(spec, device="cpu").trace, reference_trace(spec))


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
    assert_traces_match(train(spec, device="cpu").trace, reference_trace(spec))


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
