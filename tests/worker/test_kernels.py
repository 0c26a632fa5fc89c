"""The tracer's two ways to reduce on a CPU: the C kernels (worker/_kernels.c), which the other tests
exercise, and the PyTorch path that a GPU uses (and a CPU where the package was built without a
compiler), run here on the CPU against the same brute-force reference."""

import math

import numpy as np
import pytest
import torch

from shared.spec import ExperimentSpec
from tests.worker.conftest import torch_threads
from tests.worker.reference import assert_traces_match, block_stack_trace
from worker import stats
from worker.activations import ACTIVATIONS, get_activation
from worker.train import train


@pytest.fixture
def pytorch_path(monkeypatch):
    """Reduce with PyTorch, as on a GPU."""
    monkeypatch.setattr(stats, "_kernels", None)


@pytest.fixture
def forward_probe(monkeypatch):
    """Measure every block during the forward pass, as large ones are (these are small)."""
    monkeypatch.setattr(stats, "PROBE_MIN_VALUES", 1)


def test_the_kernels_are_built_here():
    # CI installs with a compiler: a missing build would silently test only the slow path.
    assert stats._kernels is not None
    assert stats.host_kernels(torch.device("cpu"))


@pytest.mark.parametrize(
    "options",
    [
        {"activation": "relu"},
        {"activation": "gelu", "optimizer": "adam", "lr": 0.01},
        {"activation": "sigmoid", "norm": "batchnorm", "residual": True},
        {"arch": "cnn", "depth": 2, "width": 4, "batch_size": 8},
    ],
    ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()),
)
def test_the_pytorch_path_matches_the_reference(pytorch_path, options):
    spec = ExperimentSpec.model_validate({"depth": 3, "width": 8, "steps": 3, "batch_size": 32, "seed": 3, **options})
    assert_traces_match(train(spec, device="cpu").trace, block_stack_trace(spec))


@pytest.mark.parametrize(
    "options",
    [
        {"activation": "relu"},
        {"activation": "silu", "optimizer": "momentum", "norm": "layernorm"},
        {"arch": "cnn", "depth": 2, "width": 4, "batch_size": 8, "residual": True},
        {"clipping": {"mode": "norm", "threshold": 0.05}, "optimizer": "adam", "lr": 0.01},
    ],
    ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()),
)
def test_the_forward_probe_matches_the_reference(forward_probe, options):
    spec = ExperimentSpec.model_validate({"depth": 3, "width": 8, "steps": 3, "batch_size": 32, "seed": 5, **options})
    assert_traces_match(train(spec, device="cpu").trace, block_stack_trace(spec))


@pytest.mark.parametrize("probe", [False, True], ids=["after_backward", "forward_probe"])
def test_both_paths_give_the_same_rnn_trace(monkeypatch, probe):
    if probe:
        monkeypatch.setattr(stats, "PROBE_MIN_VALUES", 1)
    spec = ExperimentSpec(arch="rnn", cell="lstm", depth=2, width=8, seq_len=6, steps=3, batch_size=16)
    kernels = train(spec, device="cpu").trace
    monkeypatch.setattr(stats, "_kernels", None)
    pytorch = train(spec, device="cpu").trace
    for name in kernels:
        np.testing.assert_allclose(kernels[name], pytorch[name], rtol=2e-4, atol=1e-7, err_msg=name)


def test_norms_add_squares_below_float32s_reach():
    # Squares of 1e-25 underflow float32 (PyTorch's sum); the kernels sum in float64.
    tiny = torch.full((1000,), 1e-25)
    assert stats.host_norms([tiny]).item() == pytest.approx(1e-25 * math.sqrt(1000), rel=1e-6)
    assert stats.torch_norms([tiny]).item() < 1e-25


def test_norms_of_non_contiguous_tensors_and_of_overflowing_ones():
    x = torch.randn(64, 32)
    assert stats.host_norms([x.t()]).item() == pytest.approx(torch.linalg.vector_norm(x.double()).item(), rel=1e-6)
    assert stats.host_norms([torch.full((4,), 3e38)]).item() == math.inf


def test_the_kernels_refuse_other_dtypes():
    with pytest.raises(TypeError, match="float32"):
        stats.host_norms([torch.ones(3, dtype=torch.float64)])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("unit_dim,shape", [(1, (64, 48)), (1, (8, 6, 5, 5)), (2, (7, 9, 12))])
def test_block_statistics_agree_with_pytorch(name, unit_dim, shape):
    activation = get_activation(name)
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(shape, generator=generator) * 4 for _ in range(3)]
    inputs[1][:, :3] = -5.0  # a few dead units where the activation allows it
    outputs = [activation.module()(z) for z in inputs]
    workspace = stats.Workspace(3, shape, torch.device("cpu"))
    expected = stats.torch_activation_stats(outputs, inputs, activation, workspace.scratch, workspace.work, unit_dim)
    got = stats.host_activation_stats(outputs, inputs, activation, unit_dim)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_the_std_of_near_constant_outputs_keeps_its_digits():
    # Saturated sigmoid units: values within 1e-4 of 1.0, where E[a^2] - E[a]^2 in float32 gives noise.
    a = 1.0 - torch.rand(256, 64, generator=torch.Generator().manual_seed(1)) * 1e-4
    got = stats.host_activation_stats([a], [a], get_activation("sigmoid"))
    assert got[1, 0].item() == pytest.approx(a.double().std(unbiased=False).item(), rel=1e-4)


