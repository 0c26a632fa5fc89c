"""What the tracer measures, as functions of device tensors: few kernels, no host sync.

These are the pure half of tracing (the tracer decides when and where to keep
the results). Each returns small device tensors; nothing here calls `.item()`.

Two implementations of the reductions. On a GPU, PyTorch's: per-tensor norms
through `torch._foreach_norm` (one fused kernel), per-layer activation statistics
over the hidden activations stacked into one scratch tensor. On a CPU, the C
kernels of worker/_kernels.c: every tensor reduced in one pass and one call, in
float64, where PyTorch would make a pass per tensor and per statistic and lose
squares below ~1e-19 in float32; large tensors are split over PyTorch's own
threads (`share_torch_threads`). Where the package was installed without a C
compiler the CPU uses the PyTorch path too.
"""

import ctypes
import math

import numpy as np
import torch
from torch import Tensor

from worker.activations import Activation

try:
    from worker import _kernels
except ImportError:  # built without a C compiler: see pyproject.toml
    _kernels = None


def loaded_functions(library: str, names: tuple[str, ...]) -> tuple[int, ...] | None:
    """The addresses of the functions `names` in the library this process has loaded whose path holds
    `library` (found through /proc/self/maps, Linux), or None where it has none or they are not there."""
    try:
        with open("/proc/self/maps") as maps:
            path = next((line.split()[-1] for line in maps if library in line), None)
        if path is None:
            return None
        loaded = ctypes.CDLL(path)  # the library already loaded: the same handle, the same state
        return tuple(ctypes.cast(getattr(loaded, name), ctypes.c_void_p).value for name in names)
    except (OSError, AttributeError):
        return None


