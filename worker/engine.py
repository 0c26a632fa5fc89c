"""The forward and backward pass of the MLP, the CNN and the RNN by hand, on a CPU: what autograd computes,
without its cost per op, and with the pre-activation gradients that the tracer needs for free.

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

The RNN's tanh, LSTM and GRU layers (RecurrentEngine) go the same way: a time step is a
few ATen calls instead of a dozen autograd nodes, and the loss gradient at every hidden
state, which the tracer reads, is what the hand-written recurrence computes anyway. An
LSTM layer's recurrence, forward or backward, is one C call where PyTorch carries MKL
(worker/_kernels.c `lstm_sequence_*`: each thread takes its rows of the batch through
every time step), else one C call per time step around a matrix product.

It covers what most runs are: arch `mlp` with or without a norm layer, arch `cnn` with
no norm layer, with or without skips, any activation of the spec; arch `rnn` with any
cell; on a CPU. Every other model (a CNN's norm layers, a GPU, where autograd's cost
hides behind the device's queue) trains through autograd.
tests/worker/test_engine.py checks the engines' losses, gradients and traces against
autograd's: bit for bit for the MLP and the CNN, to float32 rounding for the RNN.
"""

from collections.abc import Callable
from types import SimpleNamespace

import torch
from torch import Tensor

from worker.activations import LEAKY_SLOPE, SELU_ALPHA, SELU_SCALE
from worker.models import CNN, MLP, Recording
from worker.recurrent import RNN, RecurrentLayer
from worker.stats import blas_shared, run_program

try:  # an LSTM time step's elementwise forward and backward in one call each, or a layer's whole recurrence in one
    from worker._kernels import (
        lstm_backward as lstm_step_backward,
        lstm_forward as lstm_step_forward,
        lstm_sequence_backward,
        lstm_sequence_forward,
    )
except ImportError:  # built without a C compiler: the PyTorch calls
    lstm_step_forward = lstm_step_backward = lstm_sequence_forward = lstm_sequence_backward = None

aten = torch.ops.aten
nn_ops = torch._C._nn


def _raw(overload) -> Callable:
    """An ATen overload's C++ callable: `torch.ops.aten.X.Y(...)` goes through a Python layer first, which costs
    as much as the kernel itself on a small tensor. The engine calls the torch.* and torch._C._nn bindings
    where they take `out=`, and these for the backward kernels that have no other binding."""
    return overload._op


threshold_backward = _raw(aten.threshold_backward.grad_input)
leaky_relu_backward = _raw(aten.leaky_relu_backward.grad_input)
sigmoid_backward = _raw(aten.sigmoid_backward.grad_input)
tanh_backward = _raw(aten.tanh_backward.grad_input)
gelu_backward = _raw(aten.gelu_backward.grad_input)
silu_backward = _raw(aten.silu_backward.grad_input)
elu_backward = _raw(aten.elu_backward.grad_input)
softplus_backward = _raw(aten.softplus_backward.grad_input)
nll_loss_forward = _raw(aten.nll_loss_forward.default)
nll_loss_backward = _raw(aten.nll_loss_backward.default)
mse_loss_backward = _raw(aten.mse_loss_backward.grad_input)
convolution_backward = _raw(aten.convolution_backward.default)
batch_norm = _raw(aten.native_batch_norm.out)
batch_norm_backward = _raw(aten.native_batch_norm_backward.out)
layer_norm = _raw(aten.native_layer_norm.out)
layer_norm_backward = _raw(aten.native_layer_norm_backward.out)