def test_a_row_gets_the_root_of_the_sums_its_columns_name_and_the_values():
    row = np.full(6, -7.0, np.float32)
    sums = np.array([9.0, 16.0, 1e80, 4.0])
    # sum 0 and 1 add to column 0 (5) and 1 also to column 5 (4); 1e80 overflows float32 (inf); sum 3 goes nowhere.
    columns = np.array([[0, -1], [0, 5], [2, -1], [-1, -1]], np.int64)
    stats.host_fill_row(row, sums, columns, np.array([0.25, 0.5]), np.array([3, 4], np.int64))
    np.testing.assert_array_equal(row, np.array([5.0, -7.0, np.inf, 0.25, 0.5, 4.0], np.float32))


@pytest.mark.parametrize(
    "columns,values_at,error",
    [
        ([[0, 6]], [1], IndexError),  # a column past the row's end
        ([[0, -2]], [1], IndexError),
        ([[0, 1]], [6], IndexError),
        ([[0, 1], [2, 3]], [1], ValueError),  # two sums' columns for one sum
    ],
)
def test_a_row_refuses_columns_outside_it(columns, values_at, error):
    with pytest.raises(error):
        stats.host_fill_row(
            np.zeros(6, np.float32), np.ones(1), np.array(columns, np.int64), np.ones(1), np.array(values_at, np.int64)
        )


def test_accuracy_takes_the_first_largest_logit_and_nan_as_largest_like_torch():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randint(0, 3, (500, 4), generator=generator).float()  # many ties
    logits[::7, 2] = math.nan
    logits[::11, 0] = math.nan
    targets = torch.randint(0, 4, (500,), generator=generator)
    expected = (logits.argmax(dim=1) == targets).sum().item() / len(targets)
    assert stats.host_accuracy(logits, targets) == pytest.approx(expected, abs=1e-12)
    assert stats.host_accuracy(logits[:, :1].contiguous(), torch.zeros(500, dtype=torch.int64)) == 1.0
    with pytest.raises(TypeError):
        stats.host_accuracy(logits, targets.int())


def test_update_ratio_is_numpys_float32_quotient_with_ieee_division():
    # columns: 0-2 gradient norms, 3-5 weight norms, 6-8 the ratios
    row = np.array([2.0, 0.0, 3.0, 4.0, 0.0, 0.0, -1.0, -1.0, -1.0], np.float32)
    lr = 0.1
    stats.host_update_ratio(row, 0, 3, 6, 3, lr)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = (row[0:3] * lr) / row[3:6]
    np.testing.assert_array_equal(row[6:], expected)  # bit for bit, 0/0 NaN and x/0 inf included
    assert math.isnan(row[7]) and row[8] == math.inf
    generator = np.random.default_rng(3)
    row = generator.random(30).astype(np.float32)
    expected = (row[:10] * np.float32(1e-3)) / row[10:20]
    stats.host_update_ratio(row, 0, 10, 20, 10, 1e-3)
    np.testing.assert_array_equal(row[20:], expected)


@pytest.mark.parametrize("start", [(0, 3, 7), (-1, 3, 6), (0, 3, 8)])
def test_update_ratio_refuses_columns_outside_the_row(start):
    with pytest.raises(IndexError):
        stats.host_update_ratio(np.zeros(9, np.float32), *start, 3, 0.1)


@pytest.mark.parametrize(
    "scale",
    [1.0, 1e-25, 1e-10, 1e15, 1e30, 3e38],
    ids=["unit", "below float32 squares", "small", "large", "beyond float32 squares", "near float32 max"],
)
def test_sums_of_squares_reach_float64_at_every_scale(scale):
    """Chunks are summed in float32 where that is exact enough, and again in float64 where float32 would underflow
    or overflow: every scale reads its float64 sum to about float32's precision."""
    generator = torch.Generator().manual_seed(4)
    # 5,000 values: whole chunks of 1,024 and a tail; a few values 1,000 times the rest.
    x = torch.randn(5000, generator=generator, dtype=torch.float64)
    x[::997] *= 1000
    x = (x * scale / 1000).float()
    expected = torch.sum(x.double() ** 2).item()
    got = stats.host_sums([x])[0]
    assert got == pytest.approx(expected, rel=2e-6)


def test_a_chunk_with_one_huge_value_among_tiny_ones_keeps_both_scales():
    x = torch.full((2048,), 1e-30)
    x[5] = 1e25  # its square overflows float32: that chunk is summed in float64
    got = stats.host_sums([x])[0]
    assert got == pytest.approx(torch.sum(x.double() ** 2).item(), rel=1e-12)
    assert math.isnan(stats.host_sums([torch.full((3000,), math.nan)])[0])


