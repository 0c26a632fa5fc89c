"""The models of the spec, whose forward pass can record what the tracer measures.

A model here is an ordinary nn.Module with a few additions the tracer relies on:
`layer_weights()` (the weight tensors of each traced layer, input side first,
output last), `layer_info()` (their names and kinds, as the trace's `layers`),
`activation_shape(batch)` and `unit_dim` (how the hidden blocks' activations
stack, and which of their dimensions counts units), and a `forward(x, recording)`
that, when given a Recording, keeps each layer's pre-activation and each hidden
block's activation input and output. Recording inside forward costs a few list
appends; generic module hooks would cost a Python call per module per step.

The MLP and the CNN are here, both a BlockStack of one weighted layer per block; the
recurrent network is in worker/recurrent.py.
"""

import torch
from torch import Tensor, nn

from shared.spec import IMAGE_SIZE, ExperimentSpec
from worker.activations import Activation, get_activation
from worker.datasets import derive_seed
from worker.inits import apply_init


class Recording:
    """What one traced forward and backward pass keeps, per layer, for the tracer to reduce.

    With a probe (the tracer's, on a CPU: worker.stats.HostProbe), each block's
    activations and each layer's weights are also handed to it as the forward pass
    goes, while they are in cache.
    """

    def __init__(self, probe=None) -> None:
        self.probe = probe
        self.pre_activations: list[Tensor] = []  # z = W x + b of every weighted layer, logits last
        self.pre_activation_grads: list[Tensor] = []  # dLoss/dz, once `backward` has run
        self.activation_inputs: list[Tensor] = []  # per hidden block: the activation's input (after the norm)
        self.activations: list[Tensor] = []  # per hidden block: the activation's output
        # Per weighted layer, reductions (worker.stats.Program) that a hand-written backward (worker.engine's
        # MLP) runs as soon as it is done with that layer, while its tensors are in cache; set by the tracer.
        self.layer_programs: list | None = None
        self.layer_programs_ran = False  # set by the engine when it ran them on this step's backward
        # Per weighted layer, the parameters whose gradients are final when its reductions run (the engine's).
        self.layer_params: list[list[Tensor]] | None = None

    def release(self) -> None:
        """Drop the pass's tensors, once measured."""
        self.pre_activations, self.pre_activation_grads, self.activation_inputs, self.activations = [], [], [], []

    def block(
        self, pre_activations: list[Tensor], activation_input: Tensor, activation: Tensor, weights: list[Tensor]
    ) -> None:
        """Keep a hidden block's linear outputs (one; a recurrent layer's: one per time step), the activation's
        input and its output; `weights` are the block's weight tensors."""
        self.pre_activations.extend(pre_activations)
        self.activation_inputs.append(activation_input)
        self.activations.append(activation)
        if self.probe is not None:
            self.probe.weights(weights)
            self.probe.block(activation_input, activation)

    def output(self, logits: Tensor, weights: list[Tensor]) -> None:
        """Keep the output layer's logits."""
        self.pre_activations.append(logits)
        if self.probe is not None:
            self.probe.weights(weights)

    def backward(self, loss: Tensor, params: list[Tensor]) -> None:
        """loss.backward() that also keeps the loss gradient at every pre-activation.

        One autograd call returns both; per-tensor hooks or retain_grad() would cost
        a Python call or a copy per layer, which is more than this loop's own work
        on small layers.
        """
        grads = torch.autograd.grad(loss, params + self.pre_activations, allow_unused=True)
        for param, grad in zip(params, grads):
            param.grad = grad
        self.pre_activation_grads = list(grads[len(params) :])