def openmp_entry_points() -> tuple[int, int, int, int] | None:
    """The addresses of GOMP_parallel, omp_get_max_threads, omp_get_thread_num and omp_get_num_threads in the
    GNU OpenMP runtime PyTorch runs its CPU kernels on, or None where it runs on another (or none)."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    names = ("GOMP_parallel", "omp_get_max_threads", "omp_get_thread_num", "omp_get_num_threads")
    return loaded_functions("/libgomp", names)


def share_torch_threads(on: bool = True) -> bool:
    """Let the C kernels split large reductions over PyTorch's own CPU threads (see worker/_kernels.c);
    `on=False`: on the calling thread only. Returns whether they now split."""
    entry_points = openmp_entry_points() if on and _kernels is not None else None
    if _kernels is not None:
        _kernels.use_threads(*(entry_points or (0, 0, 0, 0)))
    return entry_points is not None


share_torch_threads()


def torch_sgemm() -> int | None:
    """The address of `sgemm_` (BLAS's Fortran interface, 32-bit ints) in the MKL that PyTorch's CPU library
    carries, or None where there is none (another BLAS, another platform)."""
    if not torch.backends.mkl.is_available():
        return None
    found = loaded_functions("/libtorch_cpu", ("sgemm_",))
    return None if found is None else found[0]


_blas_shared = False


def share_torch_blas(on: bool = True) -> bool:
    """Let the C kernels' LSTM recurrence (worker/_kernels.c `lstm_sequence_*`) call PyTorch's own sgemm;
    `on=False`: not (worker.engine then steps through time from Python). Returns whether they now can."""
    global _blas_shared
    address = torch_sgemm() if on and _kernels is not None else None
    if _kernels is not None:
        _kernels.use_blas(address or 0)
    _blas_shared = address is not None
    return _blas_shared


def blas_shared() -> bool:
    """Whether the C kernels can call PyTorch's sgemm (`share_torch_blas`)."""
    return _blas_shared


share_torch_blas()


def host_kernels(device: torch.device) -> bool:
    """Whether the reductions on this device go through the C kernels."""
    return device.type == "cpu" and _kernels is not None


def norms(tensors: list[Tensor]) -> Tensor:
    """The L2 norm of each tensor, as one (n,) float32 tensor on their device."""
    if tensors and host_kernels(tensors[0].device):
        return host_norms(tensors)
    return torch_norms(tensors)


def torch_norms(tensors: list[Tensor]) -> Tensor:
    """`norms` by PyTorch: one foreach kernel, summed in float32 as clip_grad_norm_ does."""
    return torch.stack(torch._foreach_norm(tensors))


def host_norms(tensors: list[Tensor]) -> Tensor:
    """`norms` by the C kernel."""
    sums = host_sums(tensors)
    with np.errstate(over="ignore"):  # a norm beyond float32's range is inf, as on the PyTorch path
        return torch.from_numpy(np.sqrt(sums, out=sums).astype(np.float32))


def host_sums(tensors: list[Tensor], out: np.ndarray | None = None) -> np.ndarray:
    """The sum of squares of each float32 CPU tensor, in float64, by one call of the C kernel (into `out` if given)."""
    tensors = [t if t.is_contiguous() else t.contiguous() for t in tensors]
    sums = np.empty(len(tensors)) if out is None else out
    _kernels.sumsq(addresses(tensors), [t.numel() for t in tensors], sums)
    return sums


def addresses(tensors: list[Tensor]) -> list[int]:
    """Where the values of contiguous float32 tensors start, for the C kernels."""
    if any(t.dtype is not torch.float32 for t in tensors):
        raise TypeError(f"the tracer's kernels take float32 tensors, not {[str(t.dtype) for t in tensors]}")
    return [t.data_ptr() for t in tensors]


def host_fill_row(
    row: np.ndarray, sums: np.ndarray, sum_columns: np.ndarray, values: np.ndarray, value_columns: np.ndarray
) -> None:
    """row[c] = sqrt of the sums whose columns (two per sum, -1 for none) name c; then row[value_columns] = values."""
    _kernels.fill_row(row, sums, sum_columns, values, value_columns)


def host_update_ratio(row: np.ndarray, updates: int, weights: int, ratios: int, count: int, scale: float) -> None:
    """row[ratios + i] = scale * row[updates + i] / row[weights + i], for i < count (x / 0 is inf, 0 / 0 NaN)."""
    _kernels.update_ratio(row, updates, weights, ratios, count, scale)


def kernel_ready(tensor: Tensor) -> Tensor:
    """The tensor as the C kernels read it: float32 values at consecutive addresses."""
    if tensor.dtype is not torch.float32:
        raise TypeError(f"the tracer's kernels take float32 tensors, not {tensor.dtype}")
    return tensor if tensor.is_contiguous() else tensor.contiguous()


def saturation_limits(activation: Activation) -> tuple[tuple[float, float, float, float], bool]:
    """The kernel's form of `Activation.saturated_intervals`: two intervals (an empty one is [inf, -inf])
    and whether they apply to the activation's input."""
    intervals, on_input = activation.saturated_intervals()
    if len(intervals) > 2:
        raise ValueError(f"{activation.name}: the kernel takes at most two saturated intervals")
    flat = [bound for interval in intervals for bound in interval] + [math.inf, -math.inf] * (2 - len(intervals))
    return (flat[0], flat[1], flat[2], flat[3]), on_input


def host_block_stats(
    out: np.ndarray, row: int, activation: Tensor, activation_input: Tensor, unit_dim: int, saturation: tuple
) -> None:
    """out[row] = mean, std, dead fraction, saturated fraction of one block, by the C kernel (see `activation_stats`)."""
    limits, on_input = saturation
    activation = kernel_ready(activation)
    tested = kernel_ready(activation_input) if on_input else activation
    outer, units, inner = unit_layout(activation.shape, unit_dim)
    _kernels.block_stats(out, row, activation.data_ptr(), tested.data_ptr(), outer, units, inner, *limits)


def unit_layout(shape: torch.Size, unit_dim: int) -> tuple[int, int, int]:
    """A block's shape as the kernel reads it: outer x units x inner."""
    return math.prod(shape[:unit_dim]), shape[unit_dim], math.prod(shape[unit_dim + 1 :])


# Blocks at least this large are measured during the forward pass (HostProbe), while in cache;
# smaller ones all together after backward, where one call costs less than one per block.
PROBE_MIN_VALUES = 1 << 15


class HostProbe:
    """On a CPU, what the tracer measures during a traced forward pass, while it is in cache.

    A layer's weights have just been read by its matrix product, a block's activations
    just written: measured then, they come from the core's cache. Measured after
    backward, a deep network's weights and activations would come from memory again.
    The model's forward calls `block` per hidden block and `weights` per weighted layer
    (through its Recording), in forward order.
    """

    def __init__(
        self, activation: Activation, unit_dim: int, blocks: int, weights: int, weight_sums=None, deltas: int = 0
    ):
        self.saturation = saturation_limits(activation)
        self.unit_dim = unit_dim
        self.stats = np.empty((blocks, 4))
        # The sums of squares of the weights, in forward order: into the caller's array if it gives one.
        self.weight_sums = np.empty(weights) if weight_sums is None else weight_sums
        # Those of the pre-activation gradients, where a hand-written backward reports them (worker.engine's CNN).
        self.delta_sums = np.empty(deltas)
        self._blocks = self._weights = self._deltas = 0

    def start(self) -> "HostProbe":
        """Ready for a new forward pass."""
        self._blocks = self._weights = self._deltas = 0
        return self

    def delta(self, index: int, gradient: Tensor) -> None:
        """The backward pass's loss gradient at pre-activation `index` (forward order), just computed."""
        gradient = kernel_ready(gradient)
        self.delta_sums[index] = _kernels.sumsq_one(gradient.data_ptr(), gradient.numel())
        self._deltas += 1

    def delta_squares(self) -> np.ndarray | None:
        """The pass's sums of squares of the pre-activation gradients, if backward reported every one."""
        return self.delta_sums if len(self.delta_sums) and self._deltas == len(self.delta_sums) else None

    def block(self, activation_input: Tensor, activation: Tensor) -> None:
        host_block_stats(self.stats, self._blocks, activation, activation_input, self.unit_dim, self.saturation)
        self._blocks += 1

    def weights(self, weights: list[Tensor]) -> None:
        for weight in weights:
            weight = kernel_ready(weight)
            self.weight_sums[self._weights] = _kernels.sumsq_one(weight.data_ptr(), weight.numel())
            self._weights += 1

    def block_stats(self) -> np.ndarray:
        """The pass's activation statistics, float64 (blocks, 4) as `host_activation_array` gives them."""
        if self._blocks != len(self.stats):
            raise RuntimeError(f"the forward pass reported {self._blocks} of {len(self.stats)} blocks")
        return self.stats

    def weight_squares(self) -> np.ndarray:
        """The pass's sums of squares of the weights, in forward order, float64."""
        if self._weights != len(self.weight_sums):
            raise RuntimeError(f"the forward pass reported {self._weights} of {len(self.weight_sums)} weights")
        return self.weight_sums


def batch_accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Share of the batch whose largest logit is the target class, as a 0-d tensor."""
    return (logits.argmax(dim=1) == targets).to(logits.dtype).mean()


def host_accuracy(logits: Tensor, targets: Tensor) -> float:
    """`batch_accuracy` by the C kernel, for float32 logits and int64 targets on the CPU."""
    logits, targets = kernel_ready(logits), targets.contiguous()
    if targets.dtype is not torch.int64 or logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise TypeError(f"accuracy: (rows, classes) logits and (rows,) int64 targets, not {logits.shape}, {targets.dtype}")
    return _kernels.accuracy(logits.data_ptr(), targets.data_ptr(), *logits.shape) / len(targets)


def activation_stats(
    activations: list[Tensor],
    activation_inputs: list[Tensor],
    activation: Activation,
    workspace: "Workspace | None",
    unit_dim: int = 1,
) -> Tensor:
    """Per hidden block: mean, std, dead fraction, saturated fraction of its activations, as (4, blocks).

    `activations` and `activation_inputs` hold one equally shaped tensor per block, whose
    dimension `unit_dim` counts units: (batch, units) for an MLP, (batch, channels, height,
    width) for a CNN (a unit is a channel), (time, batch, units) for an RNN. The std is the
    population std over all of a block's values; a unit is dead when its output is <= 0 at
    every other index (every example, position, time step); an activation is saturated where
    |phi'(input)| < 1 % of max phi'. `workspace` is the PyTorch path's scratch memory (None
    where the C kernels do the work).
    """
    if workspace is None:
        return host_activation_stats(activations, activation_inputs, activation, unit_dim)
    return torch_activation_stats(activations, activation_inputs, activation, workspace.scratch, workspace.work, unit_dim)


class Workspace:
    """Scratch memory of the PyTorch path of `activation_stats`: two tensors the shape of all hidden blocks."""

    def __init__(self, blocks: int, shape: tuple[int, ...], device: torch.device):
        self.scratch = torch.empty(blocks, *shape, device=device)
        self.work = torch.empty(blocks, *shape, device=device)


def host_activation_stats(
    activations: list[Tensor], activation_inputs: list[Tensor], activation: Activation, unit_dim: int = 1
) -> Tensor:
    """`activation_stats` by one call of the C kernel: a pass over each block's outputs (and inputs, for GELU and SiLU)."""
    out = host_activation_array(activations, activation_inputs, activation, unit_dim)
    with np.errstate(over="ignore"):
        return torch.from_numpy(np.ascontiguousarray(out.T, np.float32))


