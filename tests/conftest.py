import os

import pytest
import torch

# Tests draw figures without a screen.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def one_thread():
    """The tests use tiny tensors: one thread is faster, and much faster when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
