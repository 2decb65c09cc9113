"""A user's network with BatchNorm, for tests/test_nightly_one_loop.py (its nights' running statistics are
recalibrated at the end of each night)."""
from torch import nn


def net(input_shape=(28, 28), num_classes=2):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, num_classes))
