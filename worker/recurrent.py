"""The recurrent network of `arch: rnn`: stacked tanh-RNN, LSTM or GRU layers unrolled in Python, then a Linear.

The recurrence is written out step by step (the equations of torch.nn.RNN, LSTM
and GRU, with their parameter names, shapes, gate order and default init) rather
than calling the fused modules, so that every hidden state h_t is a tensor of its
own in the autograd graph: the tracer asks autograd for dL/dh_t at every time
step of every layer, which is the total derivative (through the layer above and
through h_{t+1}), the quantity whose decay through time is the vanishing
gradient of recurrent nets. Each step's input projection W_ih x_t is done for
the whole sequence in one matrix product; only W_hh h_{t-1} is per step.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.spec import CELL_GATES
from worker.models import Recording


class RecurrentLayer(nn.Module):
    """One layer of `cell`: weight_ih (gates*width, inputs), weight_hh (gates*width, width) and their biases."""

    def __init__(self, cell: str, inputs: int, width: int):
        super().__init__()
        self.cell = cell
        self.width = width
        rows = CELL_GATES[cell] * width
        self.weight_ih = nn.Parameter(torch.empty(rows, inputs))
        self.weight_hh = nn.Parameter(torch.empty(rows, width))
        self.bias_ih = nn.Parameter(torch.empty(rows))
        self.bias_hh = nn.Parameter(torch.empty(rows))
        # torch.nn.RNN's own default: every parameter U(-1/sqrt(width), 1/sqrt(width)).
        bound = 1.0 / math.sqrt(width)
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    def forward(self, xs: Tensor) -> list[Tensor]:
        """The hidden states h_1 ... h_T, one (batch, width) tensor each, of the input sequence (T, batch, inputs)."""
        projected = F.linear(xs, self.weight_ih, self.bias_ih)  # every time step's W_ih x_t + b_ih at once
        h = xs.new_zeros(xs.shape[1], self.width)
        c = h
        states = []
        for x_part in projected:
            recurrent = F.linear(h, self.weight_hh, self.bias_hh)
            if self.cell == "rnn":
                h = torch.tanh(x_part + recurrent)
            elif self.cell == "lstm":
                i, f, g, o = (x_part + recurrent).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:  # gru
                x_r, x_z, x_n = x_part.chunk(3, dim=1)
                h_r, h_z, h_n = recurrent.chunk(3, dim=1)
                r = torch.sigmoid(x_r + h_r)
                z = torch.sigmoid(x_z + h_z)
                n = torch.tanh(x_n + r * h_n)
                h = n + z * (h - n)  # (1 - z) * n + z * h
            states.append(h)
        return states


class RNN(nn.Module):
    """depth stacked recurrent layers of `cell`, then a Linear from the last hidden state to the outputs."""

    # A layer's stacked hidden states are (time, batch, units): dimension 2 counts units.
    unit_dim = 2

    def __init__(self, cell: str, inputs: int, width: int, depth: int, outputs: int, seq_len: int):
        super().__init__()
        self.cell = cell
        self.seq_len = seq_len
        self.recurrent = nn.ModuleList(RecurrentLayer(cell, inputs if i == 0 else width, width) for i in range(depth))
        self.output = nn.Linear(width, outputs)

    def forward(self, x: Tensor, recording: Recording | None = None) -> Tensor:
        """The outputs from the last time step of the sequences x (batch, T, inputs); with a recording, every h_t too."""
        xs = x.transpose(0, 1)
        for layer in self.recurrent:
            states = layer(xs)
            xs = torch.stack(states)
            if recording is not None:
                # The tracer's "pre-activations" of a recurrent layer are its hidden states, one per time
                # step; its activation statistics are over the stacked (T, batch, width) sequence.
                recording.block(states, xs, xs, [layer.weight_ih, layer.weight_hh])
        outputs = self.output(xs[-1])
        if recording is not None:
            recording.output(outputs, [self.output.weight])
        return outputs

    def weighted_layers(self) -> list[nn.Module]:
        """Every weighted layer in forward order, the output layer last."""
        return [*self.recurrent, self.output]

    def layer_weights(self) -> list[list[Tensor]]:
        """The weight tensors of each traced layer: input-hidden and hidden-hidden together for a recurrent one."""
        return [[layer.weight_ih, layer.weight_hh] for layer in self.recurrent] + [[self.output.weight]]

    def layer_info(self) -> list[dict]:
        """The trace's `layers`: `rnn.0` ... (kind: the cell), then `output`."""
        return [{"name": f"rnn.{i}", "kind": self.cell} for i in range(len(self.recurrent))] + [
            {"name": "output", "kind": "linear"}
        ]

    def activation_shape(self, batch_size: int) -> tuple[int, ...]:
        """The shape of one layer's stacked hidden states for a batch."""
        return (self.seq_len, batch_size, self.output.in_features)