# name: (forward into `out`, backward: (grad, input, output, out) -> dLoss/dinput into `out`), as autograd's
# derivatives for torch.nn's modules compute them (tools/autograd/derivatives.yaml in PyTorch).
Forward = Callable[[Tensor, Tensor], object]
Backward = Callable[[Tensor, Tensor, Tensor, Tensor], object]
ACTIVATIONS: dict[str, tuple[Forward, Backward]] = {
    # torch.relu is clamp_min(x, 0) in ATen; clamp_min is the binding that takes out=.
    "relu": (
        lambda z, out: torch.clamp_min(z, 0, out=out),
        lambda g, z, a, out: threshold_backward(g, a, 0, grad_input=out),
    ),
    "leaky_relu": (
        lambda z, out: nn_ops.leaky_relu(z, LEAKY_SLOPE, out=out),
        lambda g, z, a, out: leaky_relu_backward(g, z, LEAKY_SLOPE, False, grad_input=out),
    ),
    "sigmoid": (
        lambda z, out: torch.sigmoid(z, out=out),
        lambda g, z, a, out: sigmoid_backward(g, a, grad_input=out),
    ),
    "tanh": (
        lambda z, out: torch.tanh(z, out=out),
        lambda g, z, a, out: tanh_backward(g, a, grad_input=out),
    ),
    "gelu": (
        lambda z, out: nn_ops.gelu(z, out=out),
        lambda g, z, a, out: gelu_backward(g, z, grad_input=out),
    ),
    "silu": (
        lambda z, out: nn_ops.silu(z, out=out),
        lambda g, z, a, out: silu_backward(g, z, grad_input=out),
    ),
    "elu": (
        lambda z, out: nn_ops.elu(z, 1.0, 1, 1, out=out),
        lambda g, z, a, out: elu_backward(g, 1.0, 1, 1, False, z, grad_input=out),
    ),
    # torch.selu is elu with SELU's constants; autograd differentiates it as that elu.
    "selu": (
        lambda z, out: nn_ops.elu(z, SELU_ALPHA, SELU_SCALE, 1, out=out),
        lambda g, z, a, out: elu_backward(g, SELU_ALPHA, SELU_SCALE, 1, False, z, grad_input=out),
    ),
    "softplus": (
        lambda z, out: nn_ops.softplus(z, 1, 20, out=out),
        lambda g, z, a, out: softplus_backward(g, z, 1, 20, grad_input=out),
    ),
}


def engine_for(
    model: torch.nn.Module, activation: str, device: torch.device
) -> "MLPEngine | ConvEngine | RecurrentEngine | None":
    """The engine for this model, or None where it trains through autograd."""
    if device.type != "cpu":
        return None
    if type(model) is RNN:
        return RecurrentEngine(model)
    if type(model) not in (MLP, CNN) or (type(model) is CNN and model.norms is not None):
        return None
    if activation != "linear" and activation not in ACTIVATIONS:
        return None
    return (MLPEngine if type(model) is MLP else ConvEngine)(model, activation)