class BlockStack(nn.Module):
    """depth x [weighted layer -> optional norm -> activation], optional skips, a pooling, then a Linear to the classes.

    The MLP and the CNN are both this stack. A subclass says which weighted layer and
    which norm make a block, how the last block's output is pooled for the output
    layer, and what the trace calls its layers.
    """

    # A block's activations have their units along dimension 1: (batch, units) in the MLP,
    # (batch, channels, height, width) in the CNN, where a unit is a channel.
    unit_dim = 1
    layer_name: str  # the trace names block i's layer f"{layer_name}.{i}"
    layer_kind: str

    def __init__(
        self,
        inputs: int,
        width: int,
        depth: int,
        classes: int,
        activation: Activation,
        norm: str = "none",
        residual: bool = False,
    ):
        super().__init__()
        # Constructors draw from the RNG: this order is what makes a seed give the same weights.
        self.layers = nn.ModuleList(self.make_layer(inputs if i == 0 else width, width) for i in range(depth))
        self.norms = nn.ModuleList(self.make_norm(norm, width) for _ in range(depth)) if norm != "none" else None
        self.activation = activation.module()
        self.output = nn.Linear(width, classes)
        # A skip needs the block's input and output to have the same shape.
        self.skips = [residual and (i > 0 or inputs == width) for i in range(depth)]

    def make_layer(self, inputs: int, width: int) -> nn.Module:
        """A block's weighted layer, from `inputs` features (or channels) to `width`."""
        raise NotImplementedError

    def make_norm(self, norm: str, width: int) -> nn.Module:
        """A block's norm layer over `width` features (or channels)."""
        raise NotImplementedError

    def pool(self, x: Tensor) -> Tensor:
        """The last block's output as the output layer's (batch, width) input."""
        raise NotImplementedError

    def forward(self, x: Tensor, recording: Recording | None = None) -> Tensor:
        """The logits; with a recording, also what the tracer measures."""
        for i, layer in enumerate(self.layers):
            z = layer(x)
            h = self.norms[i](z) if self.norms is not None else z
            a = self.activation(h)
            if recording is not None:
                recording.block([z], h, a, [layer.weight])
            x = x + a if self.skips[i] else a
        logits = self.output(self.pool(x))
        if recording is not None:
            recording.output(logits, [self.output.weight])
        return logits

    def weighted_layers(self) -> list[nn.Module]:
        """Every weighted layer in forward order, the output layer last."""
        return [*self.layers, self.output]

    def layer_weights(self) -> list[list[Tensor]]:
        """The weight tensors of each traced layer: one per layer."""
        return [[layer.weight] for layer in self.weighted_layers()]

    def layer_info(self) -> list[dict]:
        """The trace's `layers`: name and kind of each weighted layer, in forward order."""
        return [{"name": f"{self.layer_name}.{i}", "kind": self.layer_kind} for i in range(len(self.layers))] + [
            {"name": "output", "kind": "linear"}
        ]

    def hidden_width(self) -> int:
        """Units per block: all blocks have the same, so their activations stack."""
        return self.output.in_features


class MLP(BlockStack):
    """depth x [Linear -> optional norm -> activation], optional skips, then a Linear to the classes."""

    layer_name = "hidden"
    layer_kind = "linear"

    def make_layer(self, inputs: int, width: int) -> nn.Module:
        return nn.Linear(inputs, width)

    def make_norm(self, norm: str, width: int) -> nn.Module:
        if norm == "batchnorm":
            return nn.BatchNorm1d(width)
        if norm == "layernorm":
            return nn.LayerNorm(width)
        raise ValueError(f"unknown norm {norm!r}")

    def pool(self, x: Tensor) -> Tensor:
        return x

    def activation_shape(self, batch_size: int) -> tuple[int, ...]:
        """The shape of one hidden block's activations for a batch."""
        return (batch_size, self.hidden_width())


class CNN(BlockStack):
    """depth x [3x3 Conv (padding 1) -> optional norm -> activation], optional skips, global average pooling,
    then a Linear to the classes. Every block keeps the image size, so all blocks' activations stack."""

    layer_name = "conv"
    layer_kind = "conv"
    # Every dataset of the CNN is IMAGE_SIZE x IMAGE_SIZE, and padding keeps it through the blocks.
    image_size = IMAGE_SIZE

    def make_layer(self, inputs: int, width: int) -> nn.Module:
        return nn.Conv2d(inputs, width, kernel_size=3, padding=1)

    def make_norm(self, norm: str, width: int) -> nn.Module:
        if norm == "batchnorm":
            return nn.BatchNorm2d(width)
        if norm == "layernorm":
            # LayerNorm over (channels, height, width) of each example, with a per-channel scale and shift.
            return nn.GroupNorm(1, width)
        raise ValueError(f"unknown norm {norm!r}")

    def pool(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))

    def activation_shape(self, batch_size: int) -> tuple[int, ...]:
        """The shape of one block's activations for a batch."""
        return (batch_size, self.hidden_width(), self.image_size, self.image_size)


def build_model(spec: ExperimentSpec) -> nn.Module:
    """The spec's model on the CPU, initialized from the spec's seed; move it to the device after."""
    from worker.recurrent import RNN

    inputs, classes = spec.dims()
    # Built on the CPU from a seeded fork of the RNG: the same weights on every device,
    # and the caller's random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        # The CPU generator only: torch.manual_seed would also seed CUDA's lazily, which records
        # a stack trace per device type (milliseconds per run, a tiny run's largest cost).
        torch.default_generator.manual_seed(derive_seed(spec.seed, "model"))
        if spec.arch == "rnn":
            model = RNN(spec.cell, inputs, spec.width, spec.depth, classes, spec.seq_len)
        else:
            family = {"mlp": MLP, "cnn": CNN}[spec.arch]
            model = family(
                inputs,
                spec.width,
                spec.depth,
                classes,
                get_activation(spec.activation),
                norm=spec.norm,
                residual=spec.residual,
            )
        apply_init(model.weighted_layers(), spec.init, spec.init_std)
    return model
