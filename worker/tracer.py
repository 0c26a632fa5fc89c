"""The tracer: when to measure, where the measured rows wait on the device, and their trip to the host.

Each traced step writes one row of float32 values into a preallocated device
tensor; every step's loss is kept on the device too, to catch divergence without
a per-step sync. `flush()` copies both to the host in one transfer (the loop's
only sync point), turns the rows into a `TraceChunk` and reports the first step
whose loss was not finite. What each value means is in `worker.stats`.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from shared.traces import DTYPES, LAYER_METRICS, STEP_METRICS, TIME_METRICS, TraceChunk
from worker import stats
from worker.activations import Activation
from worker.models import Recording

CHUNK_ROWS = 256  # traced rows kept on the device between flushes
LOSS_STEPS = 1024  # steps whose loss is kept on the device between flushes
# Metrics that only hidden blocks have; the output layer's column is NaN (null at the API).
HIDDEN_ONLY = ("act_mean", "act_std", "dead_fraction", "saturated_fraction")
# Written after backward, before the update: one contiguous run of the row.
BEFORE_UPDATE = (
    ("loss", "accuracy", "total_grad_norm", "grad_norm", "weight_norm", "act_grad_norm") + HIDDEN_ONLY + TIME_METRICS
)
# Written once the optimizer has stepped.
AFTER_UPDATE = ("clipped", "update_ratio")


@dataclass
class Flush:
    """What one flush brought to the host: the rows traced since the last, and any divergence."""

    chunk: TraceChunk
    diverged_step: int | None


def row_layout(layers: int, time_steps: int = 0) -> dict[str, slice]:
    """Where each metric sits in a device row: one value per step metric, per layer or hidden block, per time step."""
    sizes = {name: 1 for name in STEP_METRICS}
    sizes |= {name: layers for name in LAYER_METRICS}
    sizes |= {name: layers - 1 for name in HIDDEN_ONLY}
    sizes |= {name: time_steps for name in TIME_METRICS}
    layout, start = {}, 0
    for name in BEFORE_UPDATE + AFTER_UPDATE:
        layout[name] = slice(start, start + sizes[name])
        start += sizes[name]
    return layout


def empty_trace(layers: int, time_steps: int = 0) -> dict[str, np.ndarray]:
    """A trace with no rows, in the layout of `TraceChunk.arrays`."""
    shapes = {name: (0, layers) for name in LAYER_METRICS} | {name: (0, time_steps) for name in TIME_METRICS}
    return {
        name: np.zeros(shapes.get(name, (0,)), DTYPES[name])
        for name in ("step",) + STEP_METRICS + LAYER_METRICS + TIME_METRICS
    }


def grouping(counts: list[int]) -> Tensor | None:
    """The layer of each of a flat list of tensors, given how many each layer has; None when one each."""
    if all(count == 1 for count in counts):
        return None
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


def host_grouping(counts: list[int]) -> Callable[[np.ndarray], np.ndarray]:
    """Per-layer sums of a flat array of per-tensor values, given how many tensors each layer has."""
    if all(count == 1 for count in counts):
        return lambda values: values
    starts = np.cumsum([0] + counts[:-1])
    return lambda values: np.add.reduceat(values, starts)


def per_layer(norms: Tensor, groups: Tensor | None, layers: int) -> Tensor:
    """Norms of each layer's tensors together, from the norms of the tensors one by one."""
    if groups is None:
        return norms
    return norms.new_zeros(layers).index_add_(0, groups, norms.square()).sqrt_()


