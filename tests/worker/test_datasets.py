"""The datasets and the minibatch order: shapes, scale, determinism, epochs."""

import numpy as np
import pytest
import torch

from shared.spec import ExperimentSpec
from worker.datasets import Batches, derive_seed, load_dataset


@pytest.mark.parametrize(
    ("dataset", "n", "features", "classes"),
    [("spirals", 2000, 2, 2), ("digits", 1797, 64, 10), ("random", 2048, 32, 10)],
)
def test_shapes_and_scale(dataset, n, features, classes):
    spec = ExperimentSpec(dataset=dataset, width=32)
    data = load_dataset(spec, "cpu")
    assert data.x.shape == (n, features) and data.x.dtype == torch.float32
    assert data.y.shape == (n,) and data.y.dtype == torch.int64
    assert data.classes == classes == spec.dims()[1]
    assert set(data.y.tolist()) == set(range(classes))
    assert data.x.mean(0).abs().max() < 0.1
    std = data.x.std(0)
    if dataset == "digits":
        # Constant pixels (always 0 at the border) stay 0 instead of becoming NaN.
        assert ((std - 1).abs() < 1e-3).sum() + (std == 0).sum() == features
        assert torch.isfinite(data.x).all()
    else:
        assert ((std - 1).abs() < 0.1).all()


def test_spirals_are_two_balanced_arms_that_no_line_separates():
    data = load_dataset(ExperimentSpec(), "cpu")
    assert data.y.sum().item() == 1000
    # The best least-squares linear classifier does little better than chance.
    features = np.c_[data.x.numpy(), np.ones(len(data))]
    weights, *_ = np.linalg.lstsq(features, 2.0 * data.y.numpy() - 1, rcond=None)
    accuracy = ((features @ weights > 0) == data.y.numpy()).mean()
    assert accuracy < 0.7


@pytest.mark.parametrize("dataset", ["spirals", "random"])
def test_same_seed_same_data_other_seed_other_data(dataset):
    spec = ExperimentSpec(dataset=dataset, seed=3)
    a, b = load_dataset(spec, "cpu"), load_dataset(spec, "cpu")
    c = load_dataset(spec.model_copy(update={"seed": 4}), "cpu")
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize("seed", [0, -1, -(2**63), 2**63 - 1])
def test_any_int64_seed_works(seed):
    assert 0 <= derive_seed(seed, "model") < 2**63
    load_dataset(ExperimentSpec(seed=seed), "cpu")


def test_streams_differ():
    assert len({derive_seed(0, s) for s in ("data", "model", "batches")}) == 3


def test_every_epoch_visits_every_example_once():
    batches = Batches(size=100, batch_size=30, seed=1, device="cpu")
    drawn = torch.cat([batches.indices(step) for step in range(40)]).numpy()  # 12 epochs
    for epoch in range(12):
        assert sorted(drawn[epoch * 100 : (epoch + 1) * 100]) == list(range(100))
    assert not np.array_equal(drawn[:100], drawn[100:200])  # reshuffled


def test_blocks_do_not_change_the_order():
    many = Batches(size=50, batch_size=7, seed=2, device="cpu")
    few = Batches(size=50, batch_size=7, seed=2, device="cpu")
    few.block_steps = 3
    assert all(torch.equal(many.indices(s), few.indices(s)) for s in range(100))


def test_a_batch_larger_than_the_data_samples_with_replacement():
    batches = Batches(size=10, batch_size=64, seed=0, device="cpu")
    batch = batches.indices(0)
    assert batch.shape == (64,) and batch.min() >= 0 and batch.max() < 10
