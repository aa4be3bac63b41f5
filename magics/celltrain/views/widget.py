"""The live run widget: status, progress, metric charts, log tail, Cancel, and a final summary.

Two halves.  ``RunView`` (``views.run_view``) is the model: plain Python that reads the workspace store (rule 1: it
keeps nothing the store lacks, only what it has read so far) and decides when a redraw is due,
at most ``max_fps`` a second by an injectable clock.  ``RunWidget`` is the view: core ipywidgets
8 controls only (HTML, FloatProgress, Button, ToggleButtons, Checkbox, FloatSlider, Accordion), which render
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
import secrets
import threading
import time
from typing import Callable

from .. import states
from ..runfiles import BUILD_LOG
from .format import badge, format_duration, format_rate, rank_strip, warnings_badge
from .run_view import LOG_LINES_LONG, MAX_FPS, RunView
from .subshell import keep_status_busy, route_to_subshell
from .summary import summary_html, summary_text
from .system_view import SystemSection
from .widget_html import chart_placeholder, pre_html, static_copy_css, tail_html

POLL_S = 0.1                 # store poll interval: a logged point shows well within 1 s
LINGER_S = 600.0             # after the end, keep looking for a registered model this long
LINGER_POLL_S = 1.0


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

        keep_status_busy()    # before the widgets' comms open (JupyterLab asks for a subshell)
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

        self.header = w.HTML(layout=w.Layout(flex="1 1 auto", min_width="0",
                                             overflow="hidden"))
        self.header.add_class("celltrain-head-cell")
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                   layout=w.Layout(width="45%"))
        self.bar_text = w.HTML()
        self.cancel_button = w.Button(description="Cancel", button_style="danger",
                                      icon="stop", tooltip="Stop the run (SIGTERM, then SIGKILL)",
                                      layout=w.Layout(width="auto", flex="0 0 auto",
                                                      min_width="fit-content"))
        self.x_axis = w.ToggleButtons(options=[("step", "step"), ("time", "time")],
                                      value="step", tooltips=["x: step", "x: seconds"],
                                      style={"button_width": "60px"})
        self.log_y = w.Checkbox(value=False, description="log scale", indent=False,
                                layout=w.Layout(width="auto"))
        self.smoothing = w.FloatSlider(value=0.0, min=0.0, max=0.99, step=0.01,
                                       description="smoothing", readout_format=".2f",
                                       tooltip="EMA weight (TensorBoard's); raw values faint",
                                       layout=w.Layout(width="260px"))
        self.enlarge = w.ToggleButton(value=False, description="Enlarge", icon="expand",
                                      tooltip="charts full width, one a row",
                                      layout=w.Layout(width="auto"))
        self.smoothing.add_class("celltrain-smoothing")
        self.enlarge.add_class("celltrain-enlarge")
        self.rank_picker = w.Dropdown(options=[("rank 0", 0)], value=0, description="",
                                      tooltip="whose metrics the charts show",
                                      layout=w.Layout(width="auto", display="none"))
        self.ranks_strip = w.HTML()       # distributed runs: each rank's node, state, exit code
        self.chart = w.HTML()
        self.log_short = w.HTML()
        self.log_long = w.HTML()
        self.log_box = w.Accordion(children=[self.log_long], selected_index=None)
        self.log_box.set_title(0, f"Log (last {LOG_LINES_LONG} lines)")
        self.summary = w.HTML()
        self.system = SystemSection(run.workspace.store, run.id)   # CPU, memory, GPU; closed
        # Space is kept for what comes later (progress, charts, log lines), so the widget keeps
        # its height while a run goes on; what never came is dropped at the end.
        self.bar_row = w.HBox([self.bar, self.bar_text],     # shown once progress() reports
                              layout=w.Layout(align_items="center", visibility="hidden"))
        self.controls = w.HBox([self.x_axis, self.log_y, self.smoothing, self.enlarge,
                                self.rank_picker],
                               layout=w.Layout(align_items="center"))
        self.widget = w.VBox([
            w.HBox([self.header, self.cancel_button],
                   layout=w.Layout(justify_content="space-between", align_items="center")),
            self.bar_row, self.ranks_strip, self.controls, self.chart, self.log_short,
            self.log_box, self.system.box, self.summary,
        ])
        self.widget.add_class("celltrain-run")
        self.widget.add_class(f"celltrain-live-{self.token}")
        self.chart.value = chart_placeholder()
        self.log_short.value = tail_html([])

        self.cancel_button.on_click(lambda _: self.cancel())
        self.x_axis.observe(lambda _: self._redraw("metrics"), names="value")
        for control in (self.log_y, self.smoothing, self.enlarge):
            control.observe(lambda _: self._redraw("metrics"), names="value")
        self.rank_picker.observe(lambda change: self.pick_rank(change["new"]), names="value")
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
        route_to_subshell([self.cancel_button, self.x_axis, self.log_y, self.log_box,
                           self.rank_picker, self.smoothing, self.enlarge, self.system.box])
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
                      self.log_y, self.smoothing, self.enlarge, self.rank_picker,
                      self.ranks_strip, self.chart, self.log_short, self.log_long, self.log_box,
                      self.summary, self.controls, self.bar_row, *self.system.widgets(),
                      *self.widget.children,
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

    def pick_rank(self, rank: int) -> None:
        """Chart another rank's metrics (the rank picker); rank 0's are shown first."""
        with self._lock:
            self.model.set_rank(rank)
        self._redraw("metrics")

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
            self.system.update()
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
        # Charts replace their placeholder with the first series; a picked rank without any
        # clears them.
        if "metrics" in parts and (m.series or self.chart_renders):
            self.chart.value = m.chart_svg(self.x_axis.value, self.log_y.value,
                                           smoothing=self.smoothing.value,
                                           large=self.enlarge.value)
            self.chart_renders += 1
        if "log" in parts:
            # A failed run's tail is its traceback, which the header and summary already say.
            failed = m.terminal and m.status != states.COMPLETED
            self.log_short.value = "" if failed else tail_html(m.log_lines, not m.terminal)
            if self.log_box.selected_index is not None:
                self.log_long.value = pre_html(m.log_lines, height="24em")
            source = "build log" if m.log_source == BUILD_LOG else "log"
            self.log_box.set_title(0, f"{source.capitalize()} (last {LOG_LINES_LONG} lines)")
        if "final" in parts and m.terminal:
            if not self.chart_renders:           # no metrics came: no space for them
                self.chart.layout.display = self.controls.layout.display = "none"
            if not m.record.get("progress"):
                self.bar_row.layout.display = "none"
            if not m.log_lines:
                self.log_short.layout.display = "none"
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
        # One line: the run's detail shrinks (ellipsis, whole in its tooltip), never Cancel.
        failed = m.terminal and m.status != states.COMPLETED and detail
        detail_style = ("overflow:hidden;text-overflow:ellipsis;min-width:0;flex:0 1 auto"
                        + (";color:var(--jp-error-color1, #b91c1c);font-weight:600"
                           if failed else ""))
        keep = "flex:none"
        shrink = "overflow:hidden;text-overflow:ellipsis;min-width:4em;flex:0 100 auto"
        self.header.value = (
            # ipywidgets' HTML content box is as wide as its text unless told otherwise
            "<style>.celltrain-head-cell, .celltrain-head-cell > .widget-html-content"
            "{min-width:0;overflow:hidden}</style>"
            f'<div class="celltrain-header" style="display:flex;gap:10px;align-items:center;'
            f'white-space:nowrap;overflow:hidden;min-width:0">'
            f'<b style="{shrink}" title="{html.escape(name)}">{html.escape(name)}</b>'
            f'<code style="{shrink}" title="{html.escape(self.run.id)}">'
            f'{html.escape(self.run.id)}</code>'
            f'<span class="celltrain-badge" style="{keep}">{badge(m.status)}</span>'
            f'<span class="celltrain-detail" style="{detail_style}" '
            f'title="{html.escape(detail or "")}">{html.escape(detail or "")}</span>'
            f'<span style="{keep}">elapsed {format_duration(m.elapsed(now))}</span>'
            + (f'<span style="{keep}">ETA {format_duration(eta)}</span>'
               if eta is not None else "")
            + warnings_badge(m.warnings)
            + "</div>")
        self._draw_ranks()
        if p:
            self.bar_row.layout.visibility = "visible"
            n, total = p.get("n") or 0, p.get("total")
            unit = p.get("unit") or "it"
            if total:
                self.bar.value = min(1.0, n / total)
            text = [html.escape(str(p.get("desc") or "")),
                    f"{n}/{total}" if total else f"{n} {html.escape(unit)}"]
            if p.get("rate"):
                text.append(html.escape(format_rate(p["rate"], unit)))
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

    def _draw_ranks(self) -> None:
        """The per-rank strip and the picker's choices, from the model's rank records."""
        ranks = self.model.ranks
        self.ranks_strip.value = rank_strip(ranks)
        options = [(f"rank {r['rank']}", r["rank"]) for r in ranks] or [("rank 0", 0)]
        if len(options) > 1 and list(self.rank_picker.options) != options:
            self.rank_picker.options = options
            self.rank_picker.value = self.model.rank
        self.rank_picker.layout.display = None if len(options) > 1 else "none"

    # -- the static copy -----------------------------------------------------------------------
    def static_bundle(self, summary: dict | None = None) -> dict[str, str]:
        """text/html (+ image/png, text/plain) for front ends without the widget."""
        m = self.model
        record = m.record or self.run.record
        hide = f"<style>{static_copy_css(self.token)}</style>"
        head = (f"<b>{html.escape(str(record.get('experiment', '')))} "
                f"#{record.get('number', '')}</b> <code>{html.escape(self.run.id)}</code> "
                f"{badge(record['status'])}")
        if summary is not None and summary.get("cause") and summary["status"] != states.COMPLETED:
            head += (' <b style="color:var(--jp-error-color1, #b91c1c)">'
                     f'{html.escape(summary["cause"])}</b>')
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
