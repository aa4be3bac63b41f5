"""The live run widget: status, progress, metric charts, log tail, Cancel, and a final summary.

Two halves.  ``RunView`` is the model: plain Python that reads the workspace store (rule 1: it
keeps nothing the store lacks, only what it has read so far) and decides when a redraw is due,
at most ``max_fps`` a second by an injectable clock.  ``RunWidget`` is the view: core ipywidgets
8 controls only (HTML, FloatProgress, Button, ToggleButtons, Checkbox, Accordion), which render
in JupyterLab 4, Notebook 7 and VS Code without any front-end code of ours.  Charts are inline
SVG drawn by the browser (``charts.svg_panels``), rebuilt only when new points arrived, from at
most ``MAX_DISPLAY_POINTS`` points per series (``downsample``); the exact values stay in the
store.  Matplotlib draws the charts once, at the end, for the static copy.

A background thread polls the store every ``POLL_S`` seconds, so updates go on after a
``--no-wait`` cell returns, and every update changes widget values in place: no
``clear_output``, no flicker, the cell's other outputs untouched.  Widget views do not survive
in a saved notebook (nbviewer, GitHub, nbconvert, reopening without a kernel), so next to the
widget a plain display output holds a static copy of the final state (charts as PNG and the
summary as HTML/text); a CSS rule hides it wherever the live widget renders.
"""
from __future__ import annotations

import base64
import html
import math
import re
import secrets
import sqlite3
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

from . import charts
from .. import states
from .downsample import downsample
from ..registry import load_hint
from ..run import BUILD_LOG, OUTPUT_LOG, STDERR_LOG

POLL_S = 0.1                 # store poll interval: a logged point shows well within 1 s
MAX_FPS = 5.0                # redraws per second, at most
MAX_DISPLAY_POINTS = 1000    # per series, for the charts (about 3 per pixel)
LOG_TAIL_BYTES = 64 * 1024   # read from the end of output.log
LOG_LINES_SHORT = 6          # always visible
LOG_LINES_LONG = 400         # in the expanded log
MAX_PANELS = 12
LINGER_S = 600.0             # after the end, keep looking for a registered model this long
LINGER_POLL_S = 1.0

STATUS_COLORS = {
    states.QUEUED: "#6b7280", states.PREPARING: "#b45309", states.STARTING: "#b45309",
    states.RUNNING: "#1d4ed8", states.FINALIZING: "#0f766e", states.COMPLETED: "#15803d",
    states.FAILED: "#b91c1c", states.CANCELED: "#4b5563",
}
SPLIT_WORDS = "train|training|val|valid|validation|test|eval"
_SPLIT_PREFIX = re.compile(rf"^({SPLIT_WORDS})[_/.\-](.+)$", re.IGNORECASE)
_SPLIT_SUFFIX = re.compile(rf"^(.+)[_/.\-]({SPLIT_WORDS})$", re.IGNORECASE)
_LOWER_IS_BETTER = re.compile(r"loss|err|mse|mae|rmse|perplex|ppl|nll|wer|cer|dist",
                              re.IGNORECASE)
