"""Torch's CPU threads for one piece of work, restored afterwards (``--threads`` of every command).

Why a knob: torch's default is one thread per core, and each parallel region waits for all of them; on a
machine whose cores are busy with other work, one thread can be several times faster.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (``None``: leave torch's setting), restoring it afterwards."""
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"--threads must be >= 1, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
