"""The hand-written passes of the MLP and the CNN (worker.engine) against autograd: same loss, gradients, traces."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shared.spec import ExperimentSpec
from tests.worker.conftest import torch_threads
from worker import stats
from worker.activations import ACTIVATIONS
from worker.engine import ConvEngine, MLPEngine, RecurrentEngine, engine_for
from worker.models import Recording, build_model
from worker.tracer import Tracer
from worker.train import make_optimizer, train

CPU = torch.device("cpu")


def autograd_pass(spec: ExperimentSpec, x: torch.Tensor, y: torch.Tensor):
    """Loss, parameter gradients and pre-activation gradients of the spec's model by autograd."""
    model = build_model(spec)
    recording = Recording()
    loss = F.cross_entropy(model(x, recording), y)
    params = list(model.parameters())
    recording.backward(loss, params)
    return loss, [p.grad for p in params], recording


def batch(spec: ExperimentSpec, size: int = 16):
    generator = torch.Generator().manual_seed(1)
    inputs, classes = spec.dims()
    shape = (size, inputs, 8, 8) if spec.arch == "cnn" else (size, inputs)
    return torch.randn(shape, generator=generator) * 2, torch.randint(classes, (size,), generator=generator)


def engine_pass(spec: ExperimentSpec, x: torch.Tensor, y: torch.Tensor):
    """Loss, logits, the model and the recording of one step of the spec's model by the engine."""
    model = build_model(spec)
    engine = engine_for(model, spec.activation, CPU)
    assert isinstance(engine, ConvEngine if spec.arch == "cnn" else MLPEngine)
    recording = None if engine.fixed else Recording()
    loss, logits = engine.step(x, y, recording)
    return loss, logits, model, engine.recording if engine.fixed else recording


ARCHS = {
    "mlp": {"depth": 4, "width": 16, "dataset": "random"},
    "cnn": {"arch": "cnn", "depth": 3, "width": 8, "dataset": "digits"},
}


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_one_step_gives_autograds_loss_and_gradients_exactly(arch, activation, residual):
    one_step_matches_autograd(ExperimentSpec(**ARCHS[arch], activation=activation, residual=residual))


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "gelu", "linear"])
@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_the_mlp_with_a_norm_layer_gives_autograds_loss_and_gradients_exactly(norm, activation, residual):
    one_step_matches_autograd(ExperimentSpec(**ARCHS["mlp"], norm=norm, activation=activation, residual=residual))


def test_batch_norm_running_statistics_advance_as_the_modules_own():
    spec = ExperimentSpec(**ARCHS["mlp"], norm="batchnorm", activation="tanh")
    by_module, by_hand = build_model(spec), build_model(spec)
    engine = engine_for(by_hand, spec.activation, CPU)
    for size in (16, 16, 9):
        x, y = batch(spec, size)
        by_module(x)
        engine.step(x, y)
    for a, b in zip(by_module.norms, by_hand.norms, strict=True):
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=0, msg=name)
    assert by_hand.norms[0].num_batches_tracked.item() == 3


def one_step_matches_autograd(spec: ExperimentSpec) -> None:
    x, y = batch(spec)
    loss, grads, recording = autograd_pass(spec, x, y)
    engine_loss, logits, model, engine_recording = engine_pass(spec, x, y)

    assert engine_loss.item() == loss.item()
    torch.testing.assert_close(logits, recording.pre_activations[-1], rtol=0, atol=0)
    for param, grad in zip(model.parameters(), grads, strict=True):
        torch.testing.assert_close(param.grad, grad, rtol=0, atol=0)
    for name in ("pre_activation_grads", "activations", "activation_inputs", "pre_activations"):
        mine, theirs = getattr(engine_recording, name), getattr(recording, name)
        assert len(mine) == len(theirs), name
        for a, b in zip(mine, theirs):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(
    "options",
    [
        {"activation": "relu"},
        {"activation": "tanh", "residual": True, "clipping": {"mode": "norm", "threshold": 0.5}},
        {"activation": "gelu", "optimizer": "momentum", "clipping": {"mode": "value", "threshold": 0.01}},
        {"activation": "sigmoid", "optimizer": "adam", "lr": 0.01},
        {"activation": "linear", "residual": True, "trace_every": 3},
        {"activation": "relu", "dataset": "digits", "width": 64},
        {"activation": "sigmoid", "norm": "batchnorm", "dataset": "digits", "optimizer": "adam", "lr": 0.01},
        {"activation": "relu", "norm": "layernorm", "residual": True, "clipping": {"mode": "norm", "threshold": 0.5}},
        {"arch": "cnn", "dataset": "digits", "width": 8, "activation": "relu", "residual": True},
        {"arch": "cnn", "dataset": "digits", "width": 8, "activation": "silu", "optimizer": "adam", "lr": 0.01},
        # 64 x 16 x 8 x 8 values per block: the tracer measures them during the forward pass (its probe).
        {"arch": "cnn", "dataset": "digits", "width": 16, "batch_size": 64, "activation": "tanh"},
    ],
)
def test_a_run_by_the_engine_traces_and_trains_as_autograd_does(options):
    spec = ExperimentSpec(**{"depth": 5, "width": 24, "steps": 25} | options)
    by_hand, by_autograd = train(spec, engine=True), train(spec, engine=False)
    assert by_hand.final_loss == by_autograd.final_loss
    assert by_hand.trace.keys() == by_autograd.trace.keys()
    for name, values in by_autograd.trace.items():
        np.testing.assert_allclose(by_hand.trace[name], values, rtol=1e-6, atol=0, err_msg=name)