_HIGHER_IS_BETTER = re.compile(r"acc|f1|auc|prec|recall|iou|map|score|r2|bleu|rouge",
                               re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_TRACEBACK = "Traceback (most recent call last):"


# -- pure helpers (also used by the runs table) ------------------------------------------------
def panel_key(name: str) -> str:
    """The chart panel a metric goes in: train/val variants of one quantity share a panel."""
    m = _SPLIT_PREFIX.match(name)
    if m:
        return m.group(2)
    m = _SPLIT_SUFFIX.match(name)
    return m.group(1) if m else name


def group_panels(names) -> dict[str, list[str]]:
    """{panel: [metric names]} in first-seen order."""
    panels: dict[str, list[str]] = {}
    for name in names:
        panels.setdefault(panel_key(name), []).append(name)
    return panels


def best_value(name: str, values) -> float | None:
    """The best value of a loss-like (lowest) or accuracy-like (highest) metric, else None."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return None
    if _LOWER_IS_BETTER.search(name):
        return min(finite)
    if _HIGHER_IS_BETTER.search(name):
        return max(finite)
    return None


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or math.isnan(seconds) or math.isinf(seconds):
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_value(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


def terminal_lines(text: str) -> list[str]:
    """Lines as a terminal shows them: ANSI codes gone, each line the text after its last \\r."""
    text = _ANSI.sub("", text)
    return [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]


def last_traceback(text: str) -> str | None:
    """The last Python traceback in a log, up to the exception line."""
    start = text.rfind(_TRACEBACK)
    if start < 0:
        return None
    lines = text[start:].splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        out.append(line)
        if line and not line.startswith((" ", "\t")):   # the "ValueError: ..." line
            break
    return "\n".join(out)


class _Series:
    """One metric's points in growable arrays (appends amortized, no list-to-array copies)."""

    def __init__(self):
        self.n = 0
        self._data = np.empty((3, 256))   # rows: step, value, time

    def extend(self, rows: list[tuple[int, float | None, float]]) -> None:
        need = self.n + len(rows)
        if need > self._data.shape[1]:
            grown = np.empty((3, max(need, 2 * self._data.shape[1])))
            grown[:, :self.n] = self._data[:, :self.n]
            self._data = grown
        block = np.array([(s, np.nan if v is None else v, t) for s, v, t in rows],
                         dtype=float).T
        self._data[:, self.n:need] = block
        self.n = need

    @property
    def steps(self) -> np.ndarray:
        return self._data[0, :self.n]

    @property
    def values(self) -> np.ndarray:
        return self._data[1, :self.n]

    @property
    def times(self) -> np.ndarray:
        return self._data[2, :self.n]


_subshell: list[str] = []     # this kernel's subshell for widget messages, made once


def kernel_subshell() -> str | None:
    """A kernel subshell (ipykernel 7) that handles the widget's clicks; None without one.

    A cell that waits for a run (``%%train``, ``w.wait()``) blocks the kernel's main shell, and
    widget clicks are messages the main shell would only handle after the cell.  A subshell is
    a second shell thread; the kernel routes a comm's messages to the subshell the comm names,
    so Cancel and the chart toggles work while a cell waits.
    """
    if _subshell:
        return _subshell[0]
    try:
        from IPython import get_ipython
        kernel = get_ipython().kernel
        channel = kernel.shell_channel_thread
        create = channel.manager._create_subshell
    except AttributeError:
        return None
    if channel is None:
        return None
    made: Future = Future()

    def make():          # must run on the shell channel thread
        try:
            made.set_result(create())
        except BaseException as e:
            made.set_exception(e)
    channel.io_loop.add_callback(make)
    try:
        _subshell.append(made.result(timeout=10))
    except Exception:
        return None
    return _subshell[0]


def route_to_subshell(widgets) -> bool:
    """Have the kernel hand these widgets' messages to the subshell (where there is one)."""
    subshell = kernel_subshell()
    if subshell is None:
        return False
    for widget in widgets:
        comm = getattr(widget, "comm", None)
        if comm is not None and hasattr(comm, "_reply_subshell_for"):
            comm._reply_subshell_for = lambda data, default, _id=subshell: _id
    return True


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
        self.series: dict[str, _Series] = {}
        self.last_metric_id = 0
        self.log_lines: list[str] = []
        self.log_source = OUTPUT_LOG
        self.models: list[tuple[str, int]] = []
        self.changed: set[str] = set()
        self.redraws = 0
        self._last_redraw = -math.inf
        self._log_stamp: tuple | None = None
        self._header_second = None
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
        rows = self.store.metric_series(self.run_id, after_id=self.last_metric_id)
        if rows:
            received = time.time()
            self.last_metric_id = rows[-1][0]
            by_name: dict[str, list] = {}
            for _, name, step, value, t in rows:
                by_name.setdefault(name, []).append((step, value, t))
            for name, points in by_name.items():
                self.series.setdefault(name, _Series()).extend(points)
            changed.add("metrics")
            if self.on_points is not None:
                self.on_points(rows, received)
        if self._read_log():
            changed.add("log")
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
            return self.record["reason"].splitlines()[0][:200]
        for entry in reversed(self.history):
            if entry["status"] == status:
                return entry["detail"]
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
            p["eta"] = max(0.0, p["eta"] - ((now or time.time()) - p["t"]))
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

    def chart_svg(self, x: str = "step", log_y: bool = False) -> str:
        return charts.svg_panels(self.chart_panels(x), xlabel=_xlabel(x), log_y=log_y)

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
        traceback = None
        if self.status == states.FAILED:
            for name in (STDERR_LOG, OUTPUT_LOG):
                path = folder / name
                if path.exists():
                    traceback = last_traceback(path.read_text(errors="replace"))
                    if traceback:
                        break
        return {"run": self.run_id, "experiment": self.record.get("experiment"),
                "status": self.status, "reason": self.record.get("reason"),
                "exit_code": self.record.get("exit_code"),
                "elapsed": self.elapsed(), "metrics": metrics, "files": files,
                "models": list(self.models), "traceback": traceback}


def _xlabel(x: str) -> str:
    return "step" if x == "step" else "seconds since start"


# -- HTML pieces -------------------------------------------------------------------------------
def badge(status: str) -> str:
    color = STATUS_COLORS.get(status, "#6b7280")
    return (f'<span style="background:{color};color:white;border-radius:9px;'
            f'padding:1px 9px;font-size:12px;font-weight:600">{html.escape(status)}</span>')


def summary_html(summary: dict) -> str:
    parts = []
    if summary["metrics"]:
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{format_value(m['final'])}</td>"
            f"<td>{format_value(m['best'])}</td><td>{m['points']}</td></tr>"
            for n, m in summary["metrics"].items())
        parts.append('<table style="border-collapse:collapse;font-size:12px">'
                     "<tr><th align=left>metric</th><th align=left>final</th>"
                     "<th align=left>best</th><th align=left>points</th></tr>"
                     f"{rows}</table>")
    if summary["models"]:
        parts.append("<div><b>Registered model:</b> " + ", ".join(
            f"{html.escape(n)} v{v}: <code>{html.escape(load_hint(n, v))}</code>"
            for n, v in summary["models"]) + "</div>")
    if summary["files"]:
        shown = summary["files"][:20]
        more = len(summary["files"]) - len(shown)
        parts.append("<div><b>Output files:</b> " + ", ".join(
            f"<code>{html.escape(f)}</code>" for f in shown)
            + (f" and {more} more" if more > 0 else "") + "</div>")
    if summary["reason"] and summary["status"] == states.FAILED:
        parts.append(f"<div><b>Reason:</b><pre style='white-space:pre-wrap;margin:2px 0'>"
                     f"{html.escape(summary['reason'])}</pre></div>")
    if summary["traceback"]:
        parts.append("<details><summary><b>Traceback</b></summary><pre style="
                     "'white-space:pre-wrap;font-size:11px'>"
                     f"{html.escape(summary['traceback'])}</pre></details>")
    return "".join(parts)


