"""The training loop: plain PyTorch that takes a spec and a sink, and knows nothing of Celery or Redis.

One step, in this order: forward, backward, trace (this step's pass, before
clipping and update), clip, optimizer step, the update's size, zero_grad. The
loop syncs with the device only when the tracer flushes. On a CPU, an MLP or a
CNN without norm layers and a tanh-RNN or LSTM run their forward and backward
through worker.engine, every other model through autograd.
"""

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.spec import Clipping, ExperimentSpec
from shared.traces import TraceChunk
from worker.activations import get_activation
from worker.datasets import Batches, Dataset, load_dataset
from worker.engine import engine_for
from worker.models import build_model
from worker.tracer import Tracer, empty_trace


class TraceSink(Protocol):
    """Where a run's trace goes while it trains (the Celery task's is the Redis store)."""

    def start(self, layers: list[dict], device: str) -> None: ...

    def chunk(self, chunk: TraceChunk, steps_done: int) -> bool:
        """Take the rows traced since the last call; False asks the loop to stop (cancel)."""
        ...


@dataclass
class TrainResult:
    """What a run gives back besides the chunks it streamed: the summary's numbers and the whole trace."""

    final_loss: float | None  # over the full training set after training; None if not finite
    final_accuracy: float | None
    train_seconds: float  # wall time of the training loop, tracing included
    steps_run: int
    diverged_step: int | None  # first step whose training loss was NaN or infinite
    cancelled: bool
    device: str  # "cpu" or "cuda:0"
    layers: list[dict]
    trace: dict[str, np.ndarray] = field(repr=False)  # the chunks concatenated


def resolve_device(spec: ExperimentSpec, device: str = "auto") -> torch.device:
    """The device to run on: the spec's choice if it makes one, else the caller's, else a GPU if there is one."""
    choice = spec.device if spec.device != "auto" else device
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("the spec asks for cuda and this worker has no GPU")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(choice)