class Tracer:
    """Measures the traced steps of one run into device rows, and hands them over in chunks.

    A layer may have several weight tensors (a recurrent layer: input-hidden and hidden-hidden)
    and several pre-activation tensors (a recurrent layer: one hidden state per time step);
    its norms are over all of them together. `time_steps` > 0 also traces, per time step,
    the norm of the loss gradient at the last recurrent layer's hidden state.

    `fixed` is the recording of a model trained by worker.engine: the same tensors, filled
    in place, on every step, and gradients that stay in place too. On a CPU the tracer then
    reads their addresses once, on the first traced step, instead of on every one.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        activation: Activation,
        traced_steps: list[int],
        batch_size: int,
        device: torch.device,
        *,
        time_steps: int = 0,
        regression: bool = False,
        chunk_rows: int = CHUNK_ROWS,
        flush_seconds: float = 0.5,
        fixed: Recording | None = None,
    ):
        self.activation = activation
        self._fixed = fixed
        self._fixed_plan: FixedPlan | None = None
        # The engine's layers: their parameters, for the reductions it runs per layer (see FixedPlan).
        self._fixed_layers = None
        if fixed is not None:
            self._fixed_layers = fixed.layer_params or [list(layer.parameters()) for layer in model.weighted_layers()]
        layer_weights = model.layer_weights()
        self.weights = [w for weights in layer_weights for w in weights]
        weight_ids = {id(w) for w in self.weights}
        self.params = self.weights + [p for p in model.parameters() if id(p) not in weight_ids]
        self.layers = len(layer_weights)
        self.time_steps = time_steps
        self.regression = regression
        self.unit_dim = model.unit_dim
        self._weight_groups = grouping([len(weights) for weights in layer_weights])
        grads_per_layer = [time_steps or 1] * (self.layers - 1) + [1]
        self._grad_groups = grouping(grads_per_layer)
        if self._weight_groups is not None:
            self._weight_groups = self._weight_groups.to(device)
        if self._grad_groups is not None:
            self._grad_groups = self._grad_groups.to(device)
        self.layout = row_layout(self.layers, time_steps)
        self.width = self.layout[AFTER_UPDATE[-1]].stop
        self.before_update = slice(0, self.layout[BEFORE_UPDATE[-1]].stop)
        self.flush_seconds = flush_seconds
        self._traced = set(traced_steps)
        self._rows = torch.zeros(chunk_rows, self.width, device=device)
        # On a CPU with the C kernels, rows are written through numpy (see _measure_on_host).
        self._host_rows = self._rows.numpy() if stats.host_kernels(device) else None
        self._host_weight_groups = host_grouping([len(weights) for weights in layer_weights])
        self._host_grad_groups = host_grouping(grads_per_layer)
        self._row_steps: list[int] = []  # the step of each row written since the last flush
        self._losses: list[Tensor] = []  # every step's loss since the last flush, on the device
        self._first_loss_step = 0
        self._pending: Tensor | None = None  # the row of the step being traced, until its update
        self._flushed_at = time.monotonic()
        if self._host_rows is not None:
            # Per-tensor norms, and per-layer ones from them, as float32 numpy arrays like the row's.
            def per_tensor(tensors: list[Tensor]) -> np.ndarray:
                return np.sqrt(stats.host_sums(tensors)).astype(np.float32)

            def combine(norms: np.ndarray) -> np.ndarray:
                squares = self._host_weight_groups(np.square(norms, dtype=np.float64))
                return np.sqrt(squares, dtype=np.float32)
        else:
            per_tensor = stats.norms
            combine = lambda norms: per_layer(norms, self._weight_groups, self.layers)  # noqa: E731
        self._updates = UpdateMeter(
            optimizer, self.weights, snapshot=bool(self._traced), norms=per_tensor, combine=combine
        )
        # Where the activation statistics and the weight norms are measured: on a CPU by the C kernels,
        # during the forward pass for large blocks (the probe) and after backward for small ones; elsewhere
        # by PyTorch after backward (in the workspace).
        self._probe = self._workspace = None
        block = model.activation_shape(batch_size)
        if self._host_rows is not None:
            self._plan_host_row(grads_per_layer, [len(weights) for weights in layer_weights])
        if self._traced and stats.host_kernels(device):
            if math.prod(block) >= stats.PROBE_MIN_VALUES and fixed is None:
                self._probe = stats.HostProbe(
                    activation, model.unit_dim, self.layers - 1, len(self.weights), weight_sums=self._weight_sums,
                    deltas=sum(grads_per_layer),
                )  # fmt: skip
        elif self._traced:
            self._workspace = stats.Workspace(self.layers - 1, block, device)

    def _plan_host_row(self, grads_per_layer: list[int], weights_per_layer: list[int]) -> None:
        """Where each sum of squares and each activation statistic goes in a row, for the C kernel that fills it.

        A step's sums are kept in one float64 array, in the order weights, weight gradients,
        pre-activation gradients, other gradients; each adds to up to two columns of the row
        (its layer's norm, the total gradient norm or a time step's norm), which then get the
        square root of what was added to them.
        """
        layout, weights = self.layout, len(self.weights)
        deltas, others = sum(grads_per_layer), len(self.params) - weights
        self._sums = np.empty(2 * weights + deltas + others)
        self._weight_sums, self._gradient_sums = self._sums[:weights], self._sums[weights:]
        columns = np.full((len(self._sums), 2), -1, np.int64)
        total = layout["total_grad_norm"].start
        weight_layers = np.repeat(np.arange(self.layers), weights_per_layer)
        columns[:weights, 0] = layout["weight_norm"].start + weight_layers
        columns[weights : 2 * weights] = np.stack([layout["grad_norm"].start + weight_layers, np.full(weights, total)], 1)
        delta_columns = columns[2 * weights : 2 * weights + deltas]
        delta_columns[:, 0] = layout["act_grad_norm"].start + np.repeat(np.arange(self.layers), grads_per_layer)
        if self.time_steps:
            # The last recurrent layer's hidden states are the time_steps gradients before the output's.
            top = deltas - 1 - self.time_steps
            delta_columns[top : top + self.time_steps, 1] = layout["time_grad_norm"].start + np.arange(self.time_steps)
        columns[2 * weights + deltas :, 0] = total
        self._sum_columns = columns
        # The activation statistics come as (blocks, 4): block b's HIDDEN_ONLY metrics in a row.
        self._value_columns = np.array(
            [layout[name].start + block for block in range(self.layers - 1) for name in HIDDEN_ONLY], np.int64
        )

    def recording(self, step: int) -> Recording | None:
        """A recording for the forward pass of a traced step, None for the others."""
        if step not in self._traced:
            return None
        if self._fixed is not None:
            return self._fixed
        return Recording(self._probe.start() if self._probe is not None else None)

    def backward(self, loss: Tensor, recording: Recording | None) -> None:
        """loss.backward(); on a traced step, keeping the gradients at the pre-activations too."""
        if recording is None:
            loss.backward()
        else:
            recording.backward(loss, self.params)

    @torch.no_grad()
    def measure(
        self, step: int, loss: Tensor, logits: Tensor, targets: Tensor, recording: Recording | None
    ) -> None:
        """After backward, before clipping: keep the loss and, on a traced step, the row's first part."""
        self._losses.append(loss.detach())
        if recording is None:
            return
        row = self._rows[len(self._row_steps)]
        if self._host_rows is not None:
            self._measure_on_host(self._host_rows[len(self._row_steps)], loss, logits, targets, recording)
        else:
            self._measure_on_device(row, loss, logits, targets, recording)
        if recording is not self._fixed:
            # Let go of the step's activations and gradients now, not when the next traced step replaces this
            # recording: the next step's tensors then reuse their memory while it is in cache.
            recording.release()
        self._updates.before_step()
        self._row_steps.append(step)
        self._pending = row

    def _measure_on_device(
        self, row: Tensor, loss: Tensor, logits: Tensor, targets: Tensor, recording: Recording
    ) -> None:
        """The row by PyTorch ops on the device, which never wait for it."""
        layers, weights = self.layers, len(self.weights)
        grads = len(recording.pre_activation_grads)
        # Every norm of the row in one foreach call: the weight gradients, the weights and the
        # pre-activation gradients, tensor by tensor; then the other gradients (biases, norm
        # layers), which only the total needs.
        norms = stats.norms(
            [w.grad for w in self.weights]
            + self.weights
            + recording.pre_activation_grads
            + [p.grad for p in self.params[weights:]]
        )
        activations = stats.activation_stats(
            recording.activations, recording.activation_inputs, self.activation, self._workspace, self.unit_dim
        )
        total_grad_norm = stats.global_norm(norms[:weights], norms[2 * weights + grads :])
        if self._weight_groups is None and self._grad_groups is None:
            layer_norms = norms[: 3 * layers]  # one tensor per layer each: already in the row's order
        else:
            layer_norms = torch.cat(
                [
                    per_layer(norms[:weights], self._weight_groups, layers),
                    per_layer(norms[weights : 2 * weights], self._weight_groups, layers),
                    per_layer(norms[2 * weights : 2 * weights + grads], self._grad_groups, layers),
                ]
            )
        accuracy = loss.new_full((), math.nan) if self.regression else stats.batch_accuracy(logits, targets)
        values = [torch.stack([loss.detach(), accuracy, total_grad_norm]), layer_norms, activations.view(-1)]
        if self.time_steps:
            # The last recurrent layer's hidden states are the time_steps gradients before the output's.
            top = 2 * weights + grads - 1 - self.time_steps
            values.append(norms[top : top + self.time_steps])
        torch.cat(values, out=row[self.before_update])

    def _measure_on_host(
        self, row: np.ndarray, loss: Tensor, logits: Tensor, targets: Tensor, recording: Recording
    ) -> None:
        """The row by the C kernels, on a CPU: a few calls, where each PyTorch op on a small tensor costs several
        microseconds, and each numpy call 10-20 right after backward (see worker/_kernels.c)."""
        if recording is self._fixed:
            # The engine's buffers and gradients: addresses planned on the first traced step. On the next ones
            # the engine runs the plan's reductions layer by layer during backward, into self._sums and the
            # plan's block statistics.
            plan = self._fixed_plan
            if plan is not None and recording.layer_programs_ran and plan.codes and recording.layer_programs is plan.codes:
                recording.layer_programs_ran = False
                activations = plan.blocks.out
            else:
                if plan is None or plan.deltas is not recording.pre_activation_grads:
                    plan = self._fixed_plan = FixedPlan(self, recording)
                plan.sums.sums(self._sums)
                activations = plan.blocks.stats()
                recording.layer_programs = plan.codes
        elif self._probe is not None:
            # The weights and activations were measured during the forward pass; the gradients now, but for the
            # pre-activation gradients where the engine's backward measured them as it went.
            grads = [p.grad for p in self.params]
            weights, deltas = len(self.weights), self._probe.delta_squares()
            if deltas is None:
                stats.host_sums(grads[:weights] + recording.pre_activation_grads + grads[weights:], out=self._gradient_sums)
            else:
                end = 2 * weights + len(deltas)
                stats.host_sums(grads[:weights], out=self._sums[weights : 2 * weights])
                self._sums[2 * weights : end] = deltas
                stats.host_sums(grads[weights:], out=self._sums[end:])
            self._probe.weight_squares()  # checks that the forward pass reported every weight
            activations = self._probe.block_stats()
        else:
            grads = [p.grad for p in self.params]
            weights = len(self.weights)
            stats.host_sums(
                self.weights + grads[:weights] + recording.pre_activation_grads + grads[weights:], out=self._sums
            )
            activations = stats.host_activation_array(
                recording.activations, recording.activation_inputs, self.activation, self.unit_dim
            )
        stats.host_fill_row(row, self._sums, self._sum_columns, activations, self._value_columns)
        row[self.layout["loss"].start] = loss.item()
        row[self.layout["accuracy"].start] = math.nan if self.regression else stats.host_accuracy(logits, targets)

    @torch.no_grad()
    def measure_update(self, clipped: Tensor | None) -> None:
        """After the optimizer step: on a traced step, whether clipping acted, and ||dW|| / ||W||."""
        row, self._pending = self._pending, None
        if row is None:
            return
        if self._host_rows is not None:
            self._update_on_host(row.numpy(), clipped)
            return
        if clipped is not None:
            # Without clipping the column keeps the zeros it was allocated with.
            row[self.layout["clipped"]].copy_(clipped)
        updates = self._updates.norms(row[self.layout["grad_norm"]], clipped=clipped is not None)
        torch.div(updates, row[self.layout["weight_norm"]], out=row[self.layout["update_ratio"]])

    def _update_on_host(self, row: np.ndarray, clipped: Tensor | None) -> None:
        """`measure_update` through numpy, on a CPU; plain SGD's unclipped update by one C call."""
        layout = self.layout
        if clipped is None and self._updates.plain_sgd and not self._updates.momentum:
            # The update is lr times the gradient the row already holds.
            grads, weights, ratios = (layout[name].start for name in ("grad_norm", "weight_norm", "update_ratio"))
            stats.host_update_ratio(row, grads, weights, ratios, self.layers, self._updates.lr)
            return
        if clipped is not None:
            row[layout["clipped"]] = clipped.item()
        updates = self._updates.norms(row[layout["grad_norm"]], clipped=clipped is not None)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            np.divide(updates, row[layout["weight_norm"]], out=row[layout["update_ratio"]], casting="unsafe")

    def due(self) -> bool:
        """Whether to flush now: the device buffers are full, or it is time for progress."""
        return (
            len(self._row_steps) == len(self._rows)
            or len(self._losses) >= LOSS_STEPS
            or time.monotonic() - self._flushed_at >= self.flush_seconds
        )

    def flush(self) -> Flush:
        """The rows since the last flush, cut after the first step whose loss was not finite."""
        if self._fixed_plan is not None:
            self._fixed_plan.check(self)
        rows = len(self._row_steps)
        losses = torch.stack(self._losses) if self._losses else self._rows.new_empty(0)
        # note: CPU-GPU sync point, once per flush: rows and losses come over together.
        values = torch.cat([self._rows[:rows].view(-1), losses]).cpu().numpy()
        table, losses = values[: rows * self.width].reshape(rows, self.width), values[rows * self.width :]

        diverged_step = None
        bad = np.flatnonzero(~np.isfinite(losses))
        if len(bad):
            diverged_step = self._first_loss_step + int(bad[0])
            rows = sum(1 for step in self._row_steps if step <= diverged_step)
            table = table[:rows]
        chunk = self._chunk(table, self._row_steps[:rows])

        self._first_loss_step += len(self._losses)
        self._losses.clear()
        self._row_steps.clear()
        self._flushed_at = time.monotonic()
        return Flush(chunk, diverged_step)

    def _chunk(self, table: np.ndarray, steps: list[int]) -> TraceChunk:
        """Named arrays from device rows; hidden-only metrics get a NaN column for the output layer."""
        arrays = {"step": np.asarray(steps, DTYPES["step"])}
        for name in STEP_METRICS:
            arrays[name] = table[:, self.layout[name].start].astype(DTYPES[name])
        nan_column = np.full((len(table), 1), np.nan, np.float32)
        for name in LAYER_METRICS:
            columns = table[:, self.layout[name]]
            if name in HIDDEN_ONLY:
                columns = np.concatenate([columns, nan_column], axis=1)
            arrays[name] = np.ascontiguousarray(columns, DTYPES[name])
        for name in TIME_METRICS:
            arrays[name] = np.ascontiguousarray(table[:, self.layout[name]], DTYPES[name])
        return TraceChunk(arrays)