def summary_text(summary: dict) -> str:
    lines = [f"run {summary['run']}: {summary['status']} after "
             f"{format_duration(summary['elapsed'])}"]
    for name, m in summary["metrics"].items():
        lines.append(f"  {name}: final {format_value(m['final'])}, "
                     f"best {format_value(m['best'])} ({m['points']} points)")
    if summary["models"]:
        lines.append("  registered model: " + ", ".join(f"{n} v{v} ({load_hint(n, v)})"
                                                        for n, v in summary["models"]))
    if summary["files"]:
        lines.append("  output files: " + ", ".join(summary["files"][:20]))
    if summary["reason"] and summary["status"] != states.COMPLETED:
        lines.append("  reason: " + summary["reason"])
    if summary["traceback"]:
        lines.append(summary["traceback"])
    return "\n".join(lines)


def _pre(lines: list[str], height: str | None = None) -> str:
    style = "margin:0;font-size:11px;line-height:1.3;white-space:pre-wrap;word-break:break-all"
    if height:
        style += f";max-height:{height};overflow-y:auto"
    return f'<pre style="{style}">{html.escape(chr(10).join(lines))}</pre>'


# -- the view ----------------------------------------------------------------------------------
class RunWidget:
    """The live widget of one run; ``run.show()`` makes and displays one.

    ``live=False`` draws the current state once and starts no thread.  ``.widget`` is the
    ipywidgets box (embed it in your own layout); ``.close()`` stops the updates.
    """

    def __init__(self, run, *, live: bool = True, get_time: Callable[[], float] = time.monotonic,
                 poll_s: float = POLL_S, max_fps: float = MAX_FPS,
                 linger_s: float = LINGER_S):
        import ipywidgets as w

        self.run = run
        self.model = RunView(run.workspace.store, run.id, get_time=get_time, max_fps=max_fps)
        self.live, self.poll_s, self.linger_s = live, poll_s, linger_s
        self.token = secrets.token_hex(4)
        self.chart_renders = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._final_drawn = threading.Event()
        self._thread: threading.Thread | None = None
        self._static = None
        self._displayed = False

        self.header = w.HTML()
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                   layout=w.Layout(width="45%"))
        self.bar_text = w.HTML()
        self.cancel_button = w.Button(description="Cancel", button_style="danger",
                                      icon="stop", tooltip="Stop the run (SIGTERM, then SIGKILL)",
                                      layout=w.Layout(width="auto"))
        self.x_axis = w.ToggleButtons(options=[("step", "step"), ("time", "time")],
                                      value="step", tooltips=["x: step", "x: seconds"],
                                      style={"button_width": "60px"})
        self.log_y = w.Checkbox(value=False, description="log scale", indent=False,
                                layout=w.Layout(width="auto"))
        self.chart = w.HTML()
        self.log_short = w.HTML()
        self.log_long = w.HTML()
        self.log_box = w.Accordion(children=[self.log_long], selected_index=None)
        self.log_box.set_title(0, f"Log (last {LOG_LINES_LONG} lines)")
        self.summary = w.HTML()
        self.bar_row = w.HBox([self.bar, self.bar_text],     # shown once progress() reports
                              layout=w.Layout(align_items="center", display="none"))
        self.controls = w.HBox([self.x_axis, self.log_y],
                               layout=w.Layout(align_items="center", display="none"))
        self.widget = w.VBox([
            w.HBox([self.header, self.cancel_button],
                   layout=w.Layout(justify_content="space-between", align_items="center")),
            self.bar_row, self.controls, self.chart, self.log_short, self.log_box, self.summary,
        ])
        self.widget.add_class("celltrain-run")
        self.widget.add_class(f"celltrain-live-{self.token}")
        self.chart.layout.display = "none"

        self.cancel_button.on_click(lambda _: self.cancel())
        self.x_axis.observe(lambda _: self._redraw("metrics"), names="value")
        self.log_y.observe(lambda _: self._redraw("metrics"), names="value")
        self.log_box.observe(lambda _: self._redraw("log"), names="selected_index")

    def __repr__(self) -> str:
        return f"<RunWidget {self.run.id} {self.model.status}>"

    # -- showing -------------------------------------------------------------------------------
    def display(self) -> "RunWidget":
        """Show the widget, and below it the static copy for saved notebooks."""
        from IPython import get_ipython
        from IPython.display import display
        if not self.live:
            self.refresh(force=True)   # live: the thread reads (a long history) off the cell
        self._displayed = True
        if get_ipython() is None:       # plain Python: nothing to show it in
            return self
        route_to_subshell([self.cancel_button, self.x_axis, self.log_y, self.log_box])
        display({"application/vnd.jupyter.widget-view+json": {
                    "version_major": 2, "version_minor": 0, "model_id": self.widget.model_id},
                 "text/plain": f"celltrain run {self.run.id}: live view (needs the kernel); "
                               f"the final state is shown below"}, raw=True)
        with self._lock:
            final = self._final_drawn.is_set()
            self._static = display(self.static_bundle(self.model.summary() if final else None),
                                   raw=True, display_id=True)
        return self

    def _ipython_display_(self):
        # run.show() has displayed it already; the cell's value must not show it twice.
        if not self._displayed:
            self.display()

    def start(self) -> "RunWidget":
        """Follow the run in a background thread until it ends (and a while after)."""
        if self._thread is None and self.live:
            self._thread = threading.Thread(target=self._follow, daemon=True,
                                            name=f"celltrain-widget-{self.run.id}")
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop following the run and close the widget views."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for child in (self.header, self.bar, self.bar_text, self.cancel_button, self.x_axis,
                      self.log_y, self.chart, self.log_short, self.log_long, self.log_box,
                      self.summary, self.controls, self.bar_row, *self.widget.children,
                      self.widget):
            child.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ended and its final state is drawn; False on timeout."""
        return self._final_drawn.wait(timeout)

    def cancel(self) -> str:
        """Cancel the run without waiting for it to stop (the Cancel button)."""
        self.cancel_button.disabled = True
        self.cancel_button.description = "Canceling…"
        status = self.run.cancel(wait=False)
        self._redraw("status")
        return status

    # -- updating ------------------------------------------------------------------------------
    def _follow(self) -> None:
        try:
            while not self._stop.is_set() and not self._final_drawn.is_set():
                self.refresh()
                self._stop.wait(self.poll_s)
            deadline = time.monotonic() + self.linger_s
            while not self._stop.wait(LINGER_POLL_S) and time.monotonic() < deadline:
                self.refresh()   # a model registered after the run shows in the summary
        except Exception as e:   # never a traceback from a thread in the middle of a cell
            self.summary.value = (f"<pre>celltrain widget stopped updating: "
                                  f"{html.escape(type(e).__name__)}: {html.escape(str(e))}; "
                                  f"run.show() again to reattach</pre>")

    def refresh(self, force: bool = False) -> set[str]:
        """Poll the store once and redraw what changed, if a redraw is due; returns the parts."""
        with self._lock:
            self.model.poll()
            if force:
                self.model.changed |= {"status", "metrics", "log"}
                self.model._last_redraw = -math.inf
            parts = self.model.take()
            if self.model.terminal and not self._final_drawn.is_set():
                # The end is drawn at once, whatever the throttle says.
                parts |= self.model.changed | {"status", "metrics", "log", "final"}
                self.model.changed = set()
            if parts:
                self._draw(parts)
            return parts

    def _redraw(self, part: str) -> None:
        """A toggle changed: the following thread draws it, or it is drawn now."""
        if (self._thread is not None and self._thread.is_alive()
                and not self._final_drawn.is_set()):
            self.model.mark(part)
            return
        with self._lock:           # nobody polls often: a click gets its redraw at once
            self.model.poll()
            parts, self.model.changed = self.model.changed | {part}, set()
            self._draw(parts)

    def _draw(self, parts: set[str]) -> None:
        m = self.model
        now = time.time()
        if "status" in parts:
            self._draw_status(now)
        if "metrics" in parts and m.series:
            self.chart.value = m.chart_svg(self.x_axis.value, self.log_y.value)
            self.chart_renders += 1
            self.chart.layout.display = None
            self.controls.layout.display = "flex"
        if "log" in parts:
            self.log_short.value = _pre(m.log_lines[-LOG_LINES_SHORT:])
            if self.log_box.selected_index is not None:
                self.log_long.value = _pre(m.log_lines, height="24em")
            source = "build log" if m.log_source == BUILD_LOG else "log"
            self.log_box.set_title(0, f"{source.capitalize()} (last {LOG_LINES_LONG} lines)")
        if "final" in parts and m.terminal:
            summary = m.summary()
            self.summary.value = summary_html(summary)
            self._update_static(summary)
            self._final_drawn.set()

    def _draw_status(self, now: float) -> None:
        m = self.model
        record = m.record
        name = f"{record.get('experiment', '')} #{record.get('number', '')}"
        detail = m.phase_detail()
        eta = None
        p = m.progress(now)
        if p and p.get("eta") is not None:
            eta = p["eta"]
        self.header.value = (
            f'<div style="display:flex;gap:10px;align-items:center;flex-wrap:wrap">'
            f"<b>{html.escape(name)}</b><code>{html.escape(self.run.id)}</code>"
            f"{badge(m.status)}"
            f"<span>{html.escape(detail or '')}</span>"
            f"<span>elapsed {format_duration(m.elapsed(now))}</span>"
            + (f"<span>ETA {format_duration(eta)}</span>" if eta is not None else "")
            + "</div>")
        if p:
            self.bar_row.layout.display = "flex"
            n, total = p.get("n") or 0, p.get("total")
            unit = p.get("unit") or "it"
            if total:
                self.bar.value = min(1.0, n / total)
            text = [html.escape(str(p.get("desc") or "")),
                    f"{n}/{total}" if total else f"{n} {html.escape(unit)}"]
            if p.get("rate"):
                text.append(f"{p['rate']:.3g} {html.escape(unit)}/s")
            self.bar_text.value = " · ".join(t for t in text if t)
        if m.terminal:
            self.bar.bar_style = {states.COMPLETED: "success", states.FAILED: "danger"}.get(
                m.status, "warning")
            if m.status == states.COMPLETED:
                self.bar.value = 1.0
            self.cancel_button.layout.display = "none"
        elif record.get("cancel_requested"):
            self.cancel_button.disabled = True
            self.cancel_button.description = "Canceling…"

    # -- the static copy -----------------------------------------------------------------------
    def static_bundle(self, summary: dict | None = None) -> dict[str, str]:
        """text/html (+ image/png, text/plain) for front ends without the widget."""
        m = self.model
        record = m.record or self.run.record
        hide = (f"<style>body:has(.celltrain-live-{self.token}) .celltrain-static-{self.token}"
                "{display:none}</style>")
        head = (f"<b>{html.escape(str(record.get('experiment', '')))} "
                f"#{record.get('number', '')}</b> <code>{html.escape(self.run.id)}</code> "
                f"{badge(record['status'])}")
        if summary is None:
            return {"text/html": f'<div class="celltrain-static-{self.token}">{hide}{head} '
                                 f"(the final state appears here when the run ends)</div>",
                    "text/plain": f"celltrain run {self.run.id}: {record['status']}"}
        png = m.chart_png(self.x_axis.value, self.log_y.value) if m.series else None
        img = (f'<img alt="metrics of {html.escape(self.run.id)}" '
               f'src="data:image/png;base64,{base64.b64encode(png).decode()}"/>' if png else "")
        bundle = {"text/html": f'<div class="celltrain-static-{self.token}">{hide}'
                               f"<div>{head} after {format_duration(summary['elapsed'])}</div>"
                               f"{img}{summary_html(summary)}</div>",
                  "text/plain": summary_text(summary)}
        if png:
            bundle["image/png"] = base64.b64encode(png).decode()
        return bundle

    def _update_static(self, summary: dict) -> None:
        if self._static is not None:
            self._static.update(self.static_bundle(summary), raw=True)


def show_run(run, *, live: bool = True, **kwargs) -> RunWidget:
    """Display the run's widget and follow it live in the background; returns the widget.

    In [1]: run = ws.run("birds-3")
    In [2]: run.show()          # the whole history so far, then live
    """
    widget = RunWidget(run, live=live, **kwargs)
    widget.display()
    if live:
        widget.start()   # an ended run only lingers, for a model registered later
    return widget