def host_activation_array(
    activations: list[Tensor], activation_inputs: list[Tensor], activation: Activation, unit_dim: int = 1
) -> np.ndarray:
    """`host_activation_stats` as the kernel leaves it: float64 (blocks, 4)."""
    limits, on_input = saturation_limits(activation)
    outputs = [a if a.is_contiguous() else a.contiguous() for a in activations]
    tested = [z if z.is_contiguous() else z.contiguous() for z in activation_inputs] if on_input else outputs
    out = np.empty((len(outputs), 4))
    output_addresses = addresses(outputs)
    tested_addresses = addresses(tested) if on_input else output_addresses
    _kernels.activation_stats(
        out, output_addresses, tested_addresses, *unit_layout(outputs[0].shape, unit_dim), *limits
    )
    return out


class FixedTensors:
    """The host kernels' view of tensors that keep their memory from step to step (the engine's buffers, the
    weights and their gradients): addresses read once, where `host_sums` reads them on every call."""

    def __init__(self, tensors: list[Tensor]):
        if any(not t.is_contiguous() for t in tensors):
            raise ValueError("fixed tensors must be contiguous")
        self.tensors = list(tensors)  # kept alive, so that their memory is theirs while planned
        self.addresses = np.array(addresses(self.tensors), np.int64)
        self.sizes = np.array([t.numel() for t in self.tensors], np.int64)

    def sums(self, out: np.ndarray) -> None:
        """out[i] = the sum of squares of tensor i, in float64."""
        _kernels.sumsq(self.addresses, self.sizes, out)

    def unmoved(self, tensors: list[Tensor]) -> bool:
        """Whether `tensors` are still the planned ones, at the planned addresses."""
        return len(tensors) == len(self.tensors) and all(
            t is planned and t.data_ptr() == address
            for t, planned, address in zip(tensors, self.tensors, self.addresses.tolist())
        )


