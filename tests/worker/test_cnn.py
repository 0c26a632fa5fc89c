"""arch cnn: every traced metric against the brute-force reference (tests/worker/reference.py), the model's
shape, the datasets, learning.
"""

import numpy as np
import pytest
import torch

from shared.spec import ExperimentSpec, cost, trace_values
from shared.traces import LAYER_METRICS
from tests.worker.reference import assert_traces_match, block_stack_trace
from worker import stats
from worker.activations import ACTIVATIONS
from worker.datasets import load_dataset
from worker.models import CNN, build_model
from worker.train import train


SMALL = {"arch": "cnn", "depth": 3, "width": 6, "steps": 4, "batch_size": 16, "seed": 3}


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "sigmoid"])
def test_every_metric_matches_the_reference(activation):
    spec = ExperimentSpec(**SMALL, activation=activation, init="kaiming_normal")
    assert_traces_match(train(spec, device="cpu").trace, block_stack_trace(spec))


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
    assert_traces_match(train(spec, device="cpu").trace, block_stack_trace(spec))


@pytest.mark.parametrize("kernels", [True, False], ids=["c_kernels", "pytorch"])
@torch.no_grad()
def test_a_channel_dead_everywhere_reads_dead_and_one_alive_somewhere_does_not(kernels):
    spec = ExperimentSpec(**{**SMALL, "depth": 1, "steps": 1})
    model = build_model(spec)
    assert isinstance(model, CNN)
    model.layers[0].bias[:3] = -100.0  # these three channels never fire
    model.layers[0].bias[3:] = 0.0
    model.layers[0].weight[3:] = 0.0
    model.layers[0].weight[3:, 0, 1, 1] = 1.0  # these fire wherever the pixel is positive
    a = model.activation(model.layers[0](load_dataset(spec, "cpu").x[:8]))
    workspace = None if kernels else stats.Workspace(1, tuple(a.shape), a.device)
    values = stats.activation_stats([a], [a], ACTIVATIONS["relu"], workspace, unit_dim=1)
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
