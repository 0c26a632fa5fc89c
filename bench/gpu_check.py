"""The GPU checks of a worker node, in one short run: what a GPU machine must show before it serves `device: cuda`.

    python bench/gpu_check.py [--steps 300] [--repeats 3]

On a machine with a CUDA GPU and the CUDA build of torch (`make install TORCH=torch`):
1. parent: what `gradtrace worker --queues gpu` imports before it forks leaves CUDA
   uninitialized, and the node counts its GPUs without initializing it;
2. no per-step sync: a traced run under `torch.cuda.set_sync_debug_mode("error")`, with its
   intended sync points let through (the tracer's flush, the final evaluation, and the upload
   of a block of many steps' batch indices), raises on any other host-device sync;
3. CPU and GPU traces of the same specs agree within float tolerance (cuDNN's TF32 off);
4. the tracing cost on the GPU: traced against untraced runs of the same spec, interleaved,
   as the median ratio of train_seconds, per workload.
Prints one line per check and a table; exits non-zero if a check fails. Nothing here runs in
the test suite: a CPU-only machine has nothing to check (it says so and exits 0).
"""

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORKLOADS = [
    {"depth": 20, "width": 256, "batch_size": 128, "dataset": "random", "init": "kaiming_normal", "lr": 1e-3},
    {"depth": 50, "width": 64, "batch_size": 128, "dataset": "random", "init": "kaiming_normal", "lr": 1e-3},
    {"arch": "cnn", "depth": 6, "width": 32, "batch_size": 64},
    {"arch": "rnn", "cell": "lstm", "depth": 2, "width": 64, "seq_len": 50, "batch_size": 64},
]


def check_parent() -> None:
    import torch

    import worker.tasks  # noqa: F401  (what the worker's parent imports before the pool forks)
    from worker.main import default_concurrency

    gpus = default_concurrency(["gpu"])
    assert not torch.cuda.is_initialized(), "importing the worker initialized CUDA in the parent"
    assert gpus == torch.cuda.device_count(), f"the node counts {gpus} GPUs, torch {torch.cuda.device_count()}"
    print(f"parent: CUDA not initialized by the worker's imports; {gpus} GPU(s) counted without it")


def check_no_sync(steps: int) -> None:
    import torch

    from shared.spec import ExperimentSpec
    from worker import train as train_module
    from worker.datasets import Batches

    def allowed(function):
        def call(*args, **kwargs):
            torch.cuda.set_sync_debug_mode(0)
            try:
                return function(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("error")

        return call

    tracer_flush, evaluate, draw = train_module.Tracer.flush, train_module.evaluate, Batches._draw_block
    train_module.Tracer.flush, train_module.evaluate = allowed(tracer_flush), allowed(evaluate)
    Batches._draw_block = allowed(draw)
    try:
        for config in WORKLOADS:
            spec = ExperimentSpec(**config, steps=steps, device="cuda")
            train_module.train(spec, trace=False)  # warm-up: cuDNN's and cuBLAS's first calls may sync
            torch.cuda.set_sync_debug_mode("error")
            try:
                result = train_module.train(spec, flush_seconds=3600)
            finally:
                torch.cuda.set_sync_debug_mode(0)
            assert result.steps_run == steps, result
            print(f"no sync: {describe(config)}, {steps} traced steps, syncs only at flush and evaluation")
    finally:
        train_module.Tracer.flush, train_module.evaluate = tracer_flush, evaluate
        Batches._draw_block = draw


def check_agreement(steps: int) -> None:
    import numpy as np
    import torch

    from shared.spec import ExperimentSpec
    from worker.train import train

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    for config in WORKLOADS:
        spec = ExperimentSpec(**{**config, "steps": min(steps, 20)})
        cpu = train(spec, device="cpu").trace
        gpu = train(spec.model_copy(update={"device": "cuda"})).trace
        worst = 0.0
        for name, values in cpu.items():
            if values.dtype.kind == "f":
                np.testing.assert_allclose(gpu[name], values, rtol=2e-3, atol=1e-6, err_msg=f"{describe(config)}: {name}")
                finite = np.isfinite(values) & (np.abs(values) > 1e-6)
                if finite.any():
                    worst = max(worst, float(np.max(np.abs(gpu[name][finite] / values[finite] - 1))))
            else:
                np.testing.assert_array_equal(gpu[name], values, err_msg=f"{describe(config)}: {name}")
        print(f"agree: {describe(config)}, CPU and GPU traces within rtol 2e-3 (largest relative gap {worst:.1e})")


def tracing_cost(steps: int, repeats: int) -> None:
    from shared.spec import ExperimentSpec
    from worker.train import train

    print(f"\n| workload | untraced ms/step | full tracing | grad norms only (trace_every 10) |\n| --- | --- | --- | --- |")
    for config in WORKLOADS:
        spec = ExperimentSpec(**config, steps=steps, device="cuda")
        train(spec, trace=False)  # warm-up
        ratios, sparse, untraced = [], [], []
        for _ in range(repeats):
            off = train(spec, trace=False).train_seconds
            on = train(spec).train_seconds
            every_10th = train(spec.model_copy(update={"trace_every": 10})).train_seconds
            ratios.append(on / off)
            sparse.append(every_10th / off)
            untraced.append(off)
        print(f"| {describe(config)} | {1e3 * statistics.median(untraced) / steps:.2f} | "
              f"{statistics.median(ratios):.3f}x | {statistics.median(sparse):.3f}x |")


def describe(config: dict) -> str:
    arch = config.get("arch", "mlp")
    extra = f" {config['cell']} seq {config['seq_len']}" if arch == "rnn" else ""
    return f"{arch}{extra} depth {config['depth']} width {config['width']} batch {config['batch_size']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():  # asks the driver; initializes no CUDA context
        print("no CUDA GPU here: nothing to check")
        return
    check_parent()  # before anything here initializes CUDA
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    check_no_sync(min(args.steps, 100))
    check_agreement(args.steps)
    tracing_cost(args.steps, args.repeats)


if __name__ == "__main__":
    main()