class FixedBlocks:
    """`host_activation_array` for hidden blocks that keep their memory from step to step: one kernel call."""

    def __init__(self, activations: list[Tensor], activation_inputs: list[Tensor], activation: Activation, unit_dim: int):
        self.limits, on_input = saturation_limits(activation)
        self.outputs = FixedTensors(activations)
        self.tested = FixedTensors(activation_inputs) if on_input else self.outputs
        self.layout = unit_layout(activations[0].shape, unit_dim)
        self.out = np.empty((len(activations), 4))

    def stats(self) -> np.ndarray:
        """Float64 (blocks, 4): each block's mean, std, dead share, saturated share."""
        _kernels.activation_stats(self.out, self.outputs.addresses, self.tested.addresses, *self.layout, *self.limits)
        return self.out


class Program:
    """Reductions planned once and run together by one kernel call (`_kernels.run`), each writing where the plan
    says: sums of squares of tensors, and the statistics of hidden blocks. The tensors must stay where they are
    (the program holds their addresses); the program keeps references to them and to its outputs."""

    SUMSQ, BLOCK = 0, 1

    def __init__(self) -> None:
        self._records: list[int] = []
        self._kept: list = []

    def sum_of_squares(self, tensor: Tensor, out: np.ndarray, index: int) -> None:
        """out[index] = the sum of squares of `tensor` (contiguous float32), in float64."""
        self._records += [self.SUMSQ, _element_address(out, index), *addresses([kernel_ready(tensor)]), tensor.numel()]
        self._kept += [tensor, out]

    def block(
        self, activation: Tensor, activation_input: Tensor, saturation: tuple, unit_dim: int, out: np.ndarray, row: int
    ) -> None:
        """out[row] = mean, std, dead share and saturated share of one block (see `activation_stats`)."""
        (low0, high0, low1, high1), on_input = saturation
        limits = np.array([low0, high0, low1, high1], np.float64)
        tested = activation_input if on_input else activation
        outer, units, inner = unit_layout(activation.shape, unit_dim)
        self._records += [
            self.BLOCK, _element_address(out, 4 * row), *addresses([kernel_ready(activation), kernel_ready(tested)]),
            outer, units, inner, limits.ctypes.data,
        ]  # fmt: skip
        self._kept += [activation, tested, out, limits]

    def build(self) -> np.ndarray:
        """The program as `_kernels.run` takes it; run it with `run_program`."""
        return np.array(self._records, np.int64)


