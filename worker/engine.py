"""The forward and backward pass of the MLP and the CNN by hand, on a CPU: what autograd computes, without its
cost per op and with the pre-activation gradients that the tracer needs for free.

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

The CNN's layers are large, and there autograd's bookkeeping costs little; what the
engine saves is asking autograd for the pre-activation gradients (0.2 ms of a 7 ms step
of the 6-block CNN on two threads). Its gradients are new tensors every step, as
autograd's are, because PyTorch's convolution kernels have no variant that writes into
given ones (their `out=` forms copy).

It covers what most runs are: arch `mlp` or `cnn`, no norm layer, with or without
skips, any activation of the spec, cross-entropy, on a CPU. Every other model (norm
layers, the RNN, a GPU, where autograd's cost hides behind the device's queue) trains
through autograd. tests/worker/test_engine.py checks the engine's loss, gradients and
traces against autograd's, bit for bit, for every activation.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from worker.activations import LEAKY_SLOPE, SELU_ALPHA, SELU_SCALE
from worker.models import CNN, MLP, Recording
from worker.stats import run_program

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


def engine_for(model: torch.nn.Module, activation: str, device: torch.device) -> "MLPEngine | ConvEngine | None":
    """The engine for this model, or None where it trains through autograd."""
    if device.type != "cpu" or type(model) not in (MLP, CNN) or model.norms is not None:
        return None
    if activation != "linear" and activation not in ACTIVATIONS:
        return None
    return (MLPEngine if type(model) is MLP else ConvEngine)(model, activation)


def cross_entropy(logits: Tensor, targets: Tensor, one: Tensor, grad_out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """F.cross_entropy's loss (0-d) and its gradient at the logits (into `grad_out` if given): log_softmax then
    nll_loss, and their backward in reverse, as autograd runs them."""
    log_probs = aten._log_softmax(logits, 1, False)
    loss, total_weight = aten.nll_loss_forward(log_probs, targets, None, 1, -100)
    nll_grad = aten.nll_loss_backward(one, log_probs, targets, None, 1, -100, total_weight)
    if grad_out is None:
        return loss, aten._log_softmax_backward_data(nll_grad, log_probs, 1, logits.dtype)
    aten._log_softmax_backward_data.out(nll_grad, log_probs, 1, logits.dtype, out=grad_out)
    return loss, grad_out


class MLPEngine:
    """One training step's forward and backward pass of an MLP (no norm layer) into buffers that live across steps.

    After `step(x, y)` every parameter's `.grad` holds its gradient (the same tensor every
    step: the loop must not set it to None) and `recording` holds what the tracer reads:
    the same tensors every step (`fixed`), which the tracer hands back as a traced step's
    recording. On such a step the engine runs the recording's `layer_programs`, if the tracer
    has set them: layer i's right after its backward (and the activation backward below it).
    """

    fixed = True

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
        self.recording.layer_programs = None  # planned on the old buffers
        self._batch = batch

    @torch.no_grad()
    def step(self, x: Tensor, y: Tensor, recording: Recording | None = None) -> tuple[Tensor, Tensor]:
        """Forward and backward of one batch: the loss (0-d) and the logits; gradients into `.grad`. The
        recording is always this engine's own, filled on every step."""
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

        loss, grad = cross_entropy(self.logits, y, self._one, self.dlogits)
        # On a traced step, the tracer's reductions of each layer run as soon as the layer is done with.
        programs = self.recording.layer_programs if recording is not None else None
        for i in range(len(linears) - 1, -1, -1):
            layer = linears[i]
            aten.mm.out(grad.t(), inputs[i], out=layer.weight.grad)
            aten.sum.IntList_out(grad, [0], out=layer.bias.grad)
            if i == 0:
                if programs is not None:
                    run_program(programs[0])
                break
            below = i - 1  # the hidden block whose output h is this layer's input
            dh = self.dh[below]
            aten.mm.out(grad, layer.weight, out=dh)
            if i < len(skips) and skips[i]:
                dh.add_(self.dh[i])  # the skip around block i carries its output's gradient past it
            if not self.linear_activation:
                self._backward(dh, self.z[below], self.a[below], self.dz[below])
            if programs is not None:
                # Layer i's weights, gradients and pre-activation gradient, and the block below it: all just
                # read or written.
                run_program(programs[i])
            grad = self.dz[below]
        self.recording.layer_programs_ran = programs is not None
        return loss, self.logits


class ConvEngine:
    """One training step's forward and backward pass of a CNN (no norm layer), into a traced step's recording.

    After `step(x, y, recording)` every parameter's `.grad` holds its gradient (a new
    tensor, as with autograd.grad) and, on a traced step, the recording holds what the
    model's own forward would keep (its probe fed as the pass goes) plus the
    pre-activation gradients.
    """

    fixed = False

    def __init__(self, model: CNN, activation: str):
        self.model = model
        self.convs = list(model.layers)
        self.output = model.output
        self.skips = list(model.skips)
        self.linear_activation = activation == "linear"
        self._forward, self._backward = ACTIVATIONS.get(activation, (None, None))
        self._one = torch.ones(())
        conv = self.convs[0]
        self._geometry = (list(conv.stride), list(conv.padding), list(conv.dilation), False, [0, 0], conv.groups)

    def _activate(self, z: Tensor) -> Tensor:
        if self.linear_activation:
            return z
        a = torch.empty_like(z)
        self._forward(z, a)
        return a

    @torch.no_grad()
    def step(self, x: Tensor, y: Tensor, recording: Recording | None = None) -> tuple[Tensor, Tensor]:
        """Forward and backward of one batch: the loss (0-d) and the logits; gradients into `.grad`."""
        geometry = self._geometry
        inputs, zs, activations = [x], [], []
        for i, (conv, skip) in enumerate(zip(self.convs, self.skips)):
            z = aten.convolution(inputs[i], conv.weight, conv.bias, *geometry)
            a = self._activate(z)
            if recording is not None:
                recording.block([z], z, a, [conv.weight])
            zs.append(z)
            activations.append(a)
            inputs.append(inputs[i] + a if skip else a)
        pooled = aten.mean.dim(inputs[-1], [2, 3])
        logits = aten.addmm(self.output.bias, pooled, self.output.weight.t())
        if recording is not None:
            recording.output(logits, [self.output.weight])

        loss, grad = cross_entropy(logits, y, self._one)
        self.output.weight.grad = aten.mm(grad.t(), pooled)
        self.output.bias.grad = aten.sum.dim_IntList(grad, [0])
        # The mean's backward: each position gets its share of the pooled gradient.
        top = inputs[-1]
        dh = aten.div(aten.mm(grad, self.output.weight)[:, :, None, None].expand(top.shape), top.shape[2] * top.shape[3])
        dzs = []
        for i in range(len(self.convs) - 1, -1, -1):
            conv = self.convs[i]
            dz = dh if self.linear_activation else self._backward(dh, zs[i], activations[i], torch.empty_like(dh))
            dzs.append(dz)
            dinput, conv.weight.grad, conv.bias.grad = aten.convolution_backward(
                dz, inputs[i], conv.weight, [conv.out_channels], *geometry, [i > 0, True, True]
            )
            if i > 0:
                dh = dinput + dh if self.skips[i] else dinput  # the skip around block i passes dh on
        if recording is not None:
            recording.pre_activation_grads = [*reversed(dzs), grad]
        return loss, logits
