"""What the tracer measures, as functions of device tensors: few kernels, no host sync.

These are the pure half of tracing (the tracer decides when and where to keep
the results). Each returns small device tensors; nothing here calls `.item()`.
Per-tensor norms go through `torch._foreach_norm`, one fused kernel on a GPU;
per-layer activation statistics stack the equally shaped hidden activations
into one scratch tensor and reduce them together.
"""

import math

import torch
from torch import Tensor

from worker.activations import Activation


# On a CPU, tensors at least this large get their norm from a BLAS dot product (see `norms`).
DOT_MIN_NUMEL = 1 << 15


def norms(tensors: list[Tensor]) -> Tensor:
    """The L2 norm of each tensor, as one (n,) tensor."""
    # Summed in float32, as clip_grad_norm_ does: entries below ~1e-19 lose precision in
    # their squares and below ~1e-23 add nothing. float64 would fix that at 3-10x the cost on a CPU.
    if not tensors or tensors[0].device.type != "cpu":
        return torch.stack(torch._foreach_norm(tensors))
    # On a CPU _foreach_norm is a loop over the norm kernel, which sums squares at about half
    # the speed of the BLAS dot product of a tensor with itself (the same float32 sum). The dot
    # costs a Python call per tensor, which only large tensors repay.
    small_tensors = [t for t in tensors if t.numel() < DOT_MIN_NUMEL]
    small = iter(torch._foreach_norm(small_tensors) if small_tensors else ())
    values = []
    for tensor in tensors:
        if tensor.numel() < DOT_MIN_NUMEL:
            values.append(next(small))
        else:
            flat = tensor.reshape(-1)
            values.append(torch.dot(flat, flat).sqrt_())
    return torch.stack(values)


def batch_accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Share of the batch whose largest logit is the target class, as a 0-d tensor."""
    return (logits.argmax(dim=1) == targets).to(logits.dtype).mean()


def activation_stats(
    activations: list[Tensor],
    activation_inputs: list[Tensor],
    activation: Activation,
    scratch: Tensor,
    work: Tensor,
    unit_dim: int = 1,
) -> Tensor:
    """Per hidden block: mean, std, dead fraction, saturated fraction of its activations, as (4, blocks).

    `activations` and `activation_inputs` hold one equally shaped tensor per block, whose
    dimension `unit_dim` counts units: (batch, units) for an MLP, (batch, channels, height,
    width) for a CNN (a unit is a channel), (time, batch, units) for an RNN. `scratch` and
    `work` are (blocks, ...) tensors that this function overwrites. The std is the population
    std over all of a block's values; a unit is dead when its output is <= 0 at every other
    index (every example, position, time step); an activation is saturated where
    |phi'(input)| < 1 % of max phi'.
    """
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
