"""What gradtrace's full trace costs next to the gradient logging people use today, on the same loop.

    .venv/bin/pip install -e '.[bench]'   # tensorboard and wandb, which only this benchmark needs
    flock /tmp/gradtrace-cpu.lock .venv/bin/python bench/trace_tools.py \
        [--steps 200] [--repeats 5] [--threads N] [--workload mlp20|mlp50|cnn|lstm ...] [--columns a,b,...]

Every figure is a training loop's time per step against a plain, idiomatic, untraced
PyTorch loop (1.00x) on the same model, data and batches, in the same process:

- gradtrace untraced: `worker.train.train(spec, trace=False)`, gradtrace's own loop;
- gradtrace full: `train(spec, trace=True)`, every metric of API.md at every step;
- gradtrace full, autograd: the same through autograd, without worker.engine's hand-written
  pass of the MLP and the CNN (only with `--columns`: it shows what the engine saves);
- grad.norm().item(): the plain loop plus `p.grad.norm().item()` of every parameter each step;
- TensorBoard histograms: the plain loop plus `SummaryWriter.add_histogram` of every parameter's gradient each step;
- wandb.watch: the plain loop under `wandb.watch(model, log="gradients", log_freq=1)`, offline,
  with `wandb.log` of the loss each step (which commits the histograms); skipped where wandb
  does not import or start offline.

Only the loop is timed (as gradtrace's `train_seconds`): building the model, loading the
data, opening a writer or a wandb run and closing it are not. The variants run in rounds,
one full run of each per round (ABCDEF ABCDEF ...), after one short warm-up round; each
variant's ratio is taken against the plain loop of the same round, and the table gives the
median ratio over the rounds and, in brackets, the lowest and highest.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.spec import ExperimentSpec  # noqa: E402
from worker.allocator import keep_memory  # noqa: E402
from worker.datasets import Batches, load_dataset  # noqa: E402
from worker.models import build_model  # noqa: E402
from worker.train import train  # noqa: E402

COMMON = {"init": "kaiming_normal", "lr": 1e-3, "activation": "relu"}
# name: (the table's label, the spec's fields)
WORKLOADS = {
    "mlp20": ("MLP 20x256, batch 128", {"depth": 20, "width": 256, "batch_size": 128, "dataset": "random"}),
    "mlp50": ("MLP 50x64, batch 128", {"depth": 50, "width": 64, "batch_size": 128, "dataset": "random"}),
    "cnn": ("CNN 6x32, batch 64, digits",
            {"arch": "cnn", "depth": 6, "width": 32, "batch_size": 64, "dataset": "digits"}),
    "lstm": ("LSTM 2x64, T 50, batch 64, adding",
             {"arch": "rnn", "cell": "lstm", "depth": 2, "width": 64, "seq_len": 50, "batch_size": 64,
              "dataset": "adding"}),
}
COLUMNS = {
    "gradtrace_off": "gradtrace untraced",
    "gradtrace_full": "gradtrace full",
    "gradtrace_autograd": "gradtrace full, autograd",
    "norm_item": "grad.norm().item()",
    "tensorboard": "TensorBoard histograms",
    "wandb": "wandb.watch",
}


def plain_loop(spec: ExperimentSpec, tool) -> float:
    """ms per step of an idiomatic PyTorch loop on gradtrace's model, data and batches; `tool(model)` is a
    context manager that yields what to call after each backward (None: nothing to call)."""
    data = load_dataset(spec, "cpu")
    batches = Batches(len(data), spec.batch_size, spec.seed, "cpu")
    model = build_model(spec)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr)
    with tool(model) as observe:
        started = time.perf_counter()
        for step in range(spec.steps):
            index = batches.indices(step)
            x, y = data.x[index], data.y[index]
            optimizer.zero_grad(set_to_none=True)
            outputs = model(x)
            if spec.is_regression():
                loss = F.mse_loss(outputs.squeeze(-1), y)
            else:
                loss = F.cross_entropy(outputs, y)
            loss.backward()
            if observe is not None:
                observe(step, model, loss)
            optimizer.step()
        seconds = time.perf_counter() - started
    return 1e3 * seconds / spec.steps


@contextmanager
def nothing(model):
    """The baseline: nothing watches the gradients."""
    yield None


@contextmanager
def norm_item(model):
    """The hand-written monitor: one norm per parameter, each read back to Python."""
    norms: dict[str, list[float]] = {name: [] for name, _ in model.named_parameters()}

    def observe(step, model, loss):
        for name, p in model.named_parameters():
            norms[name].append(p.grad.norm().item())

    yield observe


@contextmanager
def tensorboard(model):
    """TensorBoard's usual gradient view: a histogram of every parameter's gradient, every step."""
    from torch.utils.tensorboard import SummaryWriter

    with tempfile.TemporaryDirectory(prefix="gradtrace-bench-tb-") as directory:
        writer = SummaryWriter(directory)

        def observe(step, model, loss):
            for name, p in model.named_parameters():
                writer.add_histogram(f"grad/{name}", p.grad, step)

        try:
            yield observe
        finally:
            writer.close()


@contextmanager
def wandb_watch(model):
    """A wandb run of its own (offline) watching the model's gradients at every step.

    A run per loop, so that wandb's background work (its system metrics included) stops
    with the loop and does not reach the other columns' timings.
    """
    import wandb

    run = wandb.init(project="gradtrace-bench", mode="offline", dir=os.environ["WANDB_DIR"])
    try:
        run.watch(model, log="gradients", log_freq=1)

        def observe(step, model, loss):
            run.log({"loss": loss.item()})

        yield observe
        run.unwatch(model)
    finally:
        run.finish()


def wandb_works() -> bool:
    """Whether wandb imports and starts a run offline here; says why not if it does not."""
    try:
        with wandb_watch(torch.nn.Linear(1, 1)):
            return True
    except Exception as error:  # an import error, or a failure to start wandb's service
        print(f"wandb.watch skipped: {type(error).__name__}: {error}", flush=True)
        return False


def tensorboard_works() -> bool:
    """Whether torch.utils.tensorboard imports (it needs the tensorboard package)."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError as error:
        print(f"TensorBoard skipped: {error}", flush=True)
        return False
    return True


