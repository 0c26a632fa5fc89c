"""The datasets of the spec, built from its seed, and the minibatches drawn from them.

Everything random is drawn on the CPU from generators seeded by the spec's seed,
then moved to the device: a CPU run and a GPU run see the same data and the same
batches, and only the arithmetic differs.
"""

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from shared.spec import IMAGE_SIZE, RANDOM_CLASSES, ExperimentSpec

SPIRAL_POINTS = 2000  # both arms together
SPIRAL_TURNS = 1.5
SPIRAL_NOISE = 0.3  # in the units of the spiral's radius, which grows to 3 pi
RANDOM_POINTS = 2048
SHAPES_POINTS = 2048
BAR_LENGTH = 4
SHAPES_NOISE = 0.3
SEQUENCES = 2048  # sequences of `adding` and `copy_first`
# Batch indices are moved to the device this many steps at a time, so that drawing
# them costs one transfer per block rather than one per step.
BLOCK_VALUES = 1 << 20
BLOCK_STEPS = 256

# Independent random streams drawn from one spec seed.
STREAMS = {"data": 0, "model": 1, "batches": 2}


def derive_seed(seed: int, stream: str) -> int:
    """A seed for one purpose (data, model, batches), in torch's range, from the spec's seed."""
    # Specs allow any int64, negative included; SeedSequence wants non-negative entropy.
    words = np.random.SeedSequence([seed % 2**64, STREAMS[stream]]).generate_state(2, np.uint32)
    return (int(words[0]) << 31 | int(words[1]) >> 1) % 2**63


@dataclass
class Dataset:
    """A dataset on the device: inputs float32 (n, features), (n, channels, height, width) or
    (n, time, features); labels (n,) int64, or float32 targets of a regression (classes 1)."""

    x: Tensor
    y: Tensor
    classes: int

    def __len__(self) -> int:
        return len(self.y)


