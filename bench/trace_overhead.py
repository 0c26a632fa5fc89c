"""How much slower tracing makes training: trace=True against trace=False, interleaved in one process.

    python bench/trace_overhead.py [--steps 200] [--repeats 5] [--threads N] [--device auto]

Each repetition runs every variant once, in turn, so that drift in the machine's
speed (turbo, other load) hits all of them alike; the figure is the median over
repetitions of each variant's training time divided by the untraced run's of the
same repetition. Targets: full tracing at most 1.10x, gradient norms alone 1.03x.
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.spec import ExperimentSpec  # noqa: E402
from worker import stats, train as train_module  # noqa: E402
from worker.tracer import Tracer  # noqa: E402

CONFIGS = [
    {"depth": 20, "width": 256, "batch_size": 128},
    {"depth": 50, "width": 64, "batch_size": 128},
]


class GradNormTracer(Tracer):
    """Traces the layers' gradient norms and nothing else: the cheapest useful trace."""

    def recording(self, step):
        self._grad_norms_now = step in self._traced
        return None

    @torch.no_grad()
    def measure(self, step, loss, logits, targets, recording):
        self._losses.append(loss.detach())
        if self._grad_norms_now:
            row = self._rows[len(self._row_steps)]
            row[self.layout["grad_norm"]] = stats.norms([w.grad for w in self.weights])
            self._row_steps.append(step)


def run(spec: ExperimentSpec, variant: str, device: str) -> float:
    """Training seconds of one run of the spec, traced as the variant says."""
    train_module.Tracer = GradNormTracer if variant == "grad_norm" else Tracer
    try:
        result = train_module.train(spec, device=device, trace=variant != "off")
    finally:
        train_module.Tracer = Tracer
    if result.steps_run != spec.steps:
        raise SystemExit(f"the {variant} run stopped at step {result.steps_run} (diverged: {result.diverged_step})")
    return result.train_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--activation", default="relu")
    # He init keeps a deep ReLU net's values in float32's normal range; PyTorch's default
    # init shrinks them ~6x per layer, and at depth 50 denormal arithmetic (slow on CPUs)
    # would dominate both the traced and the untraced run.
    parser.add_argument("--init", default="kaiming_normal")
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    variants = ("off", "full", "grad_norm")
    for config in CONFIGS:
        spec = ExperimentSpec(
            **config,
            steps=args.steps,
            dataset="random",
            activation=args.activation,
            init=args.init,
            lr=args.lr,
        )
        run(spec, "full", args.device)  # warm-up: allocator, kernels, first-touch of memory
        seconds: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.repeats):
            for variant in variants:
                seconds[variant].append(run(spec, variant, args.device))
        base = statistics.median(seconds["off"])
        ratios = {
            v: statistics.median(s / off for s, off in zip(seconds[v], seconds["off"])) for v in variants[1:]
        }
        print(
            f"depth {config['depth']:3d} width {config['width']:4d} batch {config['batch_size']} "
            f"{args.activation}: untraced {1e3 * base / args.steps:.2f} ms/step, "
            + ", ".join(f"{v} {r:.3f}x" for v, r in ratios.items()),
            flush=True,
        )


if __name__ == "__main__":
    main()
