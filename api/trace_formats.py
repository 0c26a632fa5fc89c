"""Traces as the client asked for them: JSON (NaN and ±inf as null), npz or csv (both keep every value).

The arrays come from `Store.read_traces`: `step` (rows,), step metrics (rows,),
layer metrics (rows, layers), time metrics of arch rnn (rows, seq_len). A trace can hold millions of values, so numbers
are turned into text a block of rows at a time, and the JSON and CSV answers are
streamed rather than built whole in memory. JSON numbers come from orjson, which writes a
float32 array as the shortest decimals that read back as the same float32 values, and
NaN and ±inf as null, about 20x faster than numpy's text (bench/trace_formats.py).

- json: `{"layers", "steps", <metric>: ...}`, layer and time metrics as one list per traced step.
- npz: `steps`, `layers` (names), `layer_kinds`, then each metric: float32 (time metrics 2-D,
  rows x seq_len), `clipped` bool.
- csv: header `step,layer,<layer metrics>,<step metrics>`, one line per (step, layer),
  the step metrics repeated on each; with no layer metric asked for, `step,<step metrics>`,
  one line per step. With time metrics (arch rnn), the header ends `time,<time metrics>`, and
  each step's lines are followed by one line per time step (0 first) that holds only the step,
  the time step and the time metrics; the other lines leave those cells empty.
  `nan`, `inf` and `-inf` are written as such; `clipped` is 0/1.
"""

import io
from collections.abc import Callable, Iterator

import numpy as np
import orjson
from flask import Response

from shared.traces import LAYER_METRICS, STEP_METRICS, TIME_METRICS

METRICS = STEP_METRICS + LAYER_METRICS + TIME_METRICS
# Values turned into text at once: bounds the memory of the numpy string arrays (128 bytes a value).
BLOCK_VALUES = 1 << 16
# Bytes of JSON gathered before they go to the server: one write (one chunk of the chunked
# encoding) for a small trace instead of one per piece, at most about this much held for a large one.
WRITE_BYTES = 1 << 20

Arrays = dict[str, np.ndarray]


