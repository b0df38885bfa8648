"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a busy 2-core machine: torch's second thread spins against the
    other jobs and makes each step up to ~100x slower. One thread is also deterministic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