def _element_address(out: np.ndarray, index: int) -> int:
    """The address of the float64 out.flat[index], for a kernel to write."""
    if out.dtype != np.float64 or not out.flags.c_contiguous or not 0 <= index < out.size:
        raise ValueError("a program writes into contiguous float64 arrays, within them")
    return out.ctypes.data + 8 * index


def run_program(program: np.ndarray) -> None:
    """Run a program that `Program.build` made."""
    _kernels.run(program)


def torch_activation_stats(
    activations: list[Tensor],
    activation_inputs: list[Tensor],
    activation: Activation,
    scratch: Tensor,
    work: Tensor,
    unit_dim: int = 1,
) -> Tensor:
    """`activation_stats` by PyTorch; `scratch` and `work` are (blocks, ...) tensors that it overwrites."""
    blocks = scratch.shape[0]
    count = scratch[0].numel()
    flat = scratch.view(blocks, -1)
    torch.stack(activations, out=scratch)
    mean = flat.mean(dim=1)
    # A unit is dead when even its largest output over everything else is <= 0.
    others = tuple(dim for dim in range(1, scratch.ndim) if dim != unit_dim + 1)
    dead = torch.mean(scratch.amax(dim=others) <= 0, dim=1, dtype=flat.dtype)
    saturated = saturated_fraction(flat, activation_inputs, activation, work.view(blocks, -1))
    # Two passes (center, then norm) rather than E[a^2] - E[a]^2, which cancels
    # badly for the near-constant outputs of saturated units.
    flat.sub_(mean.unsqueeze(1))
    std = torch.linalg.vector_norm(flat, dim=1) / count**0.5
    return torch.stack([mean, std, dead, saturated])


def saturated_fraction(
    outputs: Tensor, activation_inputs: list[Tensor], activation: Activation, work: Tensor
) -> Tensor:
    """Per block, the share of |phi'(input)| < 1 % of max phi', from the outputs (blocks, n) where they tell."""
    # Comparisons write 0./1. into a float tensor: far cheaper than a bool mask on a CPU.
    if activation.saturated_output is None:
        torch.stack(activation_inputs, out=work.view(len(activation_inputs), *activation_inputs[0].shape))
        slope = activation.derivative_(work)
        if not activation.monotonic:
            slope.abs_()
        return slope.lt_(activation.saturation_threshold()).mean(dim=1)
    low, high = activation.saturated_output
    if low == -math.inf and high == math.inf:
        return outputs.new_zeros(len(outputs))
    if high == math.inf:
        return torch.le(outputs, low, out=work).mean(dim=1)
    below = torch.le(outputs, low, out=work).mean(dim=1)
    return below + torch.ge(outputs, high, out=work).mean(dim=1)


def global_norm(*tensor_norms: Tensor) -> Tensor:
    """The L2 norm of many tensors together, from vectors of their separate norms."""
    return torch.linalg.vector_norm(torch.cat(tensor_norms))