class FixedPlan:
    """Where a fixed recording's tensors are, for the C kernels: the tensors of the tracer's sums, in their order
    (weights, weight gradients, pre-activation gradients, other gradients), and the hidden blocks."""

    def __init__(self, tracer: Tracer, recording: Recording):
        self.deltas = recording.pre_activation_grads
        self.sums = stats.FixedTensors(self.summed(tracer))
        self.blocks = stats.FixedBlocks(
            recording.activations, recording.activation_inputs, tracer.activation, tracer.unit_dim
        )
        # Per-layer reductions where each layer has one pre-activation gradient (the MLP's engine; a recurrent
        # engine's layers have one per time step, and its tracer reads them all after backward) and every
        # parameter's gradient is in one layer's reductions.
        layered = [id(param) for params in tracer._fixed_layers for param in params]
        one_each = len(self.deltas) == len(tracer._fixed_layers) and sorted(layered) == sorted(map(id, tracer.params))
        # The programs are kept: they hold the tensors and arrays whose addresses their codes name.
        self.programs = self._layer_programs(tracer, recording) if one_each else []
        self.codes = [program.build() for program in self.programs] if one_each else None

    def _layer_programs(self, tracer: Tracer, recording: Recording) -> list[stats.Program]:
        """Per weighted layer, the same reductions as `sums` and `blocks` make, of that layer's tensors: its
        parameters and their gradients, its pre-activation gradient, and the hidden block below it (whose output
        is the layer's input). One pre-activation gradient per layer, as in the MLP."""
        layers = tracer._fixed_layers
        weights, sums = len(tracer.weights), tracer._sums
        index = {id(param): k for k, param in enumerate(tracer.params)}

        def gradient_sum(k: int) -> int:  # where parameter k's gradient goes among the sums
            return weights + k if k < weights else 2 * weights + len(self.deltas) + k - weights

        saturation = stats.saturation_limits(tracer.activation)
        programs = []
        for i, params in enumerate(layers):
            program = stats.Program()
            for param in params:
                k = index[id(param)]
                if k < weights:
                    program.sum_of_squares(param, sums, k)
                program.sum_of_squares(param.grad, sums, gradient_sum(k))
            program.sum_of_squares(self.deltas[i], sums, 2 * weights + i)
            if i > 0:
                program.block(
                    recording.activations[i - 1], recording.activation_inputs[i - 1], saturation,
                    tracer.unit_dim, self.blocks.out, i - 1,
                )  # fmt: skip
            programs.append(program)
        return programs

    def summed(self, tracer: Tracer) -> list[Tensor]:
        """The tensors of the sums, as they are now."""
        weights = len(tracer.weights)
        grads = [p.grad for p in tracer.params]
        return tracer.weights + grads[:weights] + self.deltas + grads[weights:]

    def check(self, tracer: Tracer) -> None:
        """Fail loudly if a planned tensor was replaced or moved: the kernels would read stale memory."""
        if not self.sums.unmoved(self.summed(tracer)):
            raise RuntimeError("a tensor that the tracer reads at a fixed address was replaced or moved")