def test_the_gradients_stay_in_the_same_tensors_from_step_to_step():
    spec = ExperimentSpec(depth=3, width=8, dataset="random")
    model = build_model(spec)
    engine = engine_for(model, "relu", CPU)
    grads = [p.grad for p in model.parameters()]
    x, y = batch(spec)
    for _ in range(3):
        engine.step(x, y)
        assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert all(g.abs().sum() > 0 for g in grads)  # overwritten with this batch's gradients, not left at zero


def test_a_new_batch_size_gets_new_buffers_and_the_right_gradients():
    spec = ExperimentSpec(depth=3, width=8, activation="elu", dataset="random")
    model = build_model(spec)
    engine = engine_for(model, "elu", CPU)
    engine.step(*batch(spec, 16))
    x, y = batch(spec, 5)
    loss, grads, _ = autograd_pass(spec, x, y)
    engine_loss, logits = engine.step(x, y)
    assert logits.shape == (5, spec.dims()[1]) and engine_loss.item() == loss.item()
    for param, grad in zip(model.parameters(), grads):
        torch.testing.assert_close(param.grad, grad, rtol=0, atol=0)


@pytest.mark.parametrize(
    "options",
    [
        {"arch": "cnn", "dataset": "digits", "depth": 2, "width": 4, "norm": "batchnorm"},
        {"arch": "cnn", "dataset": "digits", "depth": 2, "width": 4, "norm": "layernorm"},
    ],
)
def test_other_models_train_through_autograd(options):
    spec = ExperimentSpec(**{"depth": 2, "width": 8} | options)
    assert engine_for(build_model(spec), spec.activation, CPU) is None


def test_a_gpu_trains_through_autograd():
    spec = ExperimentSpec(depth=2, width=8)
    assert engine_for(build_model(spec), spec.activation, torch.device("cuda")) is None


def test_the_tracer_refuses_a_gradient_that_moved():
    """The tracer reads the engine's tensors at addresses planned once; a replaced tensor must not go unseen."""
    spec = ExperimentSpec(depth=3, width=8, dataset="random", steps=4)
    model = build_model(spec)
    engine = engine_for(model, "relu", CPU)
    params = list(model.parameters())
    tracer = Tracer(
        model, make_optimizer(spec, params), ACTIVATIONS["relu"], [0, 1], 16, CPU, fixed=engine.recording
    )
    x, y = batch(spec)
    for step in range(2):
        recording = tracer.recording(step)
        assert recording is engine.recording
        loss, logits = engine.step(x, y, recording)
        tracer.measure(step, loss, logits, y, recording)
        tracer.measure_update(None)
    assert len(tracer.flush().chunk.arrays["step"]) == 2

    params[0].grad = params[0].grad.clone()
    with pytest.raises(RuntimeError, match="replaced or moved"):
        tracer.flush()


@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_after_the_first_traced_step_the_engine_measures_each_layer_during_backward(monkeypatch, norm):
    """The tracer plans per-layer reductions on the first traced step; the engine runs them on the others."""
    from worker import engine as engine_module

    runs = []
    real = engine_module.run_program
    monkeypatch.setattr(engine_module, "run_program", lambda program: runs.append(program) or real(program))
    spec = ExperimentSpec(depth=4, width=16, steps=12, trace_every=3, norm=norm)
    result = train(spec)
    traced = len(result.trace["step"])
    assert traced == 5  # steps 0, 3, 6, 9 and the last
    assert len(runs) == (traced - 1) * (spec.depth + 1)  # every layer of every traced step but the first
    assert len({id(program) for program in runs}) == spec.depth + 1


def recurrent_autograd_pass(spec: ExperimentSpec, x: torch.Tensor, y: torch.Tensor):
    model = build_model(spec)
    recording = Recording()
    out = model(x, recording)
    loss = F.mse_loss(out.squeeze(-1), y) if spec.is_regression() else F.cross_entropy(out, y)
    params = list(model.parameters())
    recording.backward(loss, params)
    return loss, [p.grad for p in params], recording


