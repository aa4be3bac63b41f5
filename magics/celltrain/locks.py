"""Exclusive locks that say a process is alive: held for its whole life, gone when it dies."""
from __future__ import annotations

import fcntl
import time


def take_lock(f, within_s: float) -> bool:
    """Take an exclusive lock, retrying briefly: a liveness check may hold it for a moment."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
