"""The trace layout: which metrics exist, their dtypes, and one chunk of rows.

Both sides agree on this: the worker produces `TraceChunk`s, the store appends
their raw little-endian bytes to one Redis string per metric, and the API turns
those bytes back into arrays.
"""

from dataclasses import dataclass

import numpy as np

# Per layer and per traced step: arrays of shape (rows, layers), float32.
LAYER_METRICS = (
    "grad_norm",
    "weight_norm",
    "update_ratio",
    "act_mean",
    "act_std",
    "act_grad_norm",
    "dead_fraction",
    "saturated_fraction",
)
# Per traced step: arrays of shape (rows,).
STEP_METRICS = ("loss", "accuracy", "total_grad_norm", "clipped")

# Little-endian on the wire and in Redis, whatever the host.
DTYPES: dict[str, np.dtype] = {
    "step": np.dtype("<i4"),
    "clipped": np.dtype("u1"),
    **{name: np.dtype("<f4") for name in LAYER_METRICS + STEP_METRICS if name != "clipped"},
}
ALL_METRICS = ("step",) + STEP_METRICS + LAYER_METRICS


@dataclass
class TraceChunk:
    """Consecutive traced rows: `step` (rows,), step metrics (rows,), layer metrics (rows, layers)."""

    arrays: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(self.arrays["step"])

    def to_bytes(self) -> dict[str, bytes]:
        """Each metric as the raw bytes that the store appends."""
        return {
            name: np.ascontiguousarray(array, dtype=DTYPES[name]).tobytes()
            for name, array in self.arrays.items()
        }


def from_bytes(name: str, blob: bytes, layers: int) -> np.ndarray:
    """The array of one metric from its stored bytes: (rows,) or (rows, layers)."""
    array = np.frombuffer(blob, dtype=DTYPES[name])
    if name in LAYER_METRICS:
        if not layers:  # none recorded yet (a queued run): numpy cannot reshape to width 0 with -1
            return array[:0].reshape(0, 0)
        usable = len(array) - len(array) % layers
        return array[:usable].reshape(-1, layers)
    return array
