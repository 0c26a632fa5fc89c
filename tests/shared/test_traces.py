"""A finished run's trace encoding (shared/traces.py `encode`): exact, and smaller where it can be."""

import struct

import numpy as np
import pytest

from shared.traces import DEFLATED, DTYPES, ENCODE_MIN_VALUES, decode, encode


def planes_deflated(name: str, blob: bytes) -> list[bool]:
    return [bool(length & DEFLATED) for length in struct.unpack_from(f"<{DTYPES[name].itemsize}I", blob)]


def round_trip(name: str, values: np.ndarray) -> bytes:
    raw = np.ascontiguousarray(values, dtype=DTYPES[name]).tobytes()
    blob = encode(name, raw)
    assert blob is not None and len(blob) < len(raw)
    assert decode(name, blob).tobytes() == raw  # bit for bit: NaN payloads, signed zeros and all
    return blob


def test_a_smooth_series_takes_a_fraction_of_its_bytes():
    steps = np.arange(2000)
    norms = np.exp(-steps / 500)[:, None] * np.linspace(1, 2, 9)  # decaying gradient norms, 9 layers
    blob = round_trip("grad_norm", norms)
    assert len(blob) < norms.size * 4 * 0.6
    assert planes_deflated("grad_norm", blob)[3]  # the sign and exponent byte


def test_noise_keeps_its_low_bytes_as_they_are():
    values = np.random.default_rng(0).standard_normal((1000, 20))
    blob = round_trip("act_mean", values)
    assert planes_deflated("act_mean", blob) == [False, False, False, True]


@pytest.mark.parametrize("name, values", [
    ("step", np.arange(0, 30000, 3)),
    ("clipped", np.arange(5000) % 7 == 0),
    ("loss", np.r_[np.linspace(2, 0.1, 500), [np.inf, -np.inf, np.nan, -0.0], np.full(500, np.nan)]),
    ("dead_fraction", np.repeat([[0.0, 0.25, 1.0]], 800, axis=0)),
])
def test_every_dtype_and_odd_value_comes_back_exactly(name, values):
    round_trip(name, values)


def test_what_encoding_cannot_shrink_is_left_to_be_stored_as_it_is():
    assert encode("loss", np.float32(1.5).tobytes()) is None  # the header alone is longer
    few = np.zeros(ENCODE_MIN_VALUES, "<f4")
    assert encode("loss", few[1:].tobytes()) is None and encode("loss", few.tobytes()) is not None  # not worth trying
    assert encode("loss", b"\x00" * 4001) is None  # not whole values: not a trace
    noise = np.random.default_rng(1).integers(0, 2**32, 4096, dtype=np.uint32).tobytes()
    assert encode("grad_norm", noise) is None
