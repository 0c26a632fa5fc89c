"""The training loop as its callers see it: results, chunks, schedule, divergence, cancel, the literature."""

import numpy as np
import pytest
import torch

from shared.spec import ExperimentSpec
from shared.traces import ALL_METRICS, DTYPES, LAYER_METRICS, TIME_METRICS, TraceChunk
from worker.activations import ACTIVATIONS
from worker.train import TrainResult, resolve_device, train

SMALL = {"depth": 3, "width": 8, "steps": 6, "batch_size": 16}


class RecordingSink:
    """A sink that keeps what it is given and answers `keep_going` (False: cancel)."""

    def __init__(self, keep_going: bool = True):
        self.keep_going = keep_going
        self.started: tuple[list[dict], str] | None = None
        self.chunks: list[tuple[TraceChunk, int]] = []

    def start(self, layers: list[dict], device: str) -> None:
        self.started = (layers, device)

    def chunk(self, chunk: TraceChunk, steps_done: int) -> bool:
        self.chunks.append((chunk, steps_done))
        return self.keep_going


def test_a_run_reports_its_layers_trace_and_summary():
    sink = RecordingSink()
    spec = ExperimentSpec(**SMALL)
    result = train(spec, sink)
    layers = [{"name": "hidden.0", "kind": "linear"}, {"name": "hidden.1", "kind": "linear"},
              {"name": "hidden.2", "kind": "linear"}, {"name": "output", "kind": "linear"}]
    assert isinstance(result, TrainResult)
    assert result.layers == layers and sink.started == (layers, "cpu") and result.device == "cpu"
    assert result.steps_run == 6 and not result.cancelled and result.diverged_step is None
    assert 0 < result.final_loss < 5 and 0 <= result.final_accuracy <= 1 and result.train_seconds > 0
    assert set(result.trace) == set(ALL_METRICS)
    for name, array in result.trace.items():
        assert array.dtype == DTYPES[name]
        assert array.shape == ((6, 4) if name in LAYER_METRICS else (6, 0) if name in TIME_METRICS else (6,))
    # The output layer has no activation; every other value is a number.
    for name in ("act_mean", "act_std", "dead_fraction", "saturated_fraction"):
        assert np.isnan(result.trace[name][:, -1]).all() and np.isfinite(result.trace[name][:, :-1]).all()
    # The chunks, end to end, are the trace; progress counts steps.
    for name in ALL_METRICS:
        np.testing.assert_array_equal(np.concatenate([c.arrays[name] for c, _ in sink.chunks]), result.trace[name])
    assert sink.chunks[-1][1] == 6


def test_same_seed_same_trace_bit_for_bit():
    spec = ExperimentSpec(**SMALL, norm="batchnorm", optimizer="adam", lr=0.01, seed=11)
    first, second = train(spec).trace, train(spec).trace
    for name in ALL_METRICS:
        np.testing.assert_array_equal(first[name], second[name])
    other = train(spec.model_copy(update={"seed": 12})).trace
    assert not np.array_equal(first["grad_norm"], other["grad_norm"])


def test_tracing_does_not_change_the_training():
    clipping = {"mode": "norm", "threshold": 0.5}
    spec = ExperimentSpec(**{**SMALL, "steps": 20}, optimizer="momentum", clipping=clipping)
    traced, untraced = train(spec, trace=True), train(spec, trace=False)
    assert traced.final_loss == untraced.final_loss
    assert untraced.trace["step"].shape == (0,) and untraced.trace["grad_norm"].shape == (0, 4)


@pytest.mark.parametrize(("steps", "every", "expected"), [(10, 3, [0, 3, 6, 9]), (11, 3, [0, 3, 6, 9, 10]),
                                                          (5, 1, [0, 1, 2, 3, 4]), (4, 10, [0, 3]), (1, 1, [0])])
def test_trace_every_keeps_every_kth_step_and_the_last(steps, every, expected):
    spec = ExperimentSpec(**{**SMALL, "steps": steps, "trace_every": every})
    assert train(spec).trace["step"].tolist() == expected


def test_chunks_split_a_long_run_without_losing_rows():
    sink = RecordingSink()
    spec = ExperimentSpec(**{**SMALL, "steps": 30, "trace_every": 2})
    result = train(spec, sink, flush_seconds=0.0)
    assert len(sink.chunks) == 30  # flushed after every step, traced or not
    assert [progress for _, progress in sink.chunks] == list(range(1, 31))
    assert result.trace["step"].tolist() == list(range(0, 30, 2)) + [29]


