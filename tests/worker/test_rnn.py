"""arch rnn: the cells against PyTorch's, every traced metric against a brute-force reference, the
datasets, learning, and the vanishing gradient through time.

The reference runs PyTorch's own cells (nn.RNNCell, nn.LSTMCell, nn.GRUCell) on the
model's parameters, one time step at a time, keeps every hidden state with
`retain_grad()` and reads dL/dh_t off `.grad` after a plain `loss.backward()`; the
rest (float64 norms, clipping by hand, weights copied around each step) is tests/worker/reference.py's.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from shared.spec import ExperimentSpec, cost, trace_values
from shared.traces import LAYER_METRICS
from tests.worker.reference import assert_traces_match, clip_and_step, norm64, stack_rows
from worker.datasets import Batches, load_dataset
from worker.models import build_model
from worker.recurrent import RNN
from worker.train import make_optimizer, train

CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
FUSED = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
# PyTorch's cells and ours round differently; through a recurrence that is ~1e-6 relative.
RTOL = 1e-3


def reference_trace(spec: ExperimentSpec) -> dict[str, np.ndarray]:
    model = build_model(spec)
    data = load_dataset(spec, "cpu")
    batches = Batches(len(data), spec.batch_size, spec.seed, "cpu")
    params = list(model.parameters())
    optimizer = make_optimizer(spec, params)
    layers = [[layer.weight_ih, layer.weight_hh] for layer in model.recurrent] + [[model.output.weight]]
    traced = set(spec.traced_steps())
    rows = []
    for step in range(spec.steps):
        index = batches.indices(step)
        x, y = data.x[index], data.y[index]
        inputs = list(x.transpose(0, 1))
        states = []  # per layer, h_t for every t
        for layer in model.recurrent:
            cell = CELLS[spec.cell](layer.weight_ih.shape[1], layer.width)
            weights = {name: getattr(layer, name) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            h = torch.zeros(len(x), layer.width)
            c = torch.zeros(len(x), layer.width)
            hs = []
            for x_t in inputs:
                if spec.cell == "lstm":
                    h, c = functional_call(cell, weights, (x_t, (h, c)))
                else:
                    h = functional_call(cell, weights, (x_t, h))
                h.retain_grad()
                hs.append(h)
            states.append(hs)
            inputs = hs
        outputs = model.output(inputs[-1])
        outputs.retain_grad()
        if spec.dataset == "adding":
            loss = F.mse_loss(outputs.squeeze(-1), y)
            accuracy = math.nan
        else:
            loss = F.cross_entropy(outputs, y)
            accuracy = float((outputs.argmax(1) == y).double().mean())
        loss.backward()

        row = {"step": step, "loss": float(loss.detach()), "accuracy": accuracy}
        row["total_grad_norm"] = norm64(p.grad for p in params)
        row["grad_norm"] = [norm64(w.grad for w in ws) for ws in layers]
        row["weight_norm"] = [norm64(ws) for ws in layers]
        row["act_grad_norm"] = [norm64(h.grad for h in hs) for hs in states] + [norm64([outputs.grad])]
        row["time_grad_norm"] = [norm64([h.grad]) for h in states[-1]]
        for name in ("act_mean", "act_std", "dead_fraction", "saturated_fraction"):
            row[name] = []
        for hs in states:
            values = torch.stack(hs).detach().double().numpy()  # (time, batch, units)
            row["act_mean"].append(values.mean())
            row["act_std"].append(values.std())
            row["dead_fraction"].append((values <= 0).all(axis=(0, 1)).mean())
            # tanh' = 1 - tanh^2, below 1 % of its maximum 1.
            row["saturated_fraction"].append((1 - values**2 < 0.01).mean())

        clip_and_step(spec, params, layers, optimizer, row)
        if step in traced:
            rows.append(row)

    return stack_rows(rows)


SMALL = {"arch": "rnn", "depth": 2, "width": 8, "steps": 4, "batch_size": 16, "seq_len": 7, "seed": 5}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("dataset", ["adding", "copy_first"])
def test_every_metric_matches_the_reference(cell, dataset):
    spec = ExperimentSpec(**SMALL, cell=cell, dataset=dataset, lr=0.5)
    assert_traces_match(train(spec, device="cpu").trace, reference_trace(spec), rtol=RTOL)


@pytest.mark.parametrize(
    "options",
    [
        {"cell": "rnn", "init": "orthogonal", "clipping": {"mode": "norm", "threshold": 0.05}},
        {"cell": "lstm", "optimizer": "adam", "lr": 0.01, "dataset": "random", "depth": 1},
        {"cell": "gru", "optimizer": "momentum", "init": "xavier_uniform",
         "clipping": {"mode": "value", "threshold": 0.001}},
        {"cell": "rnn", "depth": 3, "trace_every": 2, "steps": 5, "init": "kaiming_normal"},
    ],
    ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()),
)
def test_every_metric_matches_the_reference_with_options(options):
    spec = ExperimentSpec.model_validate({**SMALL, **options})
    assert_traces_match(train(spec, device="cpu").trace, reference_trace(spec), rtol=RTOL)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_unrolled_cells_are_pytorchs(cell):
    spec = ExperimentSpec(arch="rnn", cell=cell, depth=2, width=6, seq_len=9, dataset="copy_first", seed=2)
    model = build_model(spec)
    fused = FUSED[cell](4, 6, num_layers=2)
    with torch.no_grad():
        for i, layer in enumerate(model.recurrent):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(fused, f"{name}_l{i}").copy_(getattr(layer, name))
    x = load_dataset(spec, "cpu").x[:5]  # (batch, time, features)
    expected, _ = fused(x.transpose(0, 1))
    np.testing.assert_allclose(model(x).detach(), model.output(expected[-1]).detach(), rtol=1e-5, atol=1e-6)


def test_default_init_is_pytorchs_and_named_inits_reach_both_matrices():
    model = build_model(ExperimentSpec(arch="rnn", cell="lstm", width=16, depth=1))
    layer = model.recurrent[0]
    bound = 1 / math.sqrt(16)
    for param in (layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh):
        assert param.abs().max() <= bound and param.abs().max() > 0.9 * bound
    assert layer.weight_ih.shape == (64, 2) and layer.weight_hh.shape == (64, 16)
    model = build_model(ExperimentSpec(arch="rnn", cell="gru", width=16, depth=1, init="orthogonal"))
    w_hh = model.recurrent[0].weight_hh.detach()  # (48, 16): orthonormal columns
    np.testing.assert_allclose(w_hh.T @ w_hh, np.eye(16), atol=1e-5)
    assert (model.recurrent[0].bias_hh == 0).all() and (model.recurrent[0].bias_ih == 0).all()


def test_layers_time_trace_and_regression_accuracy():
    spec = ExperimentSpec(arch="rnn", cell="gru", depth=2, width=8, seq_len=12, steps=3, batch_size=8)
    result = train(spec)
    assert result.layers == [{"name": "rnn.0", "kind": "gru"}, {"name": "rnn.1", "kind": "gru"},
                             {"name": "output", "kind": "linear"}]
    assert result.trace["time_grad_norm"].shape == (3, 12)
    assert np.isnan(result.trace["accuracy"]).all() and result.final_accuracy is None
    assert result.final_loss is not None


def test_same_seed_same_trace():
    spec = ExperimentSpec(**SMALL, cell="lstm", optimizer="adam", lr=0.01)
    first, second = train(spec).trace, train(spec).trace
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def test_the_adding_problem():
    spec = ExperimentSpec(arch="rnn", seq_len=30)
    data = load_dataset(spec, "cpu")
    x, y = data.x.numpy(), data.y.numpy()
    assert x.shape == (2048, 30, 2) and y.shape == (2048,) and data.y.dtype == torch.float32
    markers = x[:, :, 1]
    assert (markers.sum(axis=1) == 2).all()
    assert (markers[:, :15].sum(axis=1) == 1).all()  # one marker in each half
    np.testing.assert_allclose((x[:, :, 0] * markers).sum(axis=1), y, rtol=1e-6)
    assert 0 <= x[:, :, 0].min() and x[:, :, 0].max() <= 1
    # Predicting the mean target scores about 1/6: the bar that learning must clear.
    assert abs(float(((y - 1.0) ** 2).mean()) - 1 / 6) < 0.02


def test_copy_first_labels_the_first_symbol():
    spec = ExperimentSpec(arch="rnn", dataset="copy_first", seq_len=10)
    data = load_dataset(spec, "cpu")
    assert data.x.shape == (2048, 10, 4) and (data.x.sum(dim=2) == 1).all()
    assert torch.equal(data.x[:, 0].argmax(dim=1), data.y) and data.classes == 4
    assert not torch.equal(data.x[:, 1].argmax(dim=1), data.y)


def test_an_lstm_learns_the_adding_problem(one_thread):
    # The loss sits on the plateau of predicting the mean (~1/6) for a few hundred steps, then drops.
    spec = ExperimentSpec(arch="rnn", cell="lstm", depth=1, width=32, seq_len=20, steps=700, optimizer="adam",
                          lr=0.01, trace_every=50)
    result = train(spec)
    assert result.final_loss < 0.05 < 1 / 6  # far below predicting the mean


def test_an_lstm_learns_to_copy_the_first_symbol(one_thread):
    spec = ExperimentSpec(arch="rnn", cell="lstm", dataset="copy_first", depth=1, width=32, seq_len=20, steps=300,
                          optimizer="adam", lr=0.01, trace_every=50)
    assert train(spec).final_accuracy > 0.9


def test_a_vanilla_rnns_gradient_vanishes_through_time_unless_its_recurrence_is_orthogonal(one_thread):
    """Bengio et al. 1994: dL/dh_t shrinks geometrically going back from a loss at the end. PyTorch's
    default init (spectral radius ~0.6 at width 64) vanishes; an orthogonal W_hh (Saxe et al. 2014,
    Le et al. 2015) loses only what tanh' < 1 takes."""
    ratios = {}
    for init in ("default", "orthogonal"):
        spec = ExperimentSpec(arch="rnn", depth=1, width=64, seq_len=50, steps=1, init=init)
        norms = train(spec).trace["time_grad_norm"][0]
        assert norms[-1] > 0 and (np.diff(norms) > 0).mean() > 0.9  # growing towards the loss
        ratios[init] = norms[0] / norms[-1]
    assert ratios["default"] < 1e-6
    assert ratios["orthogonal"] > 1e-3 and ratios["orthogonal"] > 1e6 * ratios["default"]


