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
# Per traced step and time step (arch rnn): arrays of shape (rows, time steps), first time step
# first. Other archs have no time axis: (rows, 0), stored as no bytes and left out at the API.
TIME_METRICS = ("time_grad_norm",)

# Little-endian on the wire and in Redis, whatever the host.
DTYPES: dict[str, np.dtype] = {
    "step": np.dtype("<i4"),
    "clipped": np.dtype("u1"),
    **{name: np.dtype("<f4") for name in LAYER_METRICS + STEP_METRICS + TIME_METRICS if name != "clipped"},
}
ALL_METRICS = ("step",) + STEP_METRICS + LAYER_METRICS + TIME_METRICS


@dataclass
class TraceChunk:
    """Consecutive traced rows: `step` (rows,), step metrics (rows,), layer metrics (rows, layers),
    time metrics (rows, time steps)."""

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


def time_steps(spec: dict) -> int:
    """The second dimension of a stored spec's time metrics: its seq_len for arch rnn, else 0."""
    return int(spec.get("seq_len", 0)) if spec.get("arch") == "rnn" else 0


def from_bytes(name: str, blob: bytes, layers: int, steps_in_time: int = 0) -> np.ndarray:
    """The array of one metric from its stored bytes: (rows,), (rows, layers) or (rows, steps_in_time)."""
    array = np.frombuffer(blob, dtype=DTYPES[name])
    columns = layers if name in LAYER_METRICS else steps_in_time if name in TIME_METRICS else None
    if columns is None:
        return array
    if not columns:  # none recorded yet (a queued run), or no time axis: numpy cannot reshape to width 0 with -1
        return array[:0].reshape(0, 0)
    usable = len(array) - len(array) % columns
    return array[:usable].reshape(-1, columns)
