"""arch cnn: every traced metric against a brute-force reference, the model's shape, the datasets, learning.

The reference trains its own copy of the model step by step, the slow and obvious way:
its own forward pass through the conv blocks, `torch.autograd.grad` at every conv
output, a channel's deadness read off a (batch, channels, height, width) array with
numpy, the activation's slope from autograd, float64 sums, clipping by hand, and the
weights copied before and after each optimizer step.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shared.spec import ExperimentSpec, cost, trace_values
from shared.traces import DTYPES, LAYER_METRICS, STEP_METRICS, TIME_METRICS
from worker import stats
from worker.activations import ACTIVATIONS
from worker.datasets import Batches, load_dataset
from worker.models import CNN, build_model
from worker.train import make_optimizer, train


def norm64(tensors) -> float:
    return math.sqrt(sum(float(t.detach().double().square().sum()) for t in tensors))


def reference_trace(spec: ExperimentSpec) -> dict[str, np.ndarray]:
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
        for i, conv in enumerate(model.layers):
            z = F.conv2d(h, conv.weight, conv.bias, padding=1)
            z_in = model.norms[i](z) if model.norms is not None else z
            a = model.activation(z_in)
            pre_activations.append(z)
            activation_inputs.append(z_in)
            activations.append(a)
            h = h + a if spec.residual and h.shape == a.shape else a
        logits = model.output(h.mean(dim=(2, 3)))
        pre_activations.append(logits)
        loss = F.cross_entropy(logits, y)
        grads = torch.autograd.grad(loss, params + pre_activations)
        for p, g in zip(params, grads[: len(params)]):
            p.grad = g.clone()

        row = {"step": step, "loss": float(loss.detach()), "accuracy": float((logits.argmax(1) == y).double().mean())}
        row["total_grad_norm"] = norm64(p.grad for p in params)
        row["grad_norm"] = [norm64([w.grad]) for w in weights]
        row["weight_norm"] = [norm64([w]) for w in weights]
        row["act_grad_norm"] = [norm64([g]) for g in grads[len(params) :]]
        for name in ("act_mean", "act_std", "dead_fraction", "saturated_fraction"):
            row[name] = []
        for z_in, a in zip(activation_inputs, activations):
            values = a.detach().double().numpy()  # (batch, channels, height, width)
            row["act_mean"].append(values.mean())
            row["act_std"].append(values.std())
            # A channel is dead when it is <= 0 at every position of every example.
            row["dead_fraction"].append(np.mean([(values[:, c] <= 0).all() for c in range(values.shape[1])]))
            probe = z_in.detach().double().requires_grad_()
            (slope,) = torch.autograd.grad(model.activation(probe).sum(), probe)
            row["saturated_fraction"].append(float((slope.abs() < threshold).double().mean()))

        row["clipped"] = 0
        with torch.no_grad():
            if spec.clipping is not None:
                scale = spec.clipping.threshold / (row["total_grad_norm"] + 1e-6)
                if scale < 1:
                    row["clipped"] = 1
                    for p in params:
                        p.grad.mul_(scale)
            before = [w.detach().clone() for w in weights]
            optimizer.step()
            row["update_ratio"] = [norm64([w - b]) / norm64([b]) for w, b in zip(weights, before)]
        optimizer.zero_grad(set_to_none=True)
        if step in traced:
            rows.append(row)

    trace = {name: np.array([r[name] for r in rows]) for name in ("step",) + STEP_METRICS + LAYER_METRICS}
    for name in ("act_mean", "act_std", "dead_fraction", "saturated_fraction"):
        trace[name] = np.concatenate([trace[name], np.full((len(rows), 1), np.nan)], axis=1)
    trace["time_grad_norm"] = np.zeros((len(rows), 0))
    return trace


def assert_traces_match(traced: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    for name in ("step",) + STEP_METRICS + LAYER_METRICS + TIME_METRICS:
        assert traced[name].dtype == DTYPES[name], name
        assert traced[name].shape == reference[name].shape, name
        np.testing.assert_allclose(traced[name], reference[name], rtol=2e-4, atol=1e-6, err_msg=name)


SMALL = {"arch": "cnn", "depth": 3, "width": 6, "steps": 4, "batch_size": 16, "seed": 3}


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "sigmoid"])
def test_every_metric_matches_the_reference(activation):
    spec = ExperimentSpec(**SMALL, activation=activation, init="kaiming_normal")
    assert_traces_match(train(spec, device="cpu").trace, reference_trace(spec))


@pytest.mark.parametrize(
    "options",
    [
        {"norm": "batchnorm", "residual": True, "dataset": "shapes"},
        {"norm": "layernorm", "optimizer": "adam", "lr": 0.01, "activation": "silu"},
        {"dataset": "random", "residual": True, "optimizer": "momentum", "clipping": {"mode": "norm", "threshold": 0.1}},
        {"depth": 1, "init": "orthogonal", "trace_every": 2, "steps": 5},
    ],
    ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()),
)
def test_every_metric_matches_the_reference_with_options(options):
    spec = ExperimentSpec.model_validate({**SMALL, **options})
    assert_traces_match(train(spec, device="cpu").trace, reference_trace(spec))


@torch.no_grad()
def test_a_channel_dead_everywhere_reads_dead_and_one_alive_somewhere_does_not():
    spec = ExperimentSpec(**{**SMALL, "depth": 1, "steps": 1})
    model = build_model(spec)
    assert isinstance(model, CNN)
    model.layers[0].bias[:3] = -100.0  # these three channels never fire
    model.layers[0].bias[3:] = 0.0
    model.layers[0].weight[3:] = 0.0
    model.layers[0].weight[3:, 0, 1, 1] = 1.0  # these fire wherever the pixel is positive
    a = model.activation(model.layers[0](load_dataset(spec, "cpu").x[:8]))
    scratch, work = torch.empty(1, *a.shape), torch.empty(1, *a.shape)
    values = stats.activation_stats([a], [a], ACTIVATIONS["relu"], scratch, work, unit_dim=1)
    assert values[2].tolist() == [0.5]


def test_layers_are_conv_blocks_then_output():
    spec = ExperimentSpec(arch="cnn", depth=3, width=4, steps=1, batch_size=4)
    result = train(spec)
    assert result.layers == [{"name": "conv.0", "kind": "conv"}, {"name": "conv.1", "kind": "conv"},
                             {"name": "conv.2", "kind": "conv"}, {"name": "output", "kind": "linear"}]
    assert result.trace["grad_norm"].shape == (1, 4) and result.trace["time_grad_norm"].shape == (1, 0)


def test_residual_skips_where_channels_agree_and_norms_are_2d():
    model = build_model(ExperimentSpec(arch="cnn", depth=3, width=5, residual=True, norm="layernorm"))
    assert model.skips == [False, True, True]  # digits has 1 channel, the blocks 5
    assert isinstance(model.norms[0], torch.nn.GroupNorm) and model.norms[0].num_groups == 1
    model = build_model(ExperimentSpec(arch="cnn", depth=2, width=3, residual=True, dataset="shapes"))
    assert model.skips == [True, True]  # 3 input channels, 3 in every block


def test_same_seed_same_trace():
    spec = ExperimentSpec(**SMALL, dataset="shapes", norm="batchnorm", optimizer="adam", lr=0.01)
    first, second = train(spec).trace, train(spec).trace
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


@pytest.mark.parametrize(("dataset", "channels", "classes"), [("digits", 1, 10), ("shapes", 3, 6), ("random", 3, 10)])
def test_image_datasets(dataset, channels, classes):
    spec = ExperimentSpec(arch="cnn", dataset=dataset)
    data = load_dataset(spec, "cpu")
    assert data.x.shape[1:] == (channels, 8, 8) and data.x.dtype == torch.float32
    assert data.y.dtype == torch.int64 and set(data.y.tolist()) == set(range(classes)) == set(range(data.classes))
    assert spec.dims() == (channels, classes)
    assert abs(float(data.x.mean())) < 0.05 and abs(float(data.x.std()) - 1) < 0.1
    other = load_dataset(spec.model_copy(update={"seed": 1}), "cpu")
    assert torch.equal(data.x, other.x) == (dataset == "digits")


def test_shapes_classes_are_colour_and_orientation():
    data = load_dataset(ExperimentSpec(arch="cnn", dataset="shapes"), "cpu")
    x, y = data.x.numpy(), data.y.numpy()
    for label in range(6):
        mean = x[y == label].mean(axis=0)  # (3, 8, 8): the bars, averaged over places
        assert mean.sum(axis=(1, 2)).argmax() == label % 3  # colour: the channel
        channel = mean[label % 3]
        # Orientation: a vertical bar spreads down the rows of its column, so rows vary less than columns.
        vertical = channel.std(axis=0).mean() > channel.std(axis=1).mean()
        assert vertical == (label // 3 == 1)


@pytest.fixture
def one_thread():
    """Small conv steps run faster on one thread when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("dataset", ["digits", "shapes"])
def test_a_small_cnn_learns(dataset, one_thread):
    spec = ExperimentSpec(arch="cnn", dataset=dataset, depth=2, width=16, steps=250, optimizer="adam",
                          lr=0.01, trace_every=50)
    result = train(spec)
    chance = 1 / spec.dims()[1]
    assert result.final_accuracy > 0.7 > 3 * chance
    assert result.final_loss < 0.5 * result.trace["loss"][0]


def test_cost_counts_every_conv_position_and_the_trace_every_layer():
    spec = ExperimentSpec(arch="cnn", depth=3, width=16, steps=10, batch_size=4)
    per_example = (1 * 16 + 2 * 16 * 16) * 9 * 64 + 16 * 10
    assert cost(spec) == per_example * 4 * 10
    assert trace_values(spec) == 11 * 4 * len(LAYER_METRICS)