def test_a_program_makes_the_same_reductions_as_the_kernels_called_one_by_one():
    generator = torch.Generator().manual_seed(5)
    tensors = [torch.randn(shape, generator=generator) for shape in [(64, 32), (32,), (3000,)]]
    activation = get_activation("tanh")
    block_input = torch.randn(16, 8, 4, 4, generator=generator) * 3
    block = activation.module()(block_input)
    sums, blocks = np.full(5, -1.0), np.full((2, 4), -1.0)
    program = stats.Program()
    for i, tensor in enumerate(tensors):
        program.sum_of_squares(tensor, sums, i + 1)  # leaves sums[0] and sums[4] alone
    program.block(block, block_input, stats.saturation_limits(activation), 1, blocks, 1)
    stats.run_program(program.build())
    np.testing.assert_array_equal(sums[1:4], stats.host_sums(tensors))
    assert sums[0] == sums[4] == -1.0
    np.testing.assert_array_equal(blocks[1], stats.host_activation_array([block], [block_input], activation)[0])
    assert (blocks[0] == -1.0).all()


@pytest.mark.parametrize(
    "program",
    [[7, 0, 0, 0], [0, 0, 0], [1, 0, 0, 0, 1, 0, 1, 0], [1, 0, 0, 0, 1, 1]],
    ids=["unknown kind", "cut short", "no units", "block cut short"],
)
def test_a_malformed_program_runs_nothing(program):
    with pytest.raises(ValueError, match="malformed"):
        stats.run_program(np.array(program, np.int64))


def test_a_program_writes_only_into_float64_arrays_within_them():
    program = stats.Program()
    with pytest.raises(ValueError):
        program.sum_of_squares(torch.ones(3), np.zeros(2, np.float32), 0)
    with pytest.raises(ValueError):
        program.sum_of_squares(torch.ones(3), np.zeros(2), 2)


@pytest.fixture
def two_torch_threads():
    with torch_threads(2):
        yield
    stats.share_torch_threads()


def test_the_kernels_find_the_openmp_runtime_torch_runs_on():
    if "parallel backend: OpenMP" in torch.__config__.parallel_info():
        assert stats.openmp_entry_points() is not None and stats.share_torch_threads()
    with pytest.raises(ValueError, match="all four"):
        stats._kernels.use_threads(1, 0, 0, 0)


@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid", "leaky_relu"])
@pytest.mark.parametrize("unit_dim,shape", [(1, (64, 32, 8, 8)), (1, (1024, 96))], ids=["conv", "dense"])
def test_large_reductions_split_over_torchs_threads_agree_with_one_thread(two_torch_threads, name, unit_dim, shape):
    """Each thread reduces a share of the rows; the shares' sums add up and a unit is alive if any share saw it
    alive: units alive only in the last row or only in the first stay alive."""
    activation = get_activation(name)
    generator = torch.Generator().manual_seed(6)
    z = torch.randn(shape, generator=generator) * 3
    z[:, :6] = -4.0  # dead where the activation allows it...
    z[-1, 1], z[0, 2] = 1.0, 1.0  # ...but for units 1 and 2, alive in one row at either end
    a = activation.module()(z)
    tensors = [a, z, torch.randn(300_000, generator=generator)]

    def measured():
        return stats.host_sums(tensors), stats.host_activation_array([a], [z], activation, unit_dim)

    assert stats.share_torch_threads(False) is False
    serial_sums, serial_stats = measured()
    assert stats.share_torch_threads()
    split_sums, split_stats = measured()
    np.testing.assert_allclose(split_sums, serial_sums, rtol=1e-12)
    np.testing.assert_allclose(split_stats, serial_stats, rtol=1e-9, atol=1e-12)
    assert split_stats[0, 2] == serial_stats[0, 2]  # the dead share: a count
    alive = (a > 0).transpose(0, 1).reshape(shape[1], -1).any(1)
    assert split_stats[0, 2] == pytest.approx(1 - alive.double().mean().item())


@pytest.mark.parametrize("batch", [64, 37])
def test_lstm_time_steps_split_over_torchs_threads_give_what_one_thread_gives(two_torch_threads, batch):
    """Each thread takes whole rows of the batch (37 rows: unequal shares), and a row's values are its own: the
    split changes nothing, to the bit."""
    from worker.engine import engine_for
    from worker.models import build_model

    spec = ExperimentSpec(arch="rnn", cell="lstm", depth=2, width=64, seq_len=6, dataset="adding", batch_size=batch)
    generator = torch.Generator().manual_seed(8)
    x, y = torch.randn(batch, 6, 2, generator=generator), torch.randn(batch, generator=generator)

    def one_step():
        torch.manual_seed(0)
        model = build_model(spec)
        engine = engine_for(model, spec.activation, torch.device("cpu"))
        loss, _ = engine.step(x, y, engine.recording)
        return [loss] + [p.grad.clone() for p in model.parameters()] + engine.recording.pre_activation_grads

    assert stats.share_torch_threads(False) is False
    serial = one_step()
    assert stats.share_torch_threads()
    for split, alone in zip(one_step(), serial, strict=True):
        assert torch.equal(split, alone)
