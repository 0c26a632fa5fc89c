"""Fixtures for the worker's tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Small conv and recurrent steps run faster on one thread, and far faster when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