@pytest.mark.parametrize("dataset", ["adding", "copy_first"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_recurrent_engine_gives_autograds_gradients_at_every_time_step(cell, dataset):
    """Not bit for bit (the weight gradients are one product over all time steps, not a sum of one per step), but
    to float32 rounding: the loss, every parameter's gradient and dLoss/dh_t of every layer and time step."""
    spec = ExperimentSpec(arch="rnn", cell=cell, depth=2, width=12, seq_len=9, dataset=dataset, batch_size=16)
    inputs, outputs = spec.dims()
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(16, 9, inputs, generator=generator)
    y = torch.randn(16, generator=generator) if outputs == 1 else torch.randint(outputs, (16,), generator=generator)
    loss, grads, recording = recurrent_autograd_pass(spec, x, y)

    model = build_model(spec)
    engine = engine_for(model, spec.activation, CPU)
    assert isinstance(engine, RecurrentEngine)
    engine_loss, outputs_ = engine.step(x, y, engine.recording)

    assert engine_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    torch.testing.assert_close(outputs_, recording.pre_activations[-1], rtol=1e-5, atol=1e-6)
    for param, grad in zip(model.parameters(), grads, strict=True):
        torch.testing.assert_close(param.grad, grad, rtol=1e-4, atol=1e-6)
    mine, theirs = engine.recording, recording
    assert len(mine.pre_activation_grads) == len(theirs.pre_activation_grads) == 2 * 9 + 1
    for a, b in zip(mine.pre_activation_grads, theirs.pre_activation_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    for a, b in zip(mine.activations, theirs.activations):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch", [8, 64])
def test_the_lstms_c_recurrence_gives_what_the_pytorch_calls_give(monkeypatch, batch):
    """Three ways through time: a layer's whole recurrence in one C call (PyTorch's sgemm and the step kernel; batch
    64 splits its rows over two threads), a C call per time step, and PyTorch's calls. The forward's sigmoid and
    tanh are the kernel's own (within 2e-7 of PyTorch's), the backward's arithmetic PyTorch's formulas: the
    gradients agree to float32 rounding."""
    from worker import engine as engine_module

    assert engine_module.lstm_step_forward is not None and engine_module.lstm_step_backward is not None
    spec = ExperimentSpec(arch="rnn", cell="lstm", depth=2, width=32, seq_len=7, dataset="copy_first", batch_size=batch)
    inputs, outputs = spec.dims()
    generator = torch.Generator().manual_seed(7)
    x, y = torch.randn(batch, 7, inputs, generator=generator), torch.randint(outputs, (batch,), generator=generator)

    def one_step():
        torch.manual_seed(0)
        model = build_model(spec)
        engine = engine_for(model, spec.activation, CPU)
        engine.step(x, y, engine.recording)
        return [p.grad.clone() for p in model.parameters()] + [g.clone() for g in engine.recording.pre_activation_grads]

    with torch_threads(2):
        assert stats.share_torch_blas()
        by_sequence = one_step()
        assert stats.share_torch_blas(False) is False
        by_step = one_step()
        stats.share_torch_blas()
        monkeypatch.setattr(engine_module, "lstm_step_forward", None)
        monkeypatch.setattr(engine_module, "lstm_step_backward", None)
        by_torch = one_step()
    for sequence, step, torch_calls in zip(by_sequence, by_step, by_torch, strict=True):
        torch.testing.assert_close(sequence, torch_calls, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(step, torch_calls, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_recurrent_run_by_the_engine_traces_as_autograd_does(cell):
    spec = ExperimentSpec(arch="rnn", cell=cell, depth=2, width=16, seq_len=12, steps=15, dataset="adding")
    by_hand, by_autograd = train(spec, engine=True), train(spec, engine=False)
    assert by_hand.final_loss == pytest.approx(by_autograd.final_loss, rel=1e-4)
    for name, values in by_autograd.trace.items():
        np.testing.assert_allclose(by_hand.trace[name], values, rtol=1e-3, atol=1e-6, err_msg=name)


def test_the_cnn_engine_reports_each_pre_activation_gradient_to_the_probe():
    """With a probe (large blocks), the CNN engine measures dLoss/dz while backward has it in cache, and the tracer
    takes those sums instead of reading the gradients again: the recording does not keep them."""
    from worker import stats

    spec = ExperimentSpec(arch="cnn", dataset="digits", depth=2, width=16, batch_size=64)
    model = build_model(spec)
    engine = engine_for(model, "relu", CPU)
    probe = stats.HostProbe(ACTIVATIONS["relu"], 1, 2, 3, deltas=3)
    recording = Recording(probe.start())
    assert probe.delta_squares() is None
    x, y = batch(spec, 64)
    engine.step(x, y, recording)
    _, _, by_autograd = autograd_pass(spec, x, y)
    np.testing.assert_array_equal(probe.delta_squares(), stats.host_sums(by_autograd.pre_activation_grads))
    assert recording.pre_activation_grads == []
    probe.start()
    assert probe.delta_squares() is None  # a new pass has reported none yet
