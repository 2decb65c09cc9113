"""This process's descendants, read from /proc: a local Ray cluster's daemons and workers (ray_overhead.py counts
their CPU seconds, tests/test_cluster.py finds a worker to kill)."""

from __future__ import annotations

import os
from pathlib import Path


def descendants() -> dict[int, list[str]]:
    """PID -> the fields of ``/proc/PID/stat`` after the command name, for every live process under this one."""
    fields: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields[int(entry)] = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue

    def under_me(pid: int) -> bool:
        while pid > 1:
            pid = int(fields[pid][1]) if pid in fields else 0
            if pid == os.getpid():
                return True
        return False

    return {pid: f for pid, f in fields.items() if under_me(pid)}
