"""Fixtures for the worker's tests."""

from contextlib import contextmanager

import pytest
import torch


@contextmanager
def torch_threads(count: int):
    """PyTorch's CPU threads set to `count` for the block, then back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Small conv and recurrent steps run faster on one thread, and far faster when other processes share the cores."""
    with torch_threads(1):
        yield
