"""The run widget's model: what it shows of one run, read from the store, and when to redraw.

Plain Python, no widgets (rule 1: it keeps nothing the store lacks, only what it has read so
far); ``RunWidget`` (``views.widget``) draws it.
"""
from __future__ import annotations

import math
import sqlite3
import time
from typing import Any, Callable

import numpy as np

from . import charts
from .. import states
from ..ranks import read_ranks
from ..runfiles import BUILD_LOG, OUTPUT_LOG, STDERR_LOG
from ..store.runs import format_warning
from .downsample import downsample
from .format import MAX_DISPLAY_POINTS, MAX_PANELS, best_value, failure_cause, group_panels, \
    last_traceback, panel_key, terminal_lines
from .series import Series

MAX_FPS = 5.0                # redraws per second, at most
LOG_TAIL_BYTES = 64 * 1024   # read from the end of output.log
LOG_LINES_LONG = 400         # in the expanded log


# -- the model ---------------------------------------------------------------------------------
class RunView:
    """Everything the widget shows about one run, read from the store, with redraw throttling.

    ``poll()`` reads what is new (status, progress, metric points after the last id seen, the
    log tail) and records which parts changed; ``take()`` hands those parts to the view when a
    redraw is due (``get_time`` is the clock for the throttle, injectable for tests).
    """

    def __init__(self, store, run_id: str, *, get_time: Callable[[], float] = time.monotonic,
                 max_fps: float = MAX_FPS, max_points: int = MAX_DISPLAY_POINTS):
        self.store, self.run_id = store, run_id
        self.get_time = get_time
        self.min_interval = 1.0 / max_fps
        self.max_points = max_points
        self.record: dict[str, Any] = {}
        self.history: list[dict] = []
        self.series: dict[str, Series] = {}
        self.rank = 0                      # whose series are read: rank 0's unless picked
        self.ranks: list[dict] = []        # a distributed run's rank records (read_ranks)
        self.last_metric_id = 0
        self.log_lines: list[str] = []
        self.log_source = OUTPUT_LOG
        self.models: list[tuple[str, int]] = []
        self.warnings: list[str] = []      # Run.warnings: what the host could not take
        self.changed: set[str] = set()
        self.redraws = 0
        self._last_redraw = -math.inf
        self._log_stamp: tuple | None = None
        self._header_second = None
        self._cause: tuple[str | None, str | None] = (None, None)   # (reason, its cause)
        self.on_points: Callable[[list[tuple], float], None] | None = None   # for the bench

    # -- reading the store --------------------------------------------------------------------
    def poll(self) -> set[str]:
        """Read what changed since the last poll; returns the parts that changed."""
        changed: set[str] = set()
        record = self.store.get_run(self.run_id)
        if record is None:
            raise LookupError(f"run {self.run_id} is not in the workspace {self.store.root}")
        old = self.record
        if (record["status"] != old.get("status") or record["reason"] != old.get("reason")
                or record["progress"] != old.get("progress")
                or record["ended"] != old.get("ended")):
            changed.add("status")
        if record["status"] != old.get("status"):
            self.history = self.store.status_history(self.run_id)
        self.record = record
        # The clock ticks on the header while the run is active.
        second = int(time.time())
        if not self.terminal and second != self._header_second:
            self._header_second = second
            changed.add("status")
        rows = self.store.metric_series(self.run_id, after_id=self.last_metric_id,
                                        rank=self.rank)
        if rows:
            received = time.time()
            self.last_metric_id = rows[-1][0]
            by_name: dict[str, list] = {}
            for _, name, step, value, t in rows:
                by_name.setdefault(name, []).append((step, value, t))
            for name, points in by_name.items():
                self.series.setdefault(name, Series()).extend(points)
            changed.add("metrics")
            if self.on_points is not None:
                self.on_points(rows, received)
        if "status" in changed:            # on a change and the header's tick: once a second
            self.ranks = read_ranks(self.store.run_dir(self.run_id), record["status"])
        if self._read_log():
            changed.add("log")
        warnings = [format_warning(w) for w in self.store.warnings(self.run_id)]
        if warnings != self.warnings:
            self.warnings = warnings
            changed |= {"status", "final"}
        if self.terminal and self._read_models():
            changed.add("final")
        self.changed |= changed
        return changed

    def _read_log(self) -> bool:
        status = self.record.get("status")
        source = BUILD_LOG if status in (states.QUEUED, states.PREPARING) else OUTPUT_LOG
        path = self.store.run_dir(self.run_id) / source
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        stamp = (source, st.st_size, st.st_mtime_ns)
        if stamp == self._log_stamp:
            return False
        self._log_stamp = stamp
        with open(path, "rb") as f:
            f.seek(max(0, st.st_size - LOG_TAIL_BYTES))
            text = f.read().decode(errors="replace")
        lines = terminal_lines(text)
        if st.st_size > LOG_TAIL_BYTES:
            lines = lines[1:]             # the first line is cut
        while lines and not lines[-1].strip():
            lines.pop()
        self.log_lines, self.log_source = lines[-LOG_LINES_LONG:], source
        return True

    def _read_models(self) -> bool:
        try:
            rows = self.store.conn.execute(
                "SELECT name, version FROM models WHERE run_id=? ORDER BY created",
                (self.run_id,)).fetchall()
        except sqlite3.OperationalError:     # a store without the registry's tables
            rows = []
        models = [(r[0], r[1]) for r in rows]
        if models == self.models:
            return False
        self.models = models
        return True

    def set_rank(self, rank: int) -> None:
        """Show another rank's series: they are read afresh from the store at the next poll."""
        if rank != self.rank:
            self.rank, self.series, self.last_metric_id = rank, {}, 0
            self.changed.add("metrics")

    # -- throttling ---------------------------------------------------------------------------
    def due(self) -> bool:
        return bool(self.changed) and self.get_time() - self._last_redraw >= self.min_interval

    def take(self) -> set[str]:
        """The parts to redraw now (empty if none changed or the last redraw was too recent)."""
        if not self.due():
            return set()
        parts, self.changed = self.changed, set()
        self._last_redraw = self.get_time()
        self.redraws += 1
        return parts

    def mark(self, part: str) -> None:
        """Ask for a redraw of ``part`` (a toggle changed)."""
        self.changed.add(part)

    # -- what to show -------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self.record.get("status", states.QUEUED)

    @property
    def terminal(self) -> bool:
        return states.is_terminal(self.status)

    def phase_detail(self) -> str | None:
        """Why the run is in its state: "image cached", a build step, a failure reason."""
        status = self.status
        if status == states.PREPARING and self.log_source == BUILD_LOG and self.log_lines:
            line = self.log_lines[-1].strip()
            if line.startswith("# "):     # celltrain's own note: "image cached: ...", ...
                return line[2:][:120]
            return "building image: " + line[:100]
        if status in (states.FAILED, states.CANCELED) and self.record.get("reason"):
            return self.cause()
        for entry in reversed(self.history):
            if entry["status"] == status:
                return entry["detail"]
        return None

    def cause(self) -> str | None:
        """Why the run ended, in one line (a failed build's pip error, the exception line)."""
        reason = self.record.get("reason")
        if self._cause[0] != reason:
            traceback = self.traceback() if self.status == states.FAILED else None
            self._cause = (reason, failure_cause(reason, traceback))
        return self._cause[1]

    def traceback(self) -> str | None:
        """The last Python traceback of a failed run's stderr or output."""
        folder = self.store.run_dir(self.run_id)
        for name in (STDERR_LOG, OUTPUT_LOG):
            path = folder / name
            if path.exists():
                found = last_traceback(path.read_text(errors="replace"))
                if found:
                    return found
        return None

    def elapsed(self, now: float | None = None) -> float | None:
        created = self.record.get("created")
        if created is None:
            return None
        end = self.record.get("ended") or (now if now is not None else time.time())
        return end - created

    def progress(self, now: float | None = None) -> dict | None:
        """The latest progress() state with its ETA brought up to now."""
        p = self.record.get("progress")
        if not p:
            return None
        p = dict(p)
        if p.get("eta") is not None and p.get("t") is not None and not p.get("done"):
            left = p["eta"] - ((now or time.time()) - p["t"])
            # A step that overruns the estimate: "0:00" for as long as it lasts would be a
            # wrong answer, so there is none until the next report brings a new one.
            p["eta"] = left if left > 0 else None
        if self.terminal:
            p["eta"] = None
        return p

    def panels(self) -> dict[str, list[str]]:
        return group_panels(sorted(self.series, key=lambda n: (panel_key(n), n)))

    def display_series(self, name: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
        """At most ``max_points`` points of ``name`` for drawing; x is "step" or "time" (s)."""
        s = self.series[name]
        if x == "time":
            t0 = self.record.get("started") or self.record.get("created") or 0.0
            xs = s.times - t0
        else:
            xs = s.steps
        return downsample(xs, s.values, self.max_points)

    def chart_panels(self, x: str = "step") -> list:
        """(title, [(metric, xs, ys)]) per panel, downsampled, at most MAX_PANELS."""
        return [(title, [(n, *self.display_series(n, x)) for n in names])
                for title, names in list(self.panels().items())[:MAX_PANELS]]

    def chart_svg(self, x: str = "step", log_y: bool = False, smoothing: float = 0.0,
                  large: bool = False) -> str:
        return charts.svg_panels(self.chart_panels(x), xlabel=_xlabel(x), log_y=log_y,
                                 smoothing=smoothing, large=large)

    def chart_png(self, x: str = "step", log_y: bool = False) -> bytes:
        return charts.png_panels(self.chart_panels(x), xlabel=_xlabel(x), log_y=log_y)

    def summary(self) -> dict[str, Any]:
        """Final and best values, output files, registered models, failure reason/traceback."""
        metrics = {}
        for name in sorted(self.series):
            values = self.series[name].values
            last = float(values[-1]) if len(values) else None
            metrics[name] = {"final": last, "best": best_value(name, values.tolist()),
                             "points": int(len(values))}
        folder = self.store.run_dir(self.run_id)
        files = sorted(p.relative_to(folder).as_posix() for sub in ("outputs", "logs")
                       if (folder / sub).is_dir() for p in (folder / sub).rglob("*")
                       if p.is_file())
        traceback = self.traceback() if self.status == states.FAILED else None
        return {"run": self.run_id, "experiment": self.record.get("experiment"),
                "status": self.status, "reason": self.record.get("reason"),
                "exit_code": self.record.get("exit_code"),
                "cause": self.cause() if self.terminal else None,
                "elapsed": self.elapsed(), "metrics": metrics, "files": files,
                "models": list(self.models), "traceback": traceback,
                "warnings": list(self.warnings)}


def _xlabel(x: str) -> str:
    return "step" if x == "step" else "seconds since start"
