"""The plain MLP's forward and backward pass by hand, on a CPU: what autograd computes, without its cost per op.

A deep narrow MLP's layers are small (a 128 x 64 by 64 x 64 product takes 14 us here),
and around each of them autograd records a graph node, saves tensors, allocates its
outputs, schedules the node in backward and accumulates the gradients: on the 50 x 64
MLP about a third of an untraced step (see BENCHMARKS.md). The engine calls the ATen
kernels that autograd's derivative formulas call (addmm, mm, sum, the activation's
`*_backward`, log-softmax and NLL loss and their backward) in the same order, into
buffers kept from one step to the next. The gradients land in `.grad` tensors that stay
put, and the pre-activation gradients that the tracer needs, which autograd must be asked
for at a cost, are computed anyway and stay at fixed addresses: the tracer reads them
all without building a list of tensors per step.

It covers what most runs are: arch `mlp`, no norm layer, with or without skips, any
activation of the spec, cross-entropy, on a CPU. Every other model (norm layers, the CNN,
the RNN, a GPU, where autograd's cost hides behind the device's queue) trains through
autograd. tests/worker/test_engine.py checks the engine's loss, gradients and traces
against autograd's for every activation.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from worker.activations import LEAKY_SLOPE, SELU_ALPHA, SELU_SCALE
from worker.models import MLP, Recording

aten = torch.ops.aten

# name: (forward into `out`, backward: (grad, input, output, out) -> dLoss/dinput into `out`), as autograd's
# derivatives for torch.nn's modules compute them (tools/autograd/derivatives.yaml in PyTorch).
Forward = Callable[[Tensor, Tensor], object]
Backward = Callable[[Tensor, Tensor, Tensor, Tensor], object]
ACTIVATIONS: dict[str, tuple[Forward, Backward]] = {
    "relu": (
        lambda z, out: aten.relu.out(z, out=out),
        lambda g, z, a, out: aten.threshold_backward.grad_input(g, a, 0, grad_input=out),
    ),
    "leaky_relu": (
        lambda z, out: aten.leaky_relu.out(z, LEAKY_SLOPE, out=out),
        lambda g, z, a, out: aten.leaky_relu_backward.grad_input(g, z, LEAKY_SLOPE, False, grad_input=out),
    ),
    "sigmoid": (
        lambda z, out: aten.sigmoid.out(z, out=out),
        lambda g, z, a, out: aten.sigmoid_backward.grad_input(g, a, grad_input=out),
    ),
    "tanh": (
        lambda z, out: aten.tanh.out(z, out=out),
        lambda g, z, a, out: aten.tanh_backward.grad_input(g, a, grad_input=out),
    ),
    "gelu": (
        lambda z, out: aten.gelu.out(z, out=out),
        lambda g, z, a, out: aten.gelu_backward.grad_input(g, z, grad_input=out),
    ),
    "silu": (
        lambda z, out: aten.silu.out(z, out=out),
        lambda g, z, a, out: aten.silu_backward.grad_input(g, z, grad_input=out),
    ),
    "elu": (
        lambda z, out: aten.elu.out(z, 1.0, 1, 1, out=out),
        lambda g, z, a, out: aten.elu_backward.grad_input(g, 1.0, 1, 1, False, z, grad_input=out),
    ),
    # torch.selu is elu with SELU's constants; autograd differentiates it as that elu.
    "selu": (
        lambda z, out: aten.elu.out(z, SELU_ALPHA, SELU_SCALE, 1, out=out),
        lambda g, z, a, out: aten.elu_backward.grad_input(g, SELU_ALPHA, SELU_SCALE, 1, False, z, grad_input=out),
    ),
    "softplus": (
        lambda z, out: aten.softplus.out(z, 1, 20, out=out),
        lambda g, z, a, out: aten.softplus_backward.grad_input(g, z, 1, 20, grad_input=out),
    ),
}


def engine_for(model: torch.nn.Module, activation: str, device: torch.device) -> "MLPEngine | None":
    """The engine for this model, or None where it trains through autograd."""
    if device.type != "cpu" or type(model) is not MLP or model.norms is not None:
        return None
    if activation != "linear" and activation not in ACTIVATIONS:
        return None
    return MLPEngine(model, activation)


class MLPEngine:
    """One training step's forward and backward pass of an MLP (no norm layer) into buffers that live across steps.

    After `step(x, y)` every parameter's `.grad` holds its gradient (the same tensor every
    step: the loop must not set it to None) and `recording` holds what the tracer reads.
    """

    def __init__(self, model: MLP, activation: str):
        self.model = model
        self.linears = model.weighted_layers()
        self.skips = list(model.skips)
        self.linear_activation = activation == "linear"
        self._forward, self._backward = ACTIVATIONS.get(activation, (None, None))
        for param in model.parameters():
            param.grad = torch.zeros_like(param)
        self._one = torch.ones(())
        self._batch = -1
        self.recording = Recording()

    def _allocate(self, batch: int) -> None:
        """Buffers for a batch size: per hidden block its pre-activation z, activation a, output h (a, or h + a
        with a skip), the loss gradient at its output and at z; the logits and their gradient."""
        width, depth = self.model.hidden_width(), len(self.skips)
        classes = self.linears[-1].out_features

        def new(columns: int) -> Tensor:
            return torch.empty(batch, columns)

        self.z = [new(width) for _ in range(depth)]
        self.a = self.z if self.linear_activation else [new(width) for _ in range(depth)]
        self.h = [new(width) if skip else a for skip, a in zip(self.skips, self.a)]
        self.dh = [new(width) for _ in range(depth)]  # dLoss / dh[i]
        # With the identity activation dLoss/dz is dLoss/da, which is dLoss/dh (h is a, or h + a).
        self.dz = self.dh if self.linear_activation else [new(width) for _ in range(depth)]
        self.logits, self.dlogits = new(classes), new(classes)
        self.recording.pre_activations = [*self.z, self.logits]
        self.recording.pre_activation_grads = [*self.dz, self.dlogits]
        self.recording.activation_inputs = self.z
        self.recording.activations = self.a
        self._batch = batch

    @torch.no_grad()
    def step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Forward and backward of one batch: the loss (0-d) and the logits; gradients into `.grad`."""
        if len(x) != self._batch:
            self._allocate(len(x))
        linears, skips = self.linears, self.skips
        inputs = [x]
        for i, skip in enumerate(skips):
            layer = linears[i]
            aten.addmm.out(layer.bias, inputs[i], layer.weight.t(), out=self.z[i])
            if not self.linear_activation:
                self._forward(self.z[i], self.a[i])
            if skip:
                aten.add.out(inputs[i], self.a[i], out=self.h[i])
            inputs.append(self.h[i])
        output = linears[-1]
        aten.addmm.out(output.bias, inputs[-1], output.weight.t(), out=self.logits)

        # F.cross_entropy is log_softmax then nll_loss; its backward, theirs in reverse.
        log_probs = aten._log_softmax(self.logits, 1, False)
        loss, total_weight = aten.nll_loss_forward(log_probs, y, None, 1, -100)
        nll_grad = aten.nll_loss_backward(self._one, log_probs, y, None, 1, -100, total_weight)
        aten._log_softmax_backward_data.out(nll_grad, log_probs, 1, self.logits.dtype, out=self.dlogits)

        grad = self.dlogits
        for i in range(len(linears) - 1, -1, -1):
            layer = linears[i]
            aten.mm.out(grad.t(), inputs[i], out=layer.weight.grad)
            aten.sum.IntList_out(grad, [0], out=layer.bias.grad)
            if i == 0:
                break
            below = i - 1  # the hidden block whose output h is this layer's input
            dh = self.dh[below]
            aten.mm.out(grad, layer.weight, out=dh)
            if i < len(skips) and skips[i]:
                dh.add_(self.dh[i])  # the skip around block i carries its output's gradient past it
            if not self.linear_activation:
                self._backward(dh, self.z[below], self.a[below], self.dz[below])
            grad = self.dz[below]
        return loss, self.logits