def _row_blocks(rows: int, values_per_row: int) -> Iterator[slice]:
    """Slices of consecutive rows that hold about BLOCK_VALUES values together."""
    size = max(1, BLOCK_VALUES // max(1, values_per_row))
    for start in range(0, rows, size):
        yield slice(start, start + size)


def _as_text(values: np.ndarray) -> np.ndarray:
    """Values as text: a float32 as the shortest decimal that reads back as itself (numpy's repr)."""
    return values.astype(str)


def _json_array(array: np.ndarray) -> Iterator[bytes]:
    """The JSON text of one array, a block of rows at a time: one list per row of a 2-D array,
    `clipped` as booleans, NaN and ±inf as null."""
    if array.dtype == np.uint8:  # `clipped`
        array = array.astype(bool)
    yield b"["
    for block in _row_blocks(len(array), array.shape[1] if array.ndim == 2 else 1):
        # orjson takes C-contiguous arrays of the host's byte order (the stored little-endian on x86 and ARM).
        text = orjson.dumps(np.ascontiguousarray(array[block], array.dtype.newbyteorder("=")),
                            option=orjson.OPT_SERIALIZE_NUMPY)
        yield (b"," if block.start else b"") + text[1:-1]
    yield b"]"


def as_json(experiment_id: str, layers: list[dict], arrays: Arrays) -> Response:
    """API.md's traces object: layers, steps, then each metric asked for."""

    def pieces() -> Iterator[bytes]:
        yield b'{"layers":' + orjson.dumps(layers) + b',"steps":'
        yield from _json_array(arrays["step"])
        for name, array in arrays.items():
            if name != "step":
                yield b',"' + name.encode() + b'":'
                yield from _json_array(array)
        yield b"}"

    return Response(_gathered(pieces()), mimetype="application/json")


def _gathered(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """The pieces joined into writes of about WRITE_BYTES."""
    held: list[bytes] = []
    size = 0
    for piece in pieces:
        held.append(piece)
        size += len(piece)
        if size >= WRITE_BYTES:
            yield b"".join(held)
            held, size = [], 0
    if held:
        yield b"".join(held)


def as_npz(experiment_id: str, layers: list[dict], arrays: Arrays) -> Response:
    """A numpy archive: `steps`, `layers` (names), `layer_kinds`, and each metric with NaN kept."""
    named = {
        "steps": arrays["step"],
        "layers": np.array([layer["name"] for layer in layers], dtype=str),
        "layer_kinds": np.array([layer.get("kind", "") for layer in layers], dtype=str),
    }
    for name, array in arrays.items():
        if name != "step":
            named[name] = array.astype(bool) if name == "clipped" else array
    buffer = io.BytesIO()
    np.savez(buffer, **named)
    return _download(buffer.getvalue(), "application/octet-stream", f"{experiment_id}-traces.npz")


def _csv_field(text: str) -> str:
    """A text cell, quoted when it holds a separator or a quote (RFC 4180)."""
    if any(char in text for char in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _csv_lines(layers: list[dict], arrays: Arrays) -> Iterator[str]:
    """The CSV text, a block of steps at a time."""
    layer_metrics = [name for name in arrays if name in LAYER_METRICS]
    step_metrics = [name for name in arrays if name in STEP_METRICS]
    time_metrics = [name for name in arrays if name in TIME_METRICS]
    names = [_csv_field(layer["name"]) for layer in layers]
    main = ["layer", *layer_metrics] if layer_metrics else []
    main += step_metrics
    time_columns = ["time", *time_metrics] if time_metrics else []
    yield ",".join(["step", *main, *time_columns]) + "\n"
    time_steps = arrays[time_metrics[0]].shape[1] if time_metrics else 0
    main_blank, time_blank = [""] * len(time_columns), [""] * len(main)
    values_per_step = (len(layers) if layer_metrics else 1) * (1 + len(main)) + time_steps * (2 + len(time_metrics))
    for block in _row_blocks(len(arrays["step"]), values_per_step):
        steps = arrays["step"][block].tolist()
        step_cells = [_as_text(arrays[name][block]).tolist() for name in step_metrics]
        tails = list(zip(*step_cells)) if step_cells else [()] * len(steps)
        if layer_metrics:
            layer_cells = _as_text(np.stack([arrays[name][block] for name in layer_metrics], axis=-1)).tolist()
            per_step = [
                [[str(step), name, *values, *tail, *main_blank] for name, values in zip(names, row)]
                for step, row, tail in zip(steps, layer_cells, tails)
            ]
        elif main:
            per_step = [[[str(step), *tail, *main_blank]] for step, tail in zip(steps, tails)]
        else:
            per_step = [[] for _ in steps]
        if time_metrics:
            time_cells = _as_text(np.stack([arrays[name][block] for name in time_metrics], axis=-1)).tolist()
            for lines, step, row in zip(per_step, steps, time_cells):
                lines.extend([str(step), *time_blank, str(t), *values] for t, values in enumerate(row))
        yield "".join(",".join(line) + "\n" for lines in per_step for line in lines)


def as_csv(experiment_id: str, layers: list[dict], arrays: Arrays) -> Response:
    """Long format, one line per (step, layer), which pandas and spreadsheets read as is."""
    return _download(_csv_lines(layers, arrays), "text/csv", f"{experiment_id}-traces.csv")


def _download(body: bytes | Iterator[str], mimetype: str, filename: str) -> Response:
    """A response that browsers and curl -OJ save as a file."""
    return Response(body, mimetype=mimetype, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


RENDERERS: dict[str, Callable[[str, list[dict], Arrays], Response]] = {
    "json": as_json,
    "npz": as_npz,
    "csv": as_csv,
}
FORMATS = tuple(RENDERERS)
