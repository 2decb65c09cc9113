"""Torch's CPU threads for one piece of work, restored afterwards (``--threads`` of every command).

Why a knob: torch's default is one thread per core, and each parallel region waits for all of them; on a
machine whose cores are busy with other work, one thread can be several times faster.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["MAX_THREADS", "check_threads", "torch_threads"]

MAX_THREADS = 1024
"""More threads than any machine here has cores; torch would try to start them all (100,000 ran out of memory)."""


def check_threads(n: int | None) -> None:
    """Refuse a ``--threads`` below 1 or above :data:`MAX_THREADS`, naming the cores this machine has."""
    import os

    if n is not None and not 1 <= n <= MAX_THREADS:
        raise ValueError(f"--threads must be >= 1 and at most {MAX_THREADS:,} (this machine has {os.cpu_count()} "
                         f"cores), got {n:,}")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (``None``: leave torch's setting), restoring it afterwards."""
    if n is None:
        yield
        return
    check_threads(n)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