def test_clipping_rescues_an_exploding_rnn():
    """Pascanu et al. 2013: large recurrent weights explode the gradient; norm clipping caps every step."""
    explode = {"arch": "rnn", "depth": 1, "width": 32, "seq_len": 40, "steps": 30, "init": "normal",
               "init_std": 0.5, "lr": 0.1, "seed": 1}
    wild = train(ExperimentSpec(**explode)).trace
    assert wild["total_grad_norm"].max() > 10 and not wild["clipped"].any()
    clipped = train(ExperimentSpec(**explode, clipping={"mode": "norm", "threshold": 1.0})).trace
    assert clipped["clipped"].all()
    # Each update moved the weights by lr * 1.0 at most (plain SGD, global norm clipped to 1).
    step_sizes = clipped["update_ratio"] * clipped["weight_norm"]
    assert (np.sqrt((step_sizes**2).sum(axis=1)) <= 0.1 * (1 + 1e-4)).all()


def test_cost_and_trace_size_count_gates_and_time():
    spec = ExperimentSpec(arch="rnn", cell="lstm", depth=2, width=16, seq_len=10, steps=5, batch_size=3)
    per_example = 10 * 4 * ((2 + 16) * 16 + (16 + 16) * 16) + 16 * 1
    assert cost(spec) == per_example * 3 * 5
    assert trace_values(spec) == 6 * (3 * len(LAYER_METRICS) + 10)
    assert isinstance(build_model(spec), RNN)
