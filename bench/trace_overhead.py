"""How much slower tracing makes training: traced steps against untraced steps of the same run.

    python bench/trace_overhead.py [--steps 400] [--repeats 3] [--block 10] [--threads N] [--workloads mlp-50x64,...]
    python bench/trace_overhead.py --workloads mlp-20x256-batchnorm,mlp-50x64-batchnorm,mlp-50x64-layernorm,cnn-batchnorm,gru

A run of `train()` alternates blocks of `--block` steps: traced as the variant says,
then untraced. Every step is timed, and the figure is the median, over pairs of
neighbouring blocks, of the traced block's time divided by the untraced one's. Comparing
neighbours within one run cancels the drift in a shared machine's speed, which on a
busy VM is larger than the effect measured. The `untraced` variant alternates nothing
and shows the method's own noise (ideally 1.000x).

Variants: `full` traces every metric at every step; `grad_norm` only the layers'
gradient norms; `every_10th` every metric at every 10th step. Targets: full at most
1.10x, gradient norms alone 1.03x.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.spec import ExperimentSpec  # noqa: E402
from worker import stats, train as train_module  # noqa: E402
from worker.allocator import keep_memory  # noqa: E402
from worker.tracer import Tracer, per_layer  # noqa: E402

# The MLPs train on `random` data with He init (see --init); the CNN on digits, the RNN on the adding problem.
WORKLOADS = {
    "mlp-20x256": {"depth": 20, "width": 256, "batch_size": 128},
    "mlp-50x64": {"depth": 50, "width": 64, "batch_size": 128},
    "cnn": {"arch": "cnn", "depth": 6, "width": 32, "batch_size": 64, "dataset": "digits"},
    "lstm": {"arch": "rnn", "cell": "lstm", "depth": 2, "width": 64, "seq_len": 50, "batch_size": 64, "dataset": "adding"},
}
# The four by default; these on request: norm layers (the MLP's through worker.engine, the CNN's through
# autograd) and GRU cells.
EXTRA = {
    "mlp-20x256-batchnorm": {**WORKLOADS["mlp-20x256"], "norm": "batchnorm"},
    "mlp-50x64-batchnorm": {**WORKLOADS["mlp-50x64"], "norm": "batchnorm"},
    "mlp-50x64-layernorm": {**WORKLOADS["mlp-50x64"], "norm": "layernorm"},
    "cnn-batchnorm": {**WORKLOADS["cnn"], "norm": "batchnorm"},
    "gru": {**WORKLOADS["lstm"], "cell": "gru"},
}
VARIANTS = ("untraced", "full", "grad_norm", "every_10th")
CLOCK = time.perf_counter


class GradNormTracer(Tracer):
    """Traces the layers' gradient norms and nothing else: the cheapest useful trace.

    With the MLP's engine, as the full trace does: each layer's gradient is measured right
    after its backward (one planned kernel call per layer), from the second traced step on,
    where layers are large (most of at least stats.PROBE_MIN_VALUES values: a 256 x 256 weight's
    gradient read back after the whole backward would come from memory). Small ones are
    all summed in one call after backward: on the 50 x 64 MLP, 51 calls cost more than
    reading 51 gradients of 16 KB back from the cache.
    """

    _grad_plan = _grad_programs = _sum_rows = None

    def flush(self):
        rows = len(self._row_steps)
        if self._sum_rows is not None and rows:
            squares = np.apply_along_axis(self._host_weight_groups, 1, self._sum_rows[:rows])
            np.sqrt(squares, out=self._host_rows[:rows, self.layout["grad_norm"]], casting="unsafe")
        return super().flush()

    def recording(self, step):
        self._grad_norms_now = step in self._traced
        if self._grad_norms_now and self._grad_programs is not None:
            return self._fixed  # the engine runs the per-layer programs on this step
        return None

    @torch.no_grad()
    def measure(self, step, loss, logits, targets, recording):
        self._losses.append(loss.detach())
        if not self._grad_norms_now:
            return
        grads = [w.grad for w in self.weights]
        if self._host_rows is not None:
            if self._fixed is not None:  # the engine's gradients stay put: their addresses are read once
                if self._grad_plan is None:
                    self._grad_plan, self._grad_sums = stats.FixedTensors(grads), np.empty(len(grads))
                    large = statistics.median(g.numel() for g in grads) >= stats.PROBE_MIN_VALUES
                    if large and len(self.weights) == self.layers:  # one weight per layer: the MLP's engine runs programs
                        self._grad_programs = [stats.Program() for _ in grads]
                        for i, (program, grad) in enumerate(zip(self._grad_programs, grads)):
                            program.sum_of_squares(grad, self._grad_sums, i)
                        self._fixed.layer_programs = [program.build() for program in self._grad_programs]
                if not (recording is self._fixed and self._fixed.layer_programs_ran):
                    self._grad_plan.sums(self._grad_sums)
                self._fixed.layer_programs_ran = False
                sums = self._grad_sums
            else:
                sums = stats.host_sums(grads)
            # The norms are taken at the flush, every row at once: right after backward a numpy call costs 10-20 us
            # (its code is out of the core's caches), so a traced step only keeps its sums.
            if self._sum_rows is None:
                self._sum_rows = np.empty((len(self._host_rows), len(sums)))
            self._sum_rows[len(self._row_steps)] = sums
        else:
            row = self._rows[len(self._row_steps)]
            row[self.layout["grad_norm"]] = per_layer(stats.norms(grads), self._weight_groups, self.layers)
        self._row_steps.append(step)


def alternating(base: type[Tracer], variant: str, block: int, tracers: list) -> type[Tracer]:
    """A tracer class that traces only every other block of steps, and timestamps every step."""

    class Alternating(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.block, self.stamps = block, []
            on = {s for s in self._traced if (s // block) % 2 == 0}
            self._traced = set() if variant == "untraced" else on
            tracers.append(self)

        def recording(self, step):
            self.stamps.append(CLOCK())
            return super().recording(step)

    return Alternating


def block_ratios(stamps: list[float], block: int) -> list[float]:
    """Time of each even block over the next odd one, from the start time of every step."""
    seconds = [b - a for a, b in zip(stamps, stamps[1:])]
    blocks = [sum(seconds[i : i + block]) for i in range(0, len(seconds) - block + 1, block)]
    return [on / off for on, off in zip(blocks[0::2], blocks[1::2])]


def measure(spec: ExperimentSpec, variant: str, block: int) -> tuple[list[float], float]:
    """Block ratios of one run of the variant, and its untraced ms per step."""
    tracers: list[Tracer] = []
    base = GradNormTracer if variant == "grad_norm" else Tracer
    if variant == "every_10th":
        spec = spec.model_copy(update={"trace_every": 10})
    train_module.Tracer = alternating(base, variant, block, tracers)
    try:
        result = train_module.train(spec, device="cpu" if spec.device == "cpu" else "auto")
    finally:
        train_module.Tracer = Tracer
    if result.steps_run != spec.steps:
        raise SystemExit(f"the {variant} run stopped at step {result.steps_run}, diverged {result.diverged_step}")
    stamps = tracers[0].stamps
    seconds = [b - a for a, b in zip(stamps, stamps[1:])]
    off = [s for i, s in enumerate(seconds) if (i // block) % 2 == 1]
    return block_ratios(stamps, block), 1e3 * statistics.median(off)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--activation", default="relu")
    # He init keeps a deep ReLU net's values in float32's normal range; PyTorch's default
    # init shrinks them ~6x per layer, and at depth 50 denormal arithmetic (slow on CPUs)
    # would dominate both the traced and the untraced steps.
    parser.add_argument("--init", default="kaiming_normal")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall",
                        help="thread: the main thread's CPU time (with --threads 1, steadier on a busy machine)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="comma-separated, of: " + ", ".join([*WORKLOADS, *EXTRA]))
    args = parser.parse_args()
    known = WORKLOADS | EXTRA
    unknown = set(args.workloads.split(",")) - set(known)
    if unknown:
        parser.error(f"--workloads: unknown {', '.join(sorted(unknown))}")
    global CLOCK
    CLOCK = time.thread_time if args.clock == "thread" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_memory()  # as a worker process does
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}; {args.steps} steps in blocks of {args.block}")

    for config in (known[name] for name in args.workloads.split(",")):
        spec = ExperimentSpec(
            **{"dataset": "random", **config}, steps=args.steps, activation=args.activation, init=args.init, lr=args.lr
        )
        measure(spec, "full", args.block)  # warm-up: allocator, first touch of memory
        figures = []
        for variant in VARIANTS:
            ratios, untraced_ms = [], []
            for _ in range(args.repeats):
                r, ms = measure(spec, variant, args.block)
                ratios += r
                untraced_ms.append(ms)
            quartiles = statistics.quantiles(ratios, n=4)
            figures.append(f"{variant} {statistics.median(ratios):.3f}x [{quartiles[0]:.2f}-{quartiles[2]:.2f}]")
        arch = config.get("arch", "mlp") + (f" {config['cell']} seq {config['seq_len']}" if "cell" in config else "")
        arch += f" {config['norm']}" if "norm" in config else ""
        print(
            f"{arch} depth {config['depth']:3d} width {config['width']:4d} batch {config['batch_size']}, "
            f"untraced {statistics.median(untraced_ms):.2f} ms/step: " + ", ".join(figures),
            flush=True,
        )


if __name__ == "__main__":
    main()