class UpdateMeter:
    """||W_after - W_before|| of each layer's update, at the cost the optimizer allows.

    Plain SGD adds exactly -lr * g (momentum SGD -lr * its momentum buffer) to each
    weight, so the update's norm is lr times a norm the tracer has or can read: no
    copy of the weights. Any other optimizer (Adam) is measured: the weights are
    copied before the step and subtracted after it.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        weights: list[Tensor],
        *,
        snapshot: bool = True,
        norms: Callable[[list[Tensor]], Tensor] = stats.norms,
        combine: Callable[[Tensor], Tensor] = lambda norms: norms,
    ):
        self.optimizer = optimizer
        self.weights = weights
        self.per_tensor = norms  # the norm of each of a list of tensors (a tensor, or a numpy array on a CPU)
        self.combine = combine  # per-tensor norms to per-layer norms
        group = optimizer.param_groups[0]
        self.lr = group["lr"]
        plain_sgd = (
            type(optimizer) is torch.optim.SGD
            and len(optimizer.param_groups) == 1
            and not (group["weight_decay"] or group["dampening"] or group["nesterov"] or group["maximize"])
        )
        self.plain_sgd = plain_sgd
        self.momentum = plain_sgd and group["momentum"] != 0
        self._before = [torch.empty_like(w) for w in weights] if snapshot and not plain_sgd else None

    def before_step(self) -> None:
        """Keep what the weights are before the optimizer steps, where the update must be measured."""
        if self._before is not None:
            torch._foreach_copy_(self._before, self.weights)

    def norms(self, grad_norms: Tensor, *, clipped: bool) -> Tensor:
        """After the optimizer step: the norm of each layer's update; `grad_norms` are the pre-clip ones."""
        if self._before is not None:
            torch._foreach_sub_(self._before, self.weights)
            return self.combine(self.per_tensor(self._before))
        if self.momentum:
            return self.combine(self.per_tensor([self.optimizer.state[w]["momentum_buffer"] for w in self.weights])) * self.lr
        if clipped:
            # Clipping rescaled the gradients after they were measured.
            return self.combine(self.per_tensor([w.grad for w in self.weights])) * self.lr
        return grad_norms * self.lr
