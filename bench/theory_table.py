"""Predicted vs measured step-0 depth profiles, activation x init, with the deviation.

    .venv/bin/python bench/theory_table.py [--depth 20] [--width 256] [--seeds 1] [--init-std 0.05]

Each cell trains one step (`steps: 1`, `dataset: random`) through worker.train and reads
row 0 of the trace: log10 act_grad_norm and grad_norm of the first hidden layer relative
to the last, predicted (shared.theory) beside measured, and the deviation over all hidden
layers (RMS and largest |predicted - measured| in log10). Prints a Markdown table.
"""

import argparse
import time

import numpy as np

from shared.spec import ExperimentSpec
from shared.theory import ACTIVATIONS, compare

INITS = (
    "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "lecun_normal",
    "orthogonal", "normal",
)


def cell(spec: ExperimentSpec) -> dict:
    from worker.train import train

    return compare(spec, train(spec).trace)


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=1, help="runs per cell; deviations are averaged")
    parser.add_argument("--init-std", type=float, default=0.05, help="std of init 'normal'")
    args = parser.parse_args()

    started = time.perf_counter()
    print(f"depth {args.depth}, width {args.width}, batch 64, dataset random, step 0, "
          f"init normal with std {args.init_std}, {args.seeds} seed(s) per cell\n")
    print("| activation | init | regime | chi* | act_grad first/last: predicted | measured | deviation rms / max "
          "| grad first/last: predicted | measured | deviation rms / max |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    every = {"act_grad_log10": [], "grad_log10": []}
    for activation in ACTIVATIONS:
        for init in INITS:
            results = [
                cell(ExperimentSpec(depth=args.depth, width=args.width, activation=activation, init=init,
                                    init_std=args.init_std, dataset="random", steps=1, seed=seed))
                for seed in range(args.seeds)
            ]
            row = [activation, init, results[0]["regime"], f"{results[0]['chi_star']:.3g}"]
            for metric in ("act_grad_log10", "grad_log10"):
                first = results[0]["layers"][0]
                measured = [r["layers"][0][f"measured_{metric}"] for r in results]
                measured = [m for m in measured if m is not None]
                rms = [r["deviation"][metric]["rms"] for r in results if r["deviation"][metric]["rms"] is not None]
                top = [r["deviation"][metric]["max"] for r in results if r["deviation"][metric]["max"] is not None]
                every[metric] += rms
                row += [
                    fmt(first[metric]),
                    fmt(float(np.mean(measured)) if measured else None),
                    f"{fmt(float(np.mean(rms)) if rms else None)} / {fmt(float(np.mean(top)) if top else None)}",
                ]
            print("| " + " | ".join(row) + " |")
    for metric, values in every.items():
        values = np.array(values)
        print(f"\n{metric}: deviation RMS over all cells: median {np.median(values):.3f}, "
              f"90th percentile {np.percentile(values, 90):.3f}, largest {values.max():.3f}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