def cross_entropy(logits: Tensor, targets: Tensor, one: Tensor, grad_out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """F.cross_entropy's loss (0-d) and its gradient at the logits (into `grad_out` if given): log_softmax then
    nll_loss, and their backward in reverse, as autograd runs them."""
    log_probs = torch._log_softmax(logits, 1, False)
    loss, total_weight = nll_loss_forward(log_probs, targets, None, 1, -100)
    nll_grad = nll_loss_backward(one, log_probs, targets, None, 1, -100, total_weight)
    if grad_out is None:
        return loss, torch._log_softmax_backward_data(nll_grad, log_probs, 1, logits.dtype)
    torch._log_softmax_backward_data(nll_grad, log_probs, 1, logits.dtype, out=grad_out)
    return loss, grad_out


class MLPEngine:
    """One training step's forward and backward pass of an MLP (no norm layer) into buffers that live across steps.

    After `step(x, y)` every parameter's `.grad` holds its gradient (the same tensor every
    step: the loop must not set it to None) and `recording` holds what the tracer reads:
    the same tensors every step (`fixed`), which the tracer hands back as a traced step's
    recording. On such a step the engine runs the recording's `layer_programs`, if the tracer
    has set them: layer i's right after its backward (and the backward of the block below it).

    With a norm layer (BatchNorm1d or LayerNorm) between each Linear and its activation,
    the norm's forward and backward are ATen's `native_batch_norm` / `native_layer_norm`
    and their backward, as autograd calls them; BatchNorm's running statistics and batch
    count advance as the module's own forward advances them.
    """

    fixed = True

    def __init__(self, model: MLP, activation: str):
        self.model = model
        self.linears = model.weighted_layers()
        self.skips = list(model.skips)
        self.norms = list(model.norms) if model.norms is not None else None
        self.batch_norm = self.norms is not None and isinstance(self.norms[0], torch.nn.BatchNorm1d)
        self.linear_activation = activation == "linear"
        self._forward, self._backward = ACTIVATIONS.get(activation, (None, None))
        for param in model.parameters():
            param.grad = torch.zeros_like(param)
        self._one = torch.ones(())
        self._batch = -1
        self.recording = Recording()
        # Whose gradients are final when layer i's reductions run: its own parameters, and the norm's of the block
        # below it, whose backward has just run.
        self.recording.layer_params = [
            list(layer.parameters()) + (list(self.norms[i - 1].parameters()) if self.norms and i else [])
            for i, layer in enumerate(self.linears)
        ]

    def _allocate(self, batch: int) -> None:
        """Buffers for a batch size: per hidden block its pre-activation z, the norm's output n (with a norm),
        activation a, output h (a, or h + a with a skip), the loss gradient at its output, at n and at z; the
        logits and their gradient."""
        width, depth = self.model.hidden_width(), len(self.skips)
        classes = self.linears[-1].out_features

        def new(columns: int) -> Tensor:
            return torch.empty(batch, columns)

        self.z = [new(width) for _ in range(depth)]
        # The activation's input: the norm's output, or z itself.
        self.n = [new(width) for _ in range(depth)] if self.norms else self.z
        self.a = self.n if self.linear_activation else [new(width) for _ in range(depth)]
        self.h = [new(width) if skip else a for skip, a in zip(self.skips, self.a)]
        self.dh = [new(width) for _ in range(depth)]  # dLoss / dh[i]
        # With the identity activation dLoss/dn is dLoss/da, which is dLoss/dh (h is a, or h + a).
        self.dn = self.dh if self.linear_activation else [new(width) for _ in range(depth)]
        self.dz = [new(width) for _ in range(depth)] if self.norms else self.dn
        if self.norms:
            # The statistics the norm's forward saves for its backward: per feature (batch norm) or per row.
            saved = width if self.batch_norm else (batch, 1)
            self.saved = [(torch.empty(saved), torch.empty(saved)) for _ in range(depth)]
        self.logits, self.dlogits = new(classes), new(classes)
        self.recording.pre_activations = [*self.z, self.logits]
        self.recording.pre_activation_grads = [*self.dz, self.dlogits]
        self.recording.activation_inputs = self.n
        self.recording.activations = self.a
        self.recording.layer_programs = None  # planned on the old buffers
        self._batch = batch

    def _norm_forward(self, i: int) -> None:
        """n[i] = block i's norm of z[i], as the module's forward in training mode computes it."""
        norm, (mean, inverse_std) = self.norms[i], self.saved[i]
        if self.batch_norm:
            norm.num_batches_tracked.add_(1)
            batch_norm(
                self.z[i], norm.weight, norm.bias, norm.running_mean, norm.running_var, True, norm.momentum, norm.eps,
                out=self.n[i], save_mean=mean, save_invstd=inverse_std,
            )  # fmt: skip
        else:
            layer_norm(self.z[i], norm.normalized_shape, norm.weight, norm.bias, norm.eps,
                       out0=self.n[i], out1=mean, out2=inverse_std)  # fmt: skip

    def _norm_backward(self, i: int) -> None:
        """dz[i] and the norm's gradients from dn[i]."""
        norm, (mean, inverse_std) = self.norms[i], self.saved[i]
        outputs = {"out0": self.dz[i], "out1": norm.weight.grad, "out2": norm.bias.grad}
        if self.batch_norm:
            batch_norm_backward(
                self.dn[i], self.z[i], norm.weight, norm.running_mean, norm.running_var, mean, inverse_std, True,
                norm.eps, [True, True, True], **outputs,
            )  # fmt: skip
        else:
            layer_norm_backward(self.dn[i], self.z[i], norm.normalized_shape, mean, inverse_std, norm.weight,
                                norm.bias, [True, True, True], **outputs)  # fmt: skip

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
            torch.addmm(layer.bias, inputs[i], layer.weight.t(), out=self.z[i])
            if self.norms:
                self._norm_forward(i)
            if not self.linear_activation:
                self._forward(self.n[i], self.a[i])
            if skip:
                torch.add(inputs[i], self.a[i], out=self.h[i])
            inputs.append(self.h[i])
        output = linears[-1]
        torch.addmm(output.bias, inputs[-1], output.weight.t(), out=self.logits)

        loss, grad = cross_entropy(self.logits, y, self._one, self.dlogits)
        # On a traced step, the tracer's reductions of each layer run as soon as the layer is done with.
        programs = self.recording.layer_programs if recording is not None else None
        for i in range(len(linears) - 1, -1, -1):
            layer = linears[i]
            torch.mm(grad.t(), inputs[i], out=layer.weight.grad)
            torch.sum(grad, 0, out=layer.bias.grad)
            if i == 0:
                if programs is not None:
                    run_program(programs[0])
                break
            below = i - 1  # the hidden block whose output h is this layer's input
            dh = self.dh[below]
            torch.mm(grad, layer.weight, out=dh)
            if i < len(skips) and skips[i]:
                dh.add_(self.dh[i])  # the skip around block i carries its output's gradient past it
            if not self.linear_activation:
                self._backward(dh, self.n[below], self.a[below], self.dn[below])
            if self.norms:
                self._norm_backward(below)
            if programs is not None:
                # Layer i's weights, gradients and pre-activation gradient, and the block below it (its norm's
                # gradients too): all just read or written.
                run_program(programs[i])
            grad = self.dz[below]
        self.recording.layer_programs_ran = programs is not None
        return loss, self.logits


class ConvEngine:
    """One training step's forward and backward pass of a CNN (no norm layer), into a traced step's recording.

    After `step(x, y, recording)` every parameter's `.grad` holds its gradient (a new
    tensor, as with autograd.grad) and, on a traced step, the recording holds what the
    model's own forward would keep (its probe fed as the pass goes) plus the
    pre-activation gradients, where there is no probe to measure them as backward goes.
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
        # A probe (the tracer's, on large blocks) measures the weights, the activations and each pre-activation
        # gradient while they are in cache, and the recording then keeps none of them: each block's tensors can go
        # as soon as backward is done with them. Without one, the recording keeps them for the tracer.
        probe = recording.probe if recording is not None else None
        keep = recording is not None and probe is None
        inputs, zs, activations = [x], [], []
        for i, (conv, skip) in enumerate(zip(self.convs, self.skips)):
            z = torch.convolution(inputs[i], conv.weight, conv.bias, *geometry)
            a = self._activate(z)
            if keep:
                recording.block([z], z, a, [conv.weight])
            elif probe is not None:
                probe.weights([conv.weight])
                probe.block(z, a)
            zs.append(z)
            activations.append(a)
            inputs.append(inputs[i] + a if skip else a)
        pooled = torch.mean(inputs[-1], (2, 3))
        logits = torch.addmm(self.output.bias, pooled, self.output.weight.t())
        if keep:
            recording.output(logits, [self.output.weight])
        elif probe is not None:
            probe.weights([self.output.weight])

        loss, grad = cross_entropy(logits, y, self._one)
        if probe is not None:
            probe.delta(len(self.convs), grad)
        self.output.weight.grad = torch.mm(grad.t(), pooled)
        self.output.bias.grad = torch.sum(grad, 0)
        # The mean's backward: each position gets its share of the pooled gradient.
        top = inputs[-1]
        dh = torch.div(torch.mm(grad, self.output.weight)[:, :, None, None].expand(top.shape), top.shape[2] * top.shape[3])
        # A block's tensors are let go of once its backward is done with them, as autograd frees what it saved: the
        # next ones then reuse memory that is still in cache.
        dzs = []
        for i in range(len(self.convs) - 1, -1, -1):
            conv = self.convs[i]
            dz = dh if self.linear_activation else self._backward(dh, zs[i], activations[i], torch.empty_like(dh))
            zs[i] = activations[i] = inputs[i + 1] = None
            if keep:
                dzs.append(dz)
            if probe is not None:
                probe.delta(i, dz)
            dinput, conv.weight.grad, conv.bias.grad = convolution_backward(
                dz, inputs[i], conv.weight, [conv.out_channels], *geometry, [i > 0, True, True]
            )
            del dz
            if i > 0:
                dh = dinput + dh if self.skips[i] else dinput  # the skip around block i passes dh on
        if keep:
            recording.pre_activation_grads = [*reversed(dzs), grad]
        return loss, logits


# Inputs narrower than this get their weight gradient as the transposed product (RecurrentEngine.step).
NARROW = 16


class RecurrentEngine:
    """One training step's forward and backward pass of the RNN (tanh-RNN, LSTM or GRU layers) into buffers kept
    across steps.

    worker.recurrent unrolls the recurrence in Python so that autograd keeps every hidden
    state h_t; each of the dozen ops of a time step then costs a Python call and an autograd
    node, and a 2-layer LSTM over 50 steps took twice as long as torch.nn.LSTM, which runs
    the whole sequence through oneDNN's fused LSTM (that kernel never exposes dL/dh_t).
    Here a time step is a few ATen calls with no autograd, and backward is
    written out: the loss gradient at every h_t (the total derivative, through the layer
    above and through h_{t+1}), which the tracer reads, is what the recurrence computes
    anyway. The weight gradients are one matrix product over all time steps. The
    arithmetic is autograd's, in another order of summation: results agree to float32
    rounding, not bit for bit (tests/worker/test_engine.py).
    """

    fixed = True

    def __init__(self, model: RNN):
        self.model = model
        self.cell = model.cell
        self.layers = list(model.recurrent)
        self.output = model.output
        self.regression = model.output.out_features == 1
        for param in model.parameters():
            param.grad = torch.zeros_like(param)
        self._one = torch.ones(())
        self._shape = None
        self.recording = Recording()

    def _allocate(self, steps: int, batch: int, inputs: int) -> None:
        width = self.model.output.in_features
        gates = {"rnn": 1, "lstm": 4, "gru": 3}[self.cell]
        new = torch.empty
        self.x = new(steps, batch, inputs)  # the input sequence, time first
        self.hs = [new(steps + 1, batch, width).zero_() for _ in self.layers]  # h_{-1} = 0, then h_0 ... h_{T-1}
        # dLoss/dh_t, total: first the direct part (from the layer above, or the output layer), then the recurrence
        # adds the part through h_{t+1} in place.
        self.dh = [new(steps, batch, width) for _ in self.layers]
        # W_ih x_t + b_ih + b_hh (the GRU's: + b_ih alone), then + W_hh h_{t-1} (the LSTM's pre-activations), then
        # the gates.
        self.gates = [new(steps, batch, gates * width) for _ in self.layers]
        self.dgates = [new(steps, batch, gates * width) for _ in self.layers]
        if self.cell == "lstm":
            self.g = [new(steps, batch, width) for _ in self.layers]  # tanh of the g gate
            self.c = [new(steps + 1, batch, width).zero_() for _ in self.layers]  # c_{-1} = 0, then c_t
            self.tc = [new(steps, batch, width) for _ in self.layers]  # tanh(c_t)
            self.dc, self.work = new(batch, width), new(batch, width)
            self.gate_bias = [new(gates * width) for _ in self.layers]  # b_ih + b_hh, for the C kernel
        if self.cell == "gru":
            # W_hh h_{t-1} + b_hh (the n gate scales its part by r, so it stays apart from the input's), and the
            # loss gradient there; per time step, the gates hold r, z, then n.
            self.hidden = [new(steps, batch, gates * width) for _ in self.layers]
            self.dhidden = [new(steps, batch, gates * width) for _ in self.layers]
            self.work, self.work2 = new(batch, width), new(batch, width)
        self.logits, self.dlogits = new(batch, self.output.out_features), new(batch, self.output.out_features)
        # Where a layer's inputs are narrow, the transposed weight gradient (see NARROW).
        self.narrow_grad = [
            new(layer.weight_ih.shape[1], gates * width) if layer.weight_ih.shape[1] < NARROW else None
            for layer in self.layers
        ]
        states = [list(h[1:].unbind(0)) for h in self.hs]
        self.recording.pre_activations = [s for layer in states for s in layer] + [self.logits]
        self.recording.pre_activation_grads = [g for d in self.dh for g in d.unbind(0)] + [self.dlogits]
        self.recording.activations = self.recording.activation_inputs = [h[1:] for h in self.hs]
        self.recording.layer_programs = None
        self._step_views: dict[int, SimpleNamespace] = {}
        self._shape = (steps, batch, inputs)

    @torch.no_grad()
    def step(self, x: Tensor, y: Tensor, recording: Recording | None = None) -> tuple[Tensor, Tensor]:
        """Forward and backward of one batch (batch, T, inputs): the loss (0-d) and the outputs; gradients into
        `.grad`."""
        batch, steps, inputs = x.shape
        if self._shape != (steps, batch, inputs):
            self._allocate(steps, batch, inputs)
        self.x.copy_(x.transpose(0, 1))
        sequence = self.x
        for l, layer in enumerate(self.layers):
            flat = sequence.view(steps * batch, -1)
            # The input's part of every time step at once, where the recurrence adds W_hh h_{t-1} in place (addmm_ is
            # addmm(out=) without its copy of the addend): for the tanh-RNN into h_t itself, for the LSTM and the GRU
            # into their gates.
            projected = (self.hs[l][1:] if self.cell == "rnn" else self.gates[l]).view(steps * batch, -1)
            if self.cell == "lstm" and lstm_step_forward is not None:
                # The kernel adds the biases as it reads the gates: one pass fewer over the sequence's gates, which
                # are out of cache by then.
                torch.add(layer.bias_ih, layer.bias_hh, out=self.gate_bias[l])
                torch.mm(flat, layer.weight_ih.t(), out=projected)
            else:
                bias = layer.bias_ih if self.cell == "gru" else layer.bias_ih + layer.bias_hh
                torch.addmm(bias, flat, layer.weight_ih.t(), out=projected)
            self._forward_layer(l, layer, steps)
            sequence = self.hs[l][1:]
        torch.addmm(self.output.bias, sequence[-1], self.output.weight.t(), out=self.logits)

        if self.regression:
            outputs = self.logits.squeeze(-1)
            loss = nn_ops.mse_loss(outputs, y, 1)
            mse_loss_backward(self._one, outputs, y, 1, grad_input=self.dlogits.squeeze(-1))
        else:
            loss, _ = cross_entropy(self.logits, y, self._one, self.dlogits)
        torch.mm(self.dlogits.t(), sequence[-1], out=self.output.weight.grad)
        torch.sum(self.dlogits, 0, out=self.output.bias.grad)
        # The direct gradient at the top layer's states: only the last one feeds the output layer.
        top = self.dh[-1]
        top.zero_()
        torch.mm(self.dlogits, self.output.weight, out=top[-1])
        for l in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[l]
            self._backward_layer(l, layer, steps)
            flat_dgates = self.dgates[l].view(steps * batch, -1)
            # The hidden side's gradient: the gates' own, but for the GRU, whose n gate sees r * (W_hn h + b_hn).
            flat_dhidden = self.dhidden[l].view(steps * batch, -1) if self.cell == "gru" else flat_dgates
            inputs_flat = (self.x if l == 0 else self.hs[l - 1][1:]).reshape(steps * batch, -1)
            if inputs_flat.shape[1] < NARROW:
                # dW = dgates^T x with x a few columns wide (the sequence's features): over steps x batch rows
                # (3,200 in bench/recurrent_vs_torch.py), MKL took 4-8x longer than for the transposed x^T dgates.
                torch.mm(inputs_flat.t(), flat_dgates, out=self.narrow_grad[l])
                layer.weight_ih.grad.copy_(self.narrow_grad[l].t())
            else:
                torch.mm(flat_dgates.t(), inputs_flat, out=layer.weight_ih.grad)
            torch.mm(flat_dhidden.t(), self.hs[l][:-1].reshape(steps * batch, -1), out=layer.weight_hh.grad)
            torch.sum(flat_dgates, 0, out=layer.bias_ih.grad)
            if flat_dhidden is flat_dgates:
                layer.bias_hh.grad.copy_(layer.bias_ih.grad)
            else:
                torch.sum(flat_dhidden, 0, out=layer.bias_hh.grad)
            if l > 0:
                torch.mm(flat_dgates, layer.weight_ih, out=self.dh[l - 1].view(steps * batch, -1))
        self.recording.layer_programs_ran = False
        return loss, self.logits

    def _views(self, l: int) -> SimpleNamespace:
        """Layer l's buffers cut into per-time-step views once, so that a step costs no indexing: a view made in
        Python costs about a microsecond, and a time step uses a dozen."""
        views = self._step_views.get(l)
        if views is not None:
            return views
        width = self.hs[l].shape[-1]

        def steps(tensor: Tensor) -> list[Tensor]:
            return list(tensor.unbind(0))

        gates, dgates = self.gates[l], self.dgates[l]
        views = SimpleNamespace(
            h=steps(self.hs[l]), dh=steps(self.dh[l]), a=steps(gates), da=steps(dgates),
        )  # fmt: skip
        if self.cell == "lstm":
            chunk = [slice(k * width, (k + 1) * width) for k in range(4)]
            views.i, views.f, views.g_pre, views.o = (steps(gates[:, :, part]) for part in chunk)
            views.di, views.df, views.dg, views.do = (steps(dgates[:, :, part]) for part in chunk)
            views.g, views.c, views.tc = steps(self.g[l]), steps(self.c[l]), steps(self.tc[l])
            # What the C kernels' forward and backward of time step t read and write, by address (all contiguous).
            views.forward_addresses = [
                (views.a[t].data_ptr(), self.gate_bias[l].data_ptr(), views.g[t].data_ptr(), views.c[t].data_ptr(),
                 views.c[t + 1].data_ptr(), views.tc[t].data_ptr(), views.h[t + 1].data_ptr(), *views.dh[t].shape)
                for t in range(len(views.dh))
            ]  # fmt: skip
            views.backward_addresses = [
                (views.dh[t].data_ptr(), views.tc[t].data_ptr(), views.a[t].data_ptr(), views.g[t].data_ptr(),
                 views.c[t].data_ptr(), self.dc.data_ptr(), views.da[t].data_ptr(), *views.dh[t].shape)
                for t in range(len(views.dh))
            ]  # fmt: skip
        if self.cell == "gru":
            hidden, dhidden = self.hidden[l], self.dhidden[l]
            rz, n = slice(0, 2 * width), slice(2 * width, 3 * width)
            views.r, views.z = steps(gates[:, :, :width]), steps(gates[:, :, width:2 * width])
            views.rz, views.n = steps(gates[:, :, rz]), steps(gates[:, :, n])
            views.dr, views.dz = steps(dgates[:, :, :width]), steps(dgates[:, :, width:2 * width])
            views.drz, views.dn = steps(dgates[:, :, rz]), steps(dgates[:, :, n])
            views.hidden, views.hidden_rz, views.hidden_n = steps(hidden), steps(hidden[:, :, rz]), steps(hidden[:, :, n])
            views.dhidden, views.dhidden_rz, views.dhidden_n = (
                steps(dhidden), steps(dhidden[:, :, rz]), steps(dhidden[:, :, n])
            )
        self._step_views[l] = views
        return views

    def _forward_layer(self, l: int, layer: RecurrentLayer, steps: int) -> None:
        v, w_hh = self._views(l), layer.weight_hh.t()
        h = v.h
        if self.cell == "rnn":
            for t in range(steps):
                h[t + 1].addmm_(h[t], w_hh).tanh_()
            return
        if self.cell == "gru":
            # As worker.recurrent writes it: r, z = sigmoid(x + h parts), n = tanh(x_n + r * h_n), h = n + z (h - n).
            for t in range(steps):
                torch.addmm(layer.bias_hh, h[t], w_hh, out=v.hidden[t])
                v.rz[t].add_(v.hidden_rz[t]).sigmoid_()
                v.n[t].addcmul_(v.r[t], v.hidden_n[t]).tanh_()
                torch.sub(h[t], v.n[t], out=h[t + 1])
                h[t + 1].mul_(v.z[t]).add_(v.n[t])
            return
        if lstm_step_forward is not None and blas_shared():  # the whole recurrence in one call (same module)
            batch, width = v.dh[0].shape
            lstm_sequence_forward(
                self.gates[l].data_ptr(), self.gate_bias[l].data_ptr(), self.g[l].data_ptr(), self.c[l].data_ptr(),
                self.tc[l].data_ptr(), self.hs[l].data_ptr(), layer.weight_hh.data_ptr(), steps, batch, width,
            )  # fmt: skip
            return
        if lstm_step_forward is not None:
            addresses = v.forward_addresses
            for t in range(steps):
                v.a[t].addmm_(h[t], w_hh)
                lstm_step_forward(*addresses[t])  # the loop below's elementwise calls, in one
            return
        c = v.c
        for t in range(steps):
            a = v.a[t]
            a.addmm_(h[t], w_hh)
            torch.tanh(v.g_pre[t], out=v.g[t])
            a.sigmoid_()  # i, f and o; the g slot's sigmoid is not used
            torch.mul(v.f[t], c[t], out=c[t + 1])
            c[t + 1].addcmul_(v.i[t], v.g[t])
            torch.tanh(c[t + 1], out=v.tc[t])
            torch.mul(v.o[t], v.tc[t], out=h[t + 1])

    def _backward_gru(self, v: SimpleNamespace, w_hh: Tensor, steps: int) -> None:
        """The GRU's backward through time: dLoss/dh_t (total) and the gradients at both sides' pre-activations."""
        dh, through_z, difference = v.dh, self.work, self.work2
        for t in range(steps - 1, -1, -1):
            # h_{t+1} = n + z (h_t - n): to n, dh - z dh; to z, dh (h_t - n); to h_t directly, z dh.
            torch.mul(dh[t], v.z[t], out=through_z)
            torch.sub(dh[t], through_z, out=v.dn[t])
            torch.sub(v.h[t], v.n[t], out=difference)
            torch.mul(dh[t], difference, out=v.dz[t])
            tanh_backward(v.dn[t], v.n[t], grad_input=v.dn[t])  # n = tanh(x_n + r h_n)
            torch.mul(v.dn[t], v.r[t], out=v.dhidden_n[t])
            torch.mul(v.dn[t], v.hidden_n[t], out=v.dr[t])
            sigmoid_backward(v.drz[t], v.rz[t], grad_input=v.drz[t])
            v.dhidden_rz[t].copy_(v.drz[t])
            if t:
                dh[t - 1].add_(through_z).addmm_(v.dhidden[t], w_hh)

    def _backward_layer(self, l: int, layer: RecurrentLayer, steps: int) -> None:
        """dLoss/dh_t for every t (total), and the gradients at the gates' pre-activations."""
        v, w_hh = self._views(l), layer.weight_hh
        dh, da = v.dh, v.da
        if self.cell == "rnn":
            for t in range(steps - 1, -1, -1):
                tanh_backward(dh[t], v.h[t + 1], grad_input=da[t])
                if t:
                    dh[t - 1].addmm_(da[t], w_hh)
            return
        if self.cell == "gru":
            self._backward_gru(v, w_hh, steps)
            return
        dc, work = self.dc, self.work
        if lstm_step_backward is not None and blas_shared():
            batch, width = dh[0].shape
            lstm_sequence_backward(
                self.gates[l].data_ptr(), self.dh[l].data_ptr(), self.g[l].data_ptr(), self.c[l].data_ptr(),
                self.tc[l].data_ptr(), dc.data_ptr(), self.dgates[l].data_ptr(), w_hh.data_ptr(), steps, batch, width,
            )  # fmt: skip
            return
        dc.zero_()
        if lstm_step_backward is not None:
            addresses = v.backward_addresses
            for t in range(steps - 1, -1, -1):
                lstm_step_backward(*addresses[t])  # the loop below's elementwise calls, in one
                if t:
                    dh[t - 1].addmm_(da[t], w_hh)
            return
        for t in range(steps - 1, -1, -1):
            torch.mul(dh[t], v.tc[t], out=v.do[t])  # through o
            torch.mul(dh[t], v.o[t], out=work)
            tanh_backward(work, v.tc[t], grad_input=work)
            dc.add_(work)  # dLoss/dc_t: through h_t and through c_{t+1}
            torch.mul(dc, v.g[t], out=v.di[t])  # through i
            torch.mul(dc, v.c[t], out=v.df[t])  # through f
            torch.mul(dc, v.i[t], out=work)  # through g
            dc.mul_(v.f[t])  # dLoss/dc_{t-1}
            sigmoid_backward(da[t], v.a[t], grad_input=da[t])  # i, f, o; the g slot is overwritten next
            tanh_backward(work, v.g[t], grad_input=v.dg[t])
            if t:
                dh[t - 1].addmm_(da[t], w_hh)
