"""Seconds and bytes of a 1,000,000-value trace as the API renders it: JSON, npz, csv.

Run: .venv/bin/python -m bench.trace_formats  (no Redis needed: the renderers alone)
"""

import time

import numpy as np
from flask import Flask

from api.trace_formats import RENDERERS
from shared.traces import LAYER_METRICS, STEP_METRICS

ROWS, LAYERS = 1000, 125
VALUES = ROWS * LAYERS * len(LAYER_METRICS)  # 1,000,000


def trace() -> tuple[list[dict], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    arrays = {"step": np.arange(ROWS, dtype=np.int32)}
    arrays |= {name: rng.random(ROWS, dtype=np.float32) for name in STEP_METRICS}
    arrays["clipped"] = (arrays["clipped"] > 0.5).astype(np.uint8)
    arrays |= {name: rng.standard_normal((ROWS, LAYERS), dtype=np.float32) for name in LAYER_METRICS}
    arrays["dead_fraction"][:, -1] = np.nan
    return [{"name": f"hidden.{i}", "kind": "linear"} for i in range(LAYERS)], arrays


def main() -> None:
    layers, arrays = trace()
    with Flask(__name__).test_request_context():
        for name, render in RENDERERS.items():
            started = time.perf_counter()
            body = render("bench", layers, arrays).get_data()
            seconds = time.perf_counter() - started
            print(f"{name:5} {seconds:6.3f} s  {len(body) / 1e6:6.1f} MB  {seconds * 1e6 / VALUES:5.2f} us/value")


if __name__ == "__main__":
    main()
