"""Shared pytest fixtures."""
import pytest
import torch


@pytest.fixture
def torch_one_thread():
    """Run small forward passes on one thread: on the shared CPU cores extra threads mostly spin
    (measured ~10x more CPU time for 64x64 inputs at load 10). Opt in with
    `pytestmark = pytest.mark.usefixtures("torch_one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
