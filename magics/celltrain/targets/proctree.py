"""CPU time and memory of a process session, read from ``/proc`` (Linux): the local target's
``sample_usage``.  A local run's processes share the session its wrapper started
(``start_new_session``), so the session id finds them all, children and grandchildren included.
"""
from __future__ import annotations

import os

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def session_usage(sid: int, proc: str = "/proc") -> tuple[float, int, int]:
    """CPU seconds (user + system, with those of reaped children), resident bytes and the
    number of processes of session ``sid``."""
    cpu_ticks = rss_pages = count = 0
    try:
        entries = os.listdir(proc)
    except OSError:
        return 0.0, 0, 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:          # gone between the listing and the read
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) < 22 or int(fields[3]) != sid or fields[0] == b"Z":
            continue          # not the session's, or dead and not yet reaped
        # utime, stime, cutime, cstime are fields 14-17 of stat; rss (pages) is field 24
        cpu_ticks += sum(int(v) for v in fields[11:15])
        rss_pages += int(fields[21])
        count += 1
    return cpu_ticks / TICKS, rss_pages * PAGE, count


class SessionSampler:
    """CPU percent between calls, and memory, of one session."""

    def __init__(self, sid: int, clock, proc: str = "/proc"):
        self.sid, self.clock, self.proc = sid, clock, proc
        self.before: tuple[float, float] | None = None

    def sample(self) -> dict | None:
        cpu, rss, count = session_usage(self.sid, self.proc)
        if not count:
            return None
        now = self.clock()
        usage: dict = {"mem_bytes": rss}
        if self.before is not None and now > self.before[1]:
            usage["cpu_percent"] = max(0.0, cpu - self.before[0]) / (now - self.before[1]) * 100
        self.before = (cpu, now)
        return usage
