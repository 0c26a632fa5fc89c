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

from shared.spec import RANDOM_CLASSES, ExperimentSpec

SPIRAL_POINTS = 2000  # both arms together
SPIRAL_TURNS = 1.5
SPIRAL_NOISE = 0.3  # in the units of the spiral's radius, which grows to 3 pi
RANDOM_POINTS = 2048
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
    """A classification dataset on the device: inputs (n, features) float32, labels (n,) int64."""

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


def load_dataset(spec: ExperimentSpec, device: torch.device | str) -> Dataset:
    """The spec's dataset, on the device; the same seed gives the same data everywhere."""
    rng = np.random.default_rng(derive_seed(spec.seed, "data"))
    features, classes = spec.dims()
    if spec.dataset == "spirals":
        x, y = two_spirals(rng)
    elif spec.dataset == "digits":
        x, y = _digits()
    elif spec.dataset == "random":
        x = rng.standard_normal((RANDOM_POINTS, features)).astype(np.float32)
        y = rng.integers(0, RANDOM_CLASSES, RANDOM_POINTS).astype(np.int64)
    else:
        raise ValueError(f"dataset {spec.dataset!r} has no MLP version")
    assert x.shape[1] == features, (x.shape, features)
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