def gradtrace(spec: ExperimentSpec, trace: bool, engine: bool = True) -> float:
    """ms per step of gradtrace's own loop, from the run's train_seconds."""
    result = train(spec, device="cpu", trace=trace, engine=engine)
    if result.steps_run != spec.steps:
        raise SystemExit(f"gradtrace stopped at step {result.steps_run} (diverged at {result.diverged_step})")
    return 1e3 * result.train_seconds / result.steps_run


def variants(columns: list[str]) -> dict:
    """Each measured loop, the baseline first: a function of the spec that returns ms per step."""
    tools = {"norm_item": norm_item, "tensorboard": tensorboard, "wandb": wandb_watch}
    chosen = {"plain": lambda spec: plain_loop(spec, nothing)}
    for column in columns:
        if column.startswith("gradtrace"):
            chosen[column] = lambda spec, trace=column != "gradtrace_off", engine=column != "gradtrace_autograd": (
                gradtrace(spec, trace, engine)
            )
        else:
            chosen[column] = lambda spec, tool=tools[column]: plain_loop(spec, tool)
    return chosen


def measure(spec: ExperimentSpec, loops: dict, repeats: int) -> tuple[float, dict[str, list[float]]]:
    """The plain loop's median ms per step, and every other loop's ratios to it, one per round."""
    short = spec.model_copy(update={"steps": min(spec.steps, 10)})
    for loop in loops.values():
        loop(short)  # warm-up: lazy imports, the allocator's first touch of memory
    plain_ms, ratios = [], {name: [] for name in loops if name != "plain"}
    for _ in range(repeats):
        ms = {name: loop(spec) for name, loop in loops.items()}
        plain_ms.append(ms["plain"])
        for name in ratios:
            ratios[name].append(ms[name] / ms["plain"])
    return statistics.median(plain_ms), ratios


def cell(ratios: list[float] | None) -> str:
    """A table cell: the median ratio, then the lowest and highest round's."""
    if ratios is None:
        return "skipped"
    return f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--workload", choices=WORKLOADS, action="append", help="repeat for several (default: all)")
    parser.add_argument("--columns", help="comma-separated, of: " + ", ".join(COLUMNS)
                        + " (default: all but gradtrace_autograd)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_memory()  # as a worker process does
    scratch = tempfile.TemporaryDirectory(prefix="gradtrace-bench-wandb-")
    os.environ.update({"WANDB_MODE": "offline", "WANDB_DIR": scratch.name, "WANDB_SILENT": "true"})

    wanted = args.columns.split(",") if args.columns else [c for c in COLUMNS if c != "gradtrace_autograd"]
    unknown = set(wanted) - set(COLUMNS)
    if unknown:
        parser.error(f"--columns: unknown {', '.join(sorted(unknown))}")
    columns = [c for c in wanted if (c != "tensorboard" or tensorboard_works()) and (c != "wandb" or wandb_works())]
    loops = variants(columns)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu; "
          f"{args.steps} steps per run, {args.repeats} rounds; ratio to the plain untraced loop, "
          "median [lowest-highest] over the rounds", flush=True)
    print("| workload | untraced ms/step | " + " | ".join(COLUMNS[c] for c in wanted) + " |")
    print("|---" * (len(wanted) + 2) + "|", flush=True)
    for name in args.workload or WORKLOADS:
        label, fields = WORKLOADS[name]
        spec = ExperimentSpec(**COMMON, **fields, steps=args.steps)
        plain_ms, ratios = measure(spec, loops, args.repeats)
        cells = [cell(ratios.get(column)) for column in wanted]  # "skipped" where a tool would not start
        print(f"| {label} | {plain_ms:.2f} | " + " | ".join(cells) + " |", flush=True)
    scratch.cleanup()


if __name__ == "__main__":
    main()