def make_optimizer(spec: ExperimentSpec, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The spec's optimizer over the model's parameters.

    `foreach`: every parameter updated by one call. PyTorch's default on a CPU is a Python
    loop of a few ops per parameter, a tenth of a deep narrow MLP's step.
    """
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, foreach=True)
    if spec.optimizer == "momentum":
        return torch.optim.SGD(params, lr=spec.lr, momentum=0.9, foreach=True)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, foreach=True)
    raise ValueError(f"unknown optimizer {spec.optimizer!r}")


@torch.no_grad()
def clip_gradients(params: list[nn.Parameter], clipping: Clipping | None) -> Tensor | None:
    """Clip the gradients in place as the spec says; a 0-d device tensor, true where that changed them."""
    if clipping is None:
        return None
    grads = [p.grad for p in params if p.grad is not None]
    if clipping.mode == "norm":
        total = nn.utils.clip_grad_norm_(params, clipping.threshold)
        # clip_grad_norm_ scales by min(1, threshold / (total + 1e-6)): the same test here.
        return clipping.threshold / (total + 1e-6) < 1
    largest = torch.stack(torch._foreach_norm(grads, ord=float("inf"))).max()
    nn.utils.clip_grad_value_(params, clipping.threshold)
    return largest > clipping.threshold


def loss_function(spec: ExperimentSpec):
    """Cross-entropy over the classes; for a regression (the adding problem), the mean squared error."""
    if spec.is_regression():
        return lambda outputs, targets: F.mse_loss(outputs.squeeze(-1), targets)
    return F.cross_entropy


# Examples evaluated at once: bounds the memory of a wide CNN's or a long RNN's forward pass.
EVAL_VALUES = 1 << 24


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, spec: ExperimentSpec) -> tuple[float | None, float | None]:
    """Loss and accuracy over the whole training set, in eval mode; None for a model that outputs NaN or inf,
    and accuracy None for a regression."""
    model.eval()
    per_example = data.x[0].numel() + math.prod(model.activation_shape(1)) * spec.depth
    size = max(1, EVAL_VALUES // per_example)
    outputs = torch.cat([model(data.x[start : start + size]) for start in range(0, len(data), size)])
    model.train()
    loss = loss_function(spec)(outputs, data.y)
    if spec.is_regression():
        accuracy = torch.full_like(loss, np.nan)
    else:
        accuracy = (outputs.argmax(dim=1) == data.y).float().mean()
    # note: CPU-GPU sync point, once per run
    loss, accuracy = torch.stack([loss, accuracy]).tolist()
    if not np.isfinite(loss):
        return None, None  # the argmax of NaN logits is no accuracy
    return loss, accuracy if np.isfinite(accuracy) else None


def train(
    spec: ExperimentSpec,
    sink: TraceSink | None = None,
    *,
    device: str = "auto",
    trace: bool = True,
    flush_seconds: float = 0.5,
    engine: bool = True,
) -> TrainResult:
    """Train the spec's model and trace it; `trace=False` runs the same loop untraced, for benchmarks;
    `engine=False` runs every model through autograd, for the tests and benchmarks that compare the two."""
    where = resolve_device(spec, device)
    data = load_dataset(spec, where)
    model = build_model(spec).to(where)
    model.train()
    params = list(model.parameters())
    optimizer = make_optimizer(spec, params)
    batches = Batches(len(data), spec.batch_size, spec.seed, where)
    by_hand = engine_for(model, spec.activation, where) if engine else None
    tracer = Tracer(
        model,
        optimizer,
        # A recurrent layer's hidden state is its tanh's output (for lstm and gru, gated): the spec's
        # activation does not apply to arch rnn.
        get_activation("tanh" if spec.arch == "rnn" else spec.activation),
        spec.traced_steps() if trace else [],
        spec.batch_size,
        where,
        time_steps=spec.time_steps(),
        regression=spec.is_regression(),
        flush_seconds=flush_seconds,
        fixed=by_hand.recording if by_hand is not None and by_hand.fixed else None,
    )
    compute_loss = loss_function(spec)
    layers = model.layer_info()
    device_name = str(where)
    if sink is not None:
        sink.start(layers, device_name)

    chunks: list[TraceChunk] = []
    diverged_step, cancelled, steps_run = None, False, 0
    started = time.perf_counter()
    for step in range(spec.steps):
        index = batches.indices(step)
        x, y = data.x[index], data.y[index]
        recording = tracer.recording(step)

        if by_hand is not None:
            loss, logits = by_hand.step(x, y, recording)
        else:
            logits = model(x, recording)
            loss = compute_loss(logits, y)
            tracer.backward(loss, recording)
        tracer.measure(step, loss, logits, y, recording)
        clipped = clip_gradients(params, spec.clipping)
        optimizer.step()
        tracer.measure_update(clipped)
        if by_hand is None:
            optimizer.zero_grad(set_to_none=True)

        steps_run = step + 1
        if tracer.due() or steps_run == spec.steps:
            flushed = tracer.flush()
            chunks.append(flushed.chunk)
            if sink is not None and not sink.chunk(flushed.chunk, steps_run):
                cancelled = True
            if flushed.diverged_step is not None:
                diverged_step = flushed.diverged_step
            if cancelled or diverged_step is not None:
                break
    train_seconds = time.perf_counter() - started

    final_loss, final_accuracy = evaluate(model, data, spec)
    return TrainResult(
        final_loss=final_loss,
        final_accuracy=final_accuracy,
        train_seconds=train_seconds,
        steps_run=steps_run,
        diverged_step=diverged_step,
        cancelled=cancelled,
        device=device_name,
        layers=layers,
        trace=concatenate(chunks, len(layers), spec.time_steps()),
    )


def concatenate(chunks: list[TraceChunk], layers: int, time_steps: int = 0) -> dict[str, np.ndarray]:
    """One trace from its chunks, in their order."""
    trace = empty_trace(layers, time_steps)
    return {name: np.concatenate([empty, *(c.arrays[name] for c in chunks)]) for name, empty in trace.items()}


def warm_up() -> None:
    """Run one tiny step, so that a pool process pays torch's lazy imports before its first task.

    The first optimizer built in a process imports torch._dynamo (about 2 s here).
    """
    train(ExperimentSpec(depth=1, width=1, steps=1, batch_size=2), trace=False)