EXPLODING = {**SMALL, "steps": 200, "lr": 1e5, "activation": "linear", "init": "normal", "init_std": 3.0}


def test_divergence_is_recorded_not_raised():
    result = train(ExperimentSpec(**EXPLODING))
    assert result.diverged_step is not None and result.diverged_step < 20
    assert result.final_loss is None and result.final_accuracy is None
    # The trace ends with the step whose loss was not finite.
    assert result.trace["step"][-1] == result.diverged_step
    assert np.isfinite(result.trace["loss"][:-1]).all() and not np.isfinite(result.trace["loss"][-1])


def test_divergence_stops_training_at_the_next_flush():
    sink = RecordingSink()
    result = train(ExperimentSpec(**EXPLODING), sink, flush_seconds=0.0)
    assert result.steps_run == result.diverged_step + 1
    assert sink.chunks[-1][0].arrays["step"][-1] == result.diverged_step


def test_divergence_between_traced_steps_keeps_the_rows_before_it():
    result = train(ExperimentSpec(**EXPLODING, trace_every=50))
    assert 0 < result.diverged_step < 50
    assert result.trace["step"].tolist() == [0]


def test_a_sink_that_says_stop_cancels_the_run():
    sink = RecordingSink(keep_going=False)
    result = train(ExperimentSpec(**{**SMALL, "steps": 100}), sink, flush_seconds=0.0)
    assert result.cancelled and result.steps_run == 1 and len(sink.chunks) == 1
    assert result.trace["step"].tolist() == [0]
    assert result.final_loss is not None


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("init", ["default", "xavier_uniform", "xavier_normal", "kaiming_uniform",
                                  "kaiming_normal", "lecun_normal", "orthogonal", "normal"])
def test_every_activation_and_init_trains(activation, init):
    spec = ExperimentSpec(depth=2, width=8, steps=3, batch_size=8, activation=activation, init=init)
    result = train(spec)
    assert result.final_loss is not None and result.steps_run == 3
    assert np.isfinite(result.trace["grad_norm"]).all()


@pytest.mark.parametrize("options", [{"norm": "batchnorm", "residual": True}, {"norm": "layernorm"},
                                     {"dataset": "digits"}, {"dataset": "random", "residual": True}])
def test_norms_skips_and_datasets_train(options):
    spec = ExperimentSpec(**{**SMALL, "steps": 30}, **options, optimizer="adam", lr=0.01)
    result = train(spec)
    assert result.final_loss < result.trace["loss"][0]


def test_deep_sigmoid_with_default_init_vanishes():
    # Glorot & Bengio 2010: the first layers of a deep sigmoid net barely get a gradient.
    spec = ExperimentSpec(depth=20, width=64, steps=1, activation="sigmoid", dataset="random")
    grad = train(spec).trace["grad_norm"][0]
    assert grad[0] / grad[19] < 1e-3


def test_deep_relu_with_he_init_keeps_its_gradients():
    # He et al. 2015: with fan-in gain sqrt(2) the gradient neither vanishes nor explodes with depth.
    spec = ExperimentSpec(depth=20, width=64, steps=1, init="kaiming_normal", dataset="random", batch_size=256)
    grad = train(spec).trace["grad_norm"][0]
    assert 0.1 < grad[0] / grad[19] < 10


def test_a_saturated_sigmoid_net_reads_saturated():
    # Weights of std 3 push most pre-activations far into the sigmoid's flat tails.
    spec = ExperimentSpec(depth=3, width=32, steps=1, activation="sigmoid", init="normal", init_std=3.0,
                          dataset="random")
    trace = train(spec).trace
    assert (trace["saturated_fraction"][0, 1:3] > 0.5).all()


def test_dying_relus_read_dead():
    healthy = ExperimentSpec(depth=4, width=32, steps=1, init="kaiming_normal", dataset="random")
    assert train(healthy).trace["dead_fraction"][0, :4].max() < 0.1
    # A learning rate far too high knocks most ReLUs of some layer into never firing again.
    high_lr = ExperimentSpec(depth=4, width=32, steps=60, lr=5.0, dataset="random", batch_size=128)
    assert train(high_lr).trace["dead_fraction"][-1, :4].max() > 0.5


def test_device_choice():
    spec = ExperimentSpec(**SMALL)
    assert resolve_device(spec, "cpu") == torch.device("cpu")
    assert resolve_device(spec, "auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(spec.model_copy(update={"device": "cpu"}), "auto") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            resolve_device(spec.model_copy(update={"device": "cuda"}))
