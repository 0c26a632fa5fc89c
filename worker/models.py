"""The models of the spec, whose forward pass can record what the tracer measures.

A model here is an ordinary nn.Module with three additions the tracer relies on:
`weighted_layers()` (input side first, output last), `layer_info()` (their names
and kinds, as the trace's `layers`), and a `forward(x, recording)` that, when given
a Recording, keeps each layer's pre-activation and each hidden block's activation
input and output. Recording inside forward costs a few list appends; generic
module hooks would cost a Python call per module per step.
"""

import torch
from torch import Tensor, nn

from shared.spec import ExperimentSpec
from worker.activations import Activation, get_activation
from worker.datasets import derive_seed
from worker.inits import apply_init


class Recording:
    """What one traced forward and backward pass keeps, per layer, for the tracer to reduce."""

    def __init__(self) -> None:
        self.pre_activations: list[Tensor] = []  # z = W x + b of every weighted layer, logits last
        self.pre_activation_grads: list[Tensor] = []  # dLoss/dz, once `backward` has run
        self.activation_inputs: list[Tensor] = []  # per hidden block: the activation's input (after the norm)
        self.activations: list[Tensor] = []  # per hidden block: the activation's output

    def block(self, pre_activation: Tensor, activation_input: Tensor, activation: Tensor) -> None:
        """Keep a hidden block's linear output, the activation's input and its output."""
        self.pre_activations.append(pre_activation)
        self.activation_inputs.append(activation_input)
        self.activations.append(activation)

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


class MLP(nn.Module):
    """depth x [Linear -> optional norm -> activation], optional skips, then a Linear to the classes."""

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
        self.hidden = nn.ModuleList(nn.Linear(inputs if i == 0 else width, width) for i in range(depth))
        self.norms = nn.ModuleList(_norm_layer(norm, width) for _ in range(depth)) if norm != "none" else None
        self.activation = activation.module()
        self.output = nn.Linear(width, classes)
        # A skip needs the block's input and output to have the same shape.
        self.skips = [residual and layer.in_features == width for layer in self.hidden]

    def forward(self, x: Tensor, recording: Recording | None = None) -> Tensor:
        """The logits; with a recording, also what the tracer measures."""
        for i, layer in enumerate(self.hidden):
            z = layer(x)
            h = self.norms[i](z) if self.norms is not None else z
            a = self.activation(h)
            if recording is not None:
                recording.block(z, h, a)
            x = x + a if self.skips[i] else a
        logits = self.output(x)
        if recording is not None:
            recording.pre_activations.append(logits)
        return logits

    def weighted_layers(self) -> list[nn.Linear]:
        """Every weighted layer in forward order, the output layer last."""
        return [*self.hidden, self.output]

    def layer_info(self) -> list[dict]:
        """The trace's `layers`: name and kind of each weighted layer, in forward order."""
        return [{"name": f"hidden.{i}", "kind": "linear"} for i in range(len(self.hidden))] + [
            {"name": "output", "kind": "linear"}
        ]

    def hidden_width(self) -> int:
        """Units per hidden block: all blocks have the same, so their activations stack."""
        return self.output.in_features


def _norm_layer(norm: str, width: int) -> nn.Module:
    if norm == "batchnorm":
        return nn.BatchNorm1d(width)
    if norm == "layernorm":
        return nn.LayerNorm(width)
    raise ValueError(f"unknown norm {norm!r}")


def build_model(spec: ExperimentSpec) -> MLP:
    """The spec's model on the CPU, initialized from the spec's seed; move it to the device after."""
    if spec.arch != "mlp":
        raise ValueError(f"arch {spec.arch!r} has no model yet")
    inputs, classes = spec.dims()
    # Built on the CPU from a seeded fork of the RNG: the same weights on every device,
    # and the caller's random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(spec.seed, "model"))
        model = MLP(
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
