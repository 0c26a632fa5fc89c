"""The service's training time with full tracing against a plain PyTorch loop of one's own, untraced.

    gradtrace serve &                                  # or any running service
    .venv/bin/python bench/service_vs_plain.py [--url http://127.0.0.1:8000] [--rounds 3] [--steps 200] \
        [--workloads mlp20,mlp50,cnn,lstm] [--token T]

What a user would check: submit a spec with every metric traced at every step
(`trace_every: 1`, `cache: false`), read `summary.train_seconds`, and compare it with
the loop one would write without gradtrace: torch.nn modules (`nn.Sequential` of
Linear or Conv2d and ReLU, the recurrent cell's module), Kaiming init, plain `torch.optim.SGD`,
`zero_grad` / forward / backward / step on a batch of the same shape, timed the same way
(the loop only). The two take turns, one whole run each per round, and the figure is the
median over the rounds of service / plain, with the lowest and highest. The plain loop
runs in this process with torch's default threads, unless `--threads`; compare with the
worker's (`gradtrace workers` shows them: `gradtrace serve` gives its one process all
cores). It runs under the allocator settings a worker process uses
(worker.allocator.keep_memory): with glibc's defaults, a fresh process's loop maps and
unmaps its larger buffers on every step, and nn.LSTM's ran 1.4-1.8x slower here than the
same loop after that setting (or after any large buffer had been freed, which raises
glibc's threshold by itself). `--glibc-defaults` measures the plain loop without it.
Also printed: the service with `trace_every` beyond the run (two traced steps), against
the same plain loop: how gradtrace's own loop compares before any tracing.
"""

import argparse
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.spec import ExperimentSpec  # noqa: E402
from worker.allocator import keep_memory  # noqa: E402

COMMON = {"activation": "relu", "init": "kaiming_normal", "lr": 1e-3, "optimizer": "sgd", "trace_every": 1}
WORKLOADS = {
    "mlp20": {"depth": 20, "width": 256, "batch_size": 128, "dataset": "random"},
    "mlp50": {"depth": 50, "width": 64, "batch_size": 128, "dataset": "random"},
    "cnn": {"arch": "cnn", "depth": 6, "width": 32, "batch_size": 64, "dataset": "digits"},
    "lstm": {"arch": "rnn", "cell": "lstm", "depth": 2, "width": 64, "seq_len": 50, "batch_size": 64,
             "dataset": "adding"},
}


class Client:
    def __init__(self, url: str, token: str | None):
        self.url, self.token = url.rstrip("/"), token

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    def train_seconds(self, spec: dict) -> float:
        """Submit, wait, and return the run's `train_seconds`."""
        experiment = self.call("POST", "/api/v1/experiments", spec | {"cache": False})
        while experiment["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(0.5)  # every poll is work for the API and Redis, on the cores the run trains on
            experiment = self.call("GET", f"/api/v1/experiments/{experiment['id']}")
        if experiment["status"] != "succeeded":
            raise SystemExit(f"the service's run ended {experiment['status']}: {experiment.get('error')}")
        return experiment["summary"]["train_seconds"]


# The torch.nn module of each recurrent cell: nn.LSTM runs oneDNN's fused LSTM on a CPU, nn.RNN and nn.GRU ATen's
# C++ loop over time.
RECURRENT = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentNet(nn.Module):
    """The cell's torch.nn module over the sequence, then a Linear on the last hidden state."""

    def __init__(self, cell: str, inputs: int, width: int, depth: int, outputs: int):
        super().__init__()
        self.recurrent = RECURRENT[cell](inputs, width, depth, batch_first=True)
        self.out = nn.Linear(width, outputs)

    def forward(self, x):
        return self.out(self.recurrent(x)[0][:, -1])


def plain_seconds(fields: dict) -> float:
    """The loop one would write without gradtrace, on a batch of the spec's shapes: seconds for its steps."""
    spec = ExperimentSpec(**fields)
    inputs, outputs = spec.dims()
    batch = spec.batch_size
    if spec.arch == "rnn":
        model = RecurrentNet(spec.cell, inputs, spec.width, spec.depth, outputs)
        x = torch.randn(batch, spec.seq_len, inputs)
    else:
        conv = spec.arch == "cnn"
        layers = []
        for i in range(spec.depth):
            width_in = inputs if i == 0 else spec.width
            layers += [nn.Conv2d(width_in, spec.width, 3, padding=1) if conv else nn.Linear(width_in, spec.width), nn.ReLU()]
        pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten()] if conv else []
        model = nn.Sequential(*layers, *pool, nn.Linear(spec.width, outputs))
        x = torch.randn(batch, inputs, 8, 8) if conv else torch.randn(batch, inputs)
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    regression = outputs == 1
    y = torch.randn(batch) if regression else torch.randint(0, outputs, (batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr)
    started = time.perf_counter()
    for _ in range(spec.steps):
        optimizer.zero_grad()
        out = model(x)
        loss = F.mse_loss(out.squeeze(-1), y) if regression else F.cross_entropy(out, y)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--token")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the plain loop (0: torch's default)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--glibc-defaults", action="store_true",
                        help="the plain loop under glibc's default malloc thresholds (a fresh process's)")
    args = parser.parse_args()
    if not args.glibc_defaults:
        keep_memory()  # as the worker's pool processes do
    if args.threads:
        torch.set_num_threads(args.threads)
    client = Client(args.url, args.token)
    workers = client.call("GET", "/api/v1/workers")["workers"]
    allocator = "glibc's default thresholds" if args.glibc_defaults else "the worker's allocator settings"
    print(f"plain loop: torch {torch.__version__}, {torch.get_num_threads()} threads, {allocator}; service workers: "
          + ", ".join(f"{w['concurrency']} x {w['torch_threads']} threads" for w in workers)
          + f"; {args.steps} steps, {args.rounds} rounds", flush=True)
    print("| workload | plain ms/step | service, every metric at every step | service, 2 traced steps |")
    print("|---|---|---|---|", flush=True)
    for name in args.workloads.split(","):
        fields = COMMON | WORKLOADS[name] | {"steps": args.steps}
        warm = fields | {"steps": 10}
        plain_seconds(warm), client.train_seconds(warm)  # lazy imports and first touches, on both sides
        traced, untraced, plain_ms = [], [], []
        for _ in range(args.rounds):
            plain = plain_seconds(fields)
            traced.append(client.train_seconds(fields) / plain)
            untraced.append(client.train_seconds(fields | {"trace_every": args.steps}) / plain)
            plain_ms.append(1e3 * plain / args.steps)
        cells = [f"{statistics.median(r):.2f}x [{min(r):.2f}-{max(r):.2f}]" for r in (traced, untraced)]
        print(f"| {name} | {statistics.median(plain_ms):.2f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
