"""The weight initializations of the spec, applied to every weighted layer of a model.

`default` leaves PyTorch's own init alone, biases included. Every named init
sets biases to 0, so that what differs between runs is the weights alone.
Norm layers keep their defaults (weight 1, bias 0) in every case.
"""

import math

import torch
from torch import nn

KAIMING_GAIN = math.sqrt(2.0)  # He et al. 2015, for ReLU: nonlinearity="relu"


def init_weight(weight: torch.Tensor, init: str, init_std: float = 0.01) -> None:
    """Fill one weight tensor (out, in, ...) in place as the named init prescribes; fan_in counts
    the kernel's positions of a conv weight and the input (or hidden) size of a recurrent one."""
    with torch.no_grad():
        if init == "xavier_uniform":
            nn.init.xavier_uniform_(weight, gain=1.0)
        elif init == "xavier_normal":
            nn.init.xavier_normal_(weight, gain=1.0)
        elif init == "kaiming_uniform":
            nn.init.kaiming_uniform_(weight, mode="fan_in", nonlinearity="relu")
        elif init == "kaiming_normal":
            nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
        elif init == "lecun_normal":
            # LeCun et al. 1998: a plain (not truncated) normal with variance 1 / fan_in.
            fan_in = weight[0].numel()
            nn.init.normal_(weight, mean=0.0, std=1.0 / math.sqrt(fan_in))
        elif init == "orthogonal":
            nn.init.orthogonal_(weight, gain=1.0)
        elif init == "normal":
            nn.init.normal_(weight, mean=0.0, std=init_std)
        else:
            raise ValueError(f"unknown init {init!r}")


def expected_std(init: str, fan_in: int, fan_out: int, init_std: float = 0.01) -> float:
    """The standard deviation that a named init gives the weights, for tests and the theory."""
    if init in ("xavier_uniform", "xavier_normal"):
        return math.sqrt(2.0 / (fan_in + fan_out))
    if init in ("kaiming_uniform", "kaiming_normal"):
        return KAIMING_GAIN / math.sqrt(fan_in)
    if init == "lecun_normal":
        return 1.0 / math.sqrt(fan_in)
    if init == "orthogonal":
        # Rows (or columns) of unit norm: each entry has variance 1 / max(fan_in, fan_out).
        return 1.0 / math.sqrt(max(fan_in, fan_out))
    if init == "normal":
        return init_std
    if init == "default":
        # nn.Linear's kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        return 1.0 / math.sqrt(3.0 * fan_in)
    raise ValueError(f"unknown init {init!r}")


def apply_init(layers: list[nn.Module], init: str, init_std: float = 0.01) -> None:
    """Initialize the weighted layers of a model; `default` keeps PyTorch's init as constructed."""
    if init == "default":
        return
    for layer in layers:
        # `weight` and `bias` of a Linear or Conv2d; weight_ih, weight_hh, bias_ih, bias_hh of a recurrent layer.
        for name, param in layer.named_parameters(recurse=False):
            if name.startswith("weight"):
                init_weight(param, init, init_std)
            elif name.startswith("bias"):
                with torch.no_grad():
                    param.zero_()