def two_spirals(rng: np.random.Generator, points: int = SPIRAL_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spiral arms with noise, standardized: the classic hard 2-D problem."""
    half = points // 2
    # sqrt spreads points evenly along the arm rather than bunching them at the centre.
    angle = np.sqrt(rng.uniform(0.0, 1.0, half)) * SPIRAL_TURNS * 2 * np.pi
    arm = np.stack([angle * np.cos(angle), angle * np.sin(angle)], axis=1)
    x = np.concatenate([arm, -arm]) + rng.normal(0.0, SPIRAL_NOISE, (2 * half, 2))
    y = np.concatenate([np.zeros(half, np.int64), np.ones(half, np.int64)])
    return _standardize(x), y


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    # sklearn is heavy to import and only this dataset needs it; cached per process.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _standardize(bunch.data), bunch.target.astype(np.int64)


def _standardize(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per feature; a constant feature becomes 0 rather than NaN."""
    std = x.std(axis=0)
    scaled = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return scaled.astype(np.float32)


def shapes(rng: np.random.Generator, points: int = SHAPES_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """3 x 8 x 8 noisy images, each with one bar of BAR_LENGTH pixels, horizontal or vertical, in red, green
    or blue, at a random place: 6 classes (class = 3 * vertical + colour), so a model needs both where the
    pixels are and which channel holds them."""
    labels = rng.integers(0, 6, points)
    vertical, colour = labels // 3, labels % 3
    x = rng.normal(0.0, SHAPES_NOISE, (points, 3, IMAGE_SIZE, IMAGE_SIZE))
    along = rng.integers(0, IMAGE_SIZE - BAR_LENGTH + 1, points)
    across = rng.integers(0, IMAGE_SIZE, points)
    for k in range(BAR_LENGTH):
        rows = np.where(vertical == 1, along + k, across)
        cols = np.where(vertical == 1, across, along + k)
        x[np.arange(points), colour, rows, cols] += 1.0
    # Standardized per channel (not per pixel): a bar looks the same wherever it lies.
    x = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / x.std(axis=(0, 2, 3), keepdims=True)
    return x.astype(np.float32), labels.astype(np.int64)


def adding_problem(rng: np.random.Generator, seq_len: int, points: int = SEQUENCES) -> tuple[np.ndarray, np.ndarray]:
    """Hochreiter & Schmidhuber 1997: (value ~ U(0, 1), marker) per step, two markers, one in each half of
    the sequence; the target is the sum of the two marked values. Predicting the mean (1) scores MSE 1/6."""
    values = rng.uniform(0.0, 1.0, (points, seq_len))
    half = seq_len // 2
    first = rng.integers(0, half, points)
    second = rng.integers(half, seq_len, points)
    markers = np.zeros((points, seq_len))
    markers[np.arange(points), first] = 1.0
    markers[np.arange(points), second] = 1.0
    x = np.stack([values, markers], axis=2).astype(np.float32)
    y = (values[np.arange(points), first] + values[np.arange(points), second]).astype(np.float32)
    return x, y


def copy_first(rng: np.random.Generator, seq_len: int, points: int = SEQUENCES) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of one-hot symbols out of 4; the label is the first symbol, which the model must carry
    through every later step (the rest is distraction). Chance is 1/4."""
    symbols = rng.integers(0, 4, (points, seq_len))
    x = np.eye(4, dtype=np.float32)[symbols]
    return x, symbols[:, 0].astype(np.int64)


def load_dataset(spec: ExperimentSpec, device: torch.device | str) -> Dataset:
    """The spec's dataset, on the device; the same seed gives the same data everywhere."""
    rng = np.random.default_rng(derive_seed(spec.seed, "data"))
    features, classes = spec.dims()
    if spec.dataset == "spirals":
        x, y = two_spirals(rng)
    elif spec.dataset == "digits":
        x, y = _digits()
        if spec.arch == "cnn":
            x = x.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    elif spec.dataset == "shapes":
        x, y = shapes(rng)
    elif spec.dataset == "adding":
        x, y = adding_problem(rng, spec.seq_len)
    elif spec.dataset == "copy_first":
        x, y = copy_first(rng, spec.seq_len)
    elif spec.dataset == "random":
        shape = {"mlp": (features,), "cnn": (features, IMAGE_SIZE, IMAGE_SIZE), "rnn": (spec.seq_len, features)}
        x = rng.standard_normal((RANDOM_POINTS, *shape[spec.arch])).astype(np.float32)
        y = rng.integers(0, RANDOM_CLASSES, RANDOM_POINTS).astype(np.int64)
    else:
        raise ValueError(f"unknown dataset {spec.dataset!r}")
    assert x.shape[-1 if spec.arch != "cnn" else 1] == features, (x.shape, features)
    return Dataset(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device), classes)


class Batches:
    """Each step's minibatch indices: epoch-wise shuffles, or with replacement if a batch exceeds the data."""

    def __init__(self, size: int, batch_size: int, seed: int, device: torch.device | str):
        self.size = size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(derive_seed(seed, "batches"))
        self.block_steps = max(1, min(BLOCK_STEPS, BLOCK_VALUES // batch_size))
        self._pending = torch.empty(0, dtype=torch.int64)  # rest of the current epoch's shuffle
        self._block: Tensor | None = None
        self._block_start = 0

    def indices(self, step: int) -> Tensor:
        """The device index tensor (batch_size,) of step `step`; steps are asked for in order."""
        offset = step - self._block_start
        if self._block is None or offset >= len(self._block):
            self._block_start, offset = step, 0
            self._block = self._draw_block()
        return self._block[offset]

    def _draw_block(self) -> Tensor:
        shape = (self.block_steps, self.batch_size)
        if self.batch_size > self.size:
            block = torch.randint(self.size, shape, generator=self.generator)
        else:
            needed = self.block_steps * self.batch_size
            parts, have = [self._pending], len(self._pending)
            while have < needed:
                parts.append(torch.randperm(self.size, generator=self.generator))
                have += self.size
            stream = torch.cat(parts)
            block, self._pending = stream[:needed].view(shape), stream[needed:]
        if self.device.type == "cuda":
            # Pinned memory makes the copy asynchronous: no wait for the GPU's queue.
            return block.pin_memory().to(self.device, non_blocking=True)
        return block.to(self.device)
