"""The trace layout: which metrics exist, their dtypes, and one chunk of rows.

Both sides agree on this: the worker produces `TraceChunk`s, the store appends
their raw little-endian bytes to one Redis string per metric, and the API turns
those bytes back into arrays. A finished run's trace is stored encoded (`encode`).
"""

import struct
import zlib
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


# In an encoded metric's header: this byte plane is deflated (else it is stored as it is).
DEFLATED = 1 << 31
# Fewer values than this are stored as they are: a header and deflate's own bytes leave them little to save, and
# trying costs 15-20 us a metric, a tenth of a tiny experiment's finish (bench/dispatch.py).
ENCODE_MIN_VALUES = 32


def encode(name: str, raw: bytes) -> bytes | None:
    """A metric's bytes as a finished run stores them: regrouped by byte position, each group deflated
    where that saves a tenth or more. None where the whole saves nothing (noise, a few bytes).

    The high bytes of a float32 series (sign and exponent) change little from value to value, so
    together they deflate to almost nothing, while the low bytes of the mantissa are close to noise
    and stay as they are (deflating them would only cost time to read back). A real trace takes
    1.1-2.9 bytes a value, not 4 (bench/redis_bytes.py). Layout: one uint32 per byte position, the
    length of its group (with DEFLATED where deflated), then the groups. None below
    ENCODE_MIN_VALUES values.
    """
    size = DTYPES[name].itemsize
    if len(raw) % size or len(raw) < ENCODE_MIN_VALUES * size:
        return None
    header, groups = [], []
    for plane in np.frombuffer(raw, np.uint8).reshape(-1, size).T:
        plane = plane.tobytes()
        deflated = zlib.compress(plane, 6)
        keep = len(deflated) < 0.9 * len(plane)
        groups.append(deflated if keep else plane)
        header.append(len(groups[-1]) | (DEFLATED if keep else 0))
    encoded = struct.pack(f"<{size}I", *header) + b"".join(groups)
    return encoded if len(encoded) < len(raw) else None


def decode(name: str, blob: bytes) -> np.ndarray:
    """The flat array of one metric from its `encode`d bytes."""
    size = DTYPES[name].itemsize
    offset, planes, view = 4 * size, [], memoryview(blob)
    for length in struct.unpack_from(f"<{size}I", blob):
        stored = length % DEFLATED
        group = view[offset : offset + stored]
        planes.append(zlib.decompress(group) if length & DEFLATED else group)
        offset += stored
    values = np.empty((len(planes[0]), size), np.uint8)
    for k, plane in enumerate(planes):
        values[:, k] = np.frombuffer(plane, np.uint8)
    return values.view(DTYPES[name]).ravel()


def from_bytes(name: str, blob: bytes, layers: int, steps_in_time: int = 0, *, encoded: bool = False) -> np.ndarray:
    """The array of one metric from its stored bytes: (rows,), (rows, layers) or (rows, steps_in_time)."""
    array = decode(name, blob) if encoded else np.frombuffer(blob, dtype=DTYPES[name])
    columns = layers if name in LAYER_METRICS else steps_in_time if name in TIME_METRICS else None
    if columns is None:
        return array
    if not columns:  # none recorded yet (a queued run), or no time axis: numpy cannot reshape to width 0 with -1
        return array[:0].reshape(0, 0)
    usable = len(array) - len(array) % columns
    return array[:usable].reshape(-1, columns)
