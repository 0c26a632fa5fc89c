"""gradtrace's recurrent cells against PyTorch's own (nn.RNN, nn.LSTM, nn.GRU), in one process.

    .venv/bin/python bench/recurrent_vs_torch.py [--cells rnn,lstm,gru] [--steps 100] [--rounds 3] [--threads N]

The plain loop is bench/service_vs_plain.py's, what one writes with torch.nn: the cell's
module over the sequence, a Linear on the last hidden state, MSE on the adding problem's
shapes, `torch.optim.SGD`, `zero_grad` / forward / backward / step. On a CPU PyTorch runs nn.LSTM through
oneDNN's fused LSTM, nn.RNN and nn.GRU through ATen's C++ loop over time: none of them
exposes the loss gradient at each hidden state, which gradtrace's trace needs. Against it,
`worker.train.train()` on the spec of the same shapes (depth 2, width 64, 50 time
steps, batch 64), untraced (`trace_every` beyond the run) and with every metric at every
step; only the loops are timed (`train_seconds`). Both sides run in this process under
the worker's allocator settings (worker.allocator.keep_memory), in rounds that alternate
them; each cell of the table is the median ratio over the rounds to the plain loop of
the same round.
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch
from service_vs_plain import plain_seconds  # the same plain loop, with the cell's torch.nn module

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.spec import ExperimentSpec  # noqa: E402
from worker.allocator import keep_memory  # noqa: E402
from worker.train import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_memory()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps} steps, {args.rounds} rounds")
    print("| cell | plain ms/step | gradtrace untraced | gradtrace, every metric at every step |")
    print("|---|---|---|---|", flush=True)
    for cell in args.cells.split(","):
        spec = ExperimentSpec(arch="rnn", cell=cell, depth=2, width=64, seq_len=50, batch_size=64, dataset="adding",
                              lr=1e-3, steps=args.steps)  # fmt: skip
        untraced_spec = spec.model_copy(update={"trace_every": args.steps})
        fields = spec.model_dump()
        plain_seconds(fields | {"steps": 5}), train(spec.model_copy(update={"steps": 5}))  # warm-up
        plain_ms, untraced, traced = [], [], []
        for _ in range(args.rounds):
            plain = plain_seconds(fields)
            untraced.append(train(untraced_spec).train_seconds / plain)
            traced.append(train(spec).train_seconds / plain)
            plain_ms.append(1e3 * plain / args.steps)
        cells = [f"{statistics.median(r):.2f}x [{min(r):.2f}-{max(r):.2f}]" for r in (untraced, traced)]
        print(f"| {cell} | {statistics.median(plain_ms):.2f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
