"""Waiting for a ``%%train`` run.

The errors a waiting cell shows (``CellRunFailed``, ``StoppedWaiting``), a new supervisor for a
run whose supervisor died (``Adopter``), and the output streamed as text where no widget shows.
"""
from __future__ import annotations

import sys
import time

from . import states
from .errors import CelltrainError


class CellRunFailed(CelltrainError):
    """A %%train run ended Failed or Canceled; shown as the run's own reason, not our stack."""

    def __init__(self, run, status: str, reason: str | None, widget_shown: bool = False):
        self.run, self.status, self.reason = run, status, reason
        self.widget_shown = widget_shown
        super().__init__(f"run {run.id} ended {status}: {reason or 'no reason recorded'}")

    def _render_traceback_(self) -> list[str]:
        if self.widget_shown:
            # The widget above says why, once, with the rest one click away: one line here
            # (the cell must still fail, so that Run All stops).
            return [f"\x1b[31mrun {self.run.id} ended {self.status}\x1b[0m (why: in the "
                    f"run's view above; %train show {self.run.id} prints it)"]
        lines = [f"\x1b[31mrun {self.run.id} ended {self.status}\x1b[0m"]
        lines += (self.reason or "no reason recorded").splitlines()
        lines.append(f"(%train logs {self.run.id} shows the whole output; "
                     f"%train show {self.run.id} the details)")
        return lines


class StoppedWaiting(CelltrainError):
    """Waiting was interrupted; the run goes on (or was canceled, as asked)."""

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines()


class Adopter:
    """While a cell waits, a run whose supervisor died gets a new one (no endless waiting)."""

    EVERY_S = 5.0

    def __init__(self, run):
        self.run, self.next = run, time.monotonic() + self.EVERY_S

    def check(self) -> None:
        if time.monotonic() >= self.next:
            self.next = time.monotonic() + self.EVERY_S
            self.run.workspace.reconcile()


def stream(run, poll: float = 0.02) -> str:
    """Print the run's output as it comes; returns the final status."""
    from .runfiles import OUTPUT_LOG
    import codecs
    log_path = run.folder / OUTPUT_LOG
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset = 0
    keeper = Adopter(run)
    while True:
        keeper.check()
        status = run.status
        if log_path.exists():
            with open(log_path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            if chunk:
                offset += len(chunk)
                sys.stdout.write(decoder.decode(chunk))
                sys.stdout.flush()
        if states.is_terminal(status):
            return status
        time.sleep(poll)
