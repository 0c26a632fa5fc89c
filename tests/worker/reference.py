"""Brute-force references for the traced metrics, shared by the MLP, CNN and RNN tests.

A reference trains its own copy of the spec's model, step by step, the slow and obvious
way: a hand-written forward pass, `torch.autograd.grad` for the gradients at every
pre-activation, the activation's slope from autograd too (not from worker.activations),
float64 sums in Python loops, clipping done by hand, and the weights copied before and
after each optimizer step. The recurrent reference, which runs PyTorch's own cells, is
in test_rnn.py; it shares the clipping, the step and the comparison here.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from shared.spec import ExperimentSpec
from shared.traces import DTYPES, LAYER_METRICS, STEP_METRICS, TIME_METRICS
from worker.activations import ACTIVATIONS
from worker.datasets import Batches, load_dataset
from worker.models import build_model
from worker.train import make_optimizer

TRACE_NAMES = ("step",) + STEP_METRICS + LAYER_METRICS + TIME_METRICS
ACTIVATION_METRICS = ("act_mean", "act_std", "dead_fraction", "saturated_fraction")


def norm64(tensors) -> float:
    """L2 norm over all the tensors' entries, in float64."""
    return math.sqrt(sum(float(t.detach().double().square().sum()) for t in tensors))


def block_stack_trace(spec: ExperimentSpec) -> dict[str, np.ndarray]:
    """The trace of an MLP or CNN spec, recomputed by brute force."""
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
            if spec.arch == "cnn":
                z = F.conv2d(h, layer.weight, layer.bias, padding=1)
            else:
                z = layer(h)
            z_in = model.norms[i](z) if model.norms is not None else z
            a = model.activation(z_in)
            pre_activations.append(z)
            activation_inputs.append(z_in)
            activations.append(a)
            h = h + a if spec.residual and h.shape == a.shape else a
        if spec.arch == "cnn":
            h = h.mean(dim=(2, 3))  # global average pooling
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
        row["time_grad_norm"] = []  # no time steps
        for name in ACTIVATION_METRICS:
            row[name] = []
        for z_in, a in zip(activation_inputs, activations):
            values = a.detach().double().numpy()  # (batch, units) or (batch, channels, height, width)
            row["act_mean"].append(values.mean())
            row["act_std"].append(values.std())
            # A unit (a channel) is dead when it is <= 0 for every example (at every position).
            row["dead_fraction"].append(np.mean([(values[:, c] <= 0).all() for c in range(values.shape[1])]))
            probe = z_in.detach().double().requires_grad_()
            (slope,) = torch.autograd.grad(model.activation(probe).sum(), probe)
            row["saturated_fraction"].append(float((slope.abs() < threshold).double().mean()))

        clip_and_step(spec, params, [[w] for w in weights], optimizer, row)
        if step in traced:
            rows.append(row)
    return stack_rows(rows)


def clip_and_step(
    spec: ExperimentSpec, params: list[Tensor], layers: list[list[Tensor]], optimizer: torch.optim.Optimizer, row: dict
) -> None:
    """Clip the gradients by hand, take the optimizer step, and record `clipped` and each layer's `update_ratio`."""
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
        before = [[w.detach().clone() for w in ws] for ws in layers]
        optimizer.step()
        row["update_ratio"] = [norm64([w - b for w, b in zip(ws, bs)]) / norm64(bs) for ws, bs in zip(layers, before)]
    optimizer.zero_grad(set_to_none=True)


def stack_rows(rows: list[dict]) -> dict[str, np.ndarray]:
    """The trace of the traced steps' rows."""
    trace = {name: np.array([row[name] for row in rows]) for name in TRACE_NAMES}
    for name in ACTIVATION_METRICS:
        # The output layer has no activation: NaN, as the tracer writes it.
        trace[name] = np.concatenate([trace[name], np.full((len(rows), 1), np.nan)], axis=1)
    return trace


def assert_traces_match(traced: dict[str, np.ndarray], reference: dict[str, np.ndarray], rtol: float = 2e-4) -> None:
    """Every metric of the trace has the tracer's dtype, the reference's shape and its values."""
    for name in TRACE_NAMES:
        assert traced[name].dtype == DTYPES[name], name
        assert traced[name].shape == reference[name].shape, name
        np.testing.assert_allclose(traced[name], reference[name], rtol=rtol, atol=1e-6, err_msg=name)
