"""Finding the detached processes celltrain starts (supervisors, sweep controllers) by their
command line, so a test can kill one the way a crash or an OOM killer would."""
from __future__ import annotations

import os


def process_with(*needles: bytes) -> int | None:
    """The pid of a process with each of ``needles`` among its arguments, else None."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if all(needle in cmd for needle in needles):
                return int(entry)
    return None
