"""The runs table: every run with status, params and key metrics; tick several to compare.

A view of the store like the run widget: rows come from ``store.list_runs`` and each run's
latest metrics, and the compare chart overlays the ticked runs' curves (downsampled, one panel
per metric, one colour per run).  Core ipywidgets only: header buttons sort (click again to
reverse), a checkbox per row selects, Refresh re-reads the store.  Outside a live kernel the
table shows as plain HTML.
"""
from __future__ import annotations

import html
import math
import time
from typing import Any

from . import charts
from .. import states
from .downsample import downsample
from .format import MAX_DISPLAY_POINTS, MAX_PANELS, badge, format_duration, format_value, \
    group_panels, panel_key

MAX_PARAM_COLUMNS = 6
MAX_METRIC_COLUMNS = 6
BASE_COLUMNS = ("run", "experiment", "status", "created", "duration")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sort_key(value: Any):
    """None last, numbers by value, anything else by its text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (2, 0, "")
    if _number(value):
        return (0, value, "")
    return (1, 0, str(value))


def _cell_text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return format_value(value)
    return str(value)


class RunsTable:
    """Runs of a workspace as a sortable table with a compare chart; ``ws.runs_table()``."""

    def __init__(self, workspace, *, experiment: str | None = None, limit: int = 50,
                 metrics: list[str] | None = None, params: list[str] | None = None,
                 sort_by: str = "created", descending: bool = True, search: str | None = None):
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit takes a positive number of runs, not {limit!r}")
        self.workspace, self.experiment, self.limit = workspace, experiment, limit
        self.search = search
        # The metric columns: as given, else the workspace's choice (made in the sidebar).
        self.metric_names = metrics if metrics is not None else \
            (workspace.store.run_columns() or None)
        self.param_names = params
        self.sort_column, self.descending = sort_by, descending
        self.rows: list[dict[str, Any]] = []
        self.selected: list[str] = []
        self._widget = None
        self.refresh_data()
        if sort_by not in self.columns:
            raise ValueError(f"cannot sort by {sort_by!r}: the columns are "
                             f"{', '.join(self.columns)}")

    # -- data --------------------------------------------------------------------------------
    def refresh_data(self) -> None:
        """Re-read the runs, their params and latest metrics from the store."""
        store = self.workspace.store
        records = store.list_runs(experiment=self.experiment, limit=self.limit,
                                  search=self.search)
        now = time.time()
        rows, param_keys, metric_keys = [], {}, {}
        for r in records:
            latest = store.latest_metrics(r["id"])
            end = r["ended"] or (None if states.is_terminal(r["status"]) else now)
            rows.append({"run": r["id"], "experiment": r["experiment"], "status": r["status"],
                         "created": r["created"],
                         "duration": (end - r["created"]) if end else None,
                         "params": r["params"], "metrics": latest})
            for k in r["params"]:
                param_keys.setdefault(k, None)
            for k in latest:
                metric_keys.setdefault(k, None)
        self.rows = rows
        self.params_shown = (self.param_names if self.param_names is not None
                             else list(param_keys)[:MAX_PARAM_COLUMNS])
        self.metrics_shown = (self.metric_names if self.metric_names is not None
                              else sorted(metric_keys)[:MAX_METRIC_COLUMNS])
        known = {row["run"] for row in rows}
        self.selected = [run_id for run_id in self.selected if run_id in known]

    @property
    def columns(self) -> list[str]:
        return [*BASE_COLUMNS, *(f"param:{p}" for p in self.params_shown),
                *(f"metric:{m}" for m in self.metrics_shown)]

    def value(self, row: dict, column: str) -> Any:
        if column.startswith("param:"):
            return row["params"].get(column[6:])
        if column.startswith("metric:"):
            return row["metrics"].get(column[7:])
        return row[column]

    def sorted_rows(self) -> list[dict]:
        rows = sorted(self.rows, key=lambda r: _sort_key(self.value(r, self.sort_column)),
                      reverse=self.descending)
        if self.descending:   # keep "no value" rows last either way
            rows.sort(key=lambda r: self.value(r, self.sort_column) is None)
        return rows

    def sort(self, column: str, descending: bool | None = None) -> "RunsTable":
        """Sort by a column ("status", "param:lr", "metric:val_loss"); again to reverse."""
        if column not in self.columns:
            raise ValueError(f"cannot sort by {column!r}: the columns are "
                             f"{', '.join(self.columns)}")
        if descending is None:
            descending = not self.descending if column == self.sort_column else False
        self.sort_column, self.descending = column, descending
        if self._widget is not None:
            self._layout_grid()
        return self

    def select(self, run_ids) -> "RunsTable":
        """Tick these runs (ids or unique id prefixes) and overlay their curves."""
        resolved = [self.workspace.run(r).id for r in run_ids]
        self.selected = resolved
        if self._widget is not None:
            for run_id, box in self._checkboxes.items():
                box.value = run_id in resolved
            self._draw_compare()
        return self

    def compare_panels(self, x: str = "step") -> list:
        """Panels overlaying the selected runs: (metric panel, [(run label, xs, ys)])."""
        store = self.workspace.store
        names: dict[str, None] = {}
        series: dict[tuple[str, str], tuple] = {}
        for run_id in self.selected:
            record = store.get_run(run_id)
            t0 = record["started"] or record["created"]
            points: dict[str, list] = {}
            for _, name, step, value, t in store.metric_series(run_id):
                points.setdefault(name, []).append((step if x == "step" else t - t0,
                                                    math.nan if value is None else value))
            for name, pts in points.items():
                names.setdefault(name, None)
                xs, ys = zip(*pts)
                series[(run_id, name)] = downsample(xs, ys, MAX_DISPLAY_POINTS)
        panels = []
        for title, metric_names in list(group_panels(sorted(
                names, key=lambda n: (panel_key(n), n))).items())[:MAX_PANELS]:
            lines = [(f"{run_id} {name}" if len(metric_names) > 1 else run_id, *series[key])
                     for name in metric_names for run_id in self.selected
                     if (key := (run_id, name)) in series]
            panels.append((title, lines))
        return panels

    # -- static HTML ---------------------------------------------------------------------------
    def to_html(self) -> str:
        pad = "padding:1px 14px 1px 0;white-space:nowrap"
        head = "".join(f"<th align=left style='{pad}'>{html.escape(c.split(':', 1)[-1])}</th>"
                       for c in self.columns)
        body = []
        for row in self.sorted_rows():
            cells = []
            for c in self.columns:
                cells.append(f"<td style='{pad}'>{self._cell_html(row, c)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        return (f'<table class="celltrain-runs" style="font-size:12px"><tr>{head}</tr>'
                + "".join(body) + "</table>")

    def _cell_html(self, row: dict, column: str) -> str:
        value = self.value(row, column)
        if column == "status":
            return badge(value)
        if column == "created":
            return time.strftime("%Y-%m-%d %H:%M", time.localtime(value))
        if column == "duration":
            return format_duration(value)
        if column == "run":
            return f"<code>{html.escape(value)}</code>"
        return html.escape(_cell_text(value))

    def _cell_plain(self, row: dict, column: str) -> str:
        if column == "created":
            return time.strftime("%m-%d %H:%M", time.localtime(row["created"]))
        if column == "duration":
            return format_duration(row["duration"])
        return _cell_text(self.value(row, column))

    def __repr__(self) -> str:
        lines = ["  ".join(c.split(":", 1)[-1] for c in self.columns)]
        for row in self.sorted_rows():
            lines.append("  ".join(self._cell_plain(row, c) for c in self.columns))
        return "\n".join(lines)

    # -- the widget ----------------------------------------------------------------------------
    @property
    def widget(self):
        if self._widget is None:
            self._build()
        return self._widget

    def _build(self) -> None:
        import ipywidgets as w
        self._w = w
        self.refresh_button = w.Button(description="Refresh", icon="refresh",
                                       layout=w.Layout(width="auto"))
        self.refresh_button.on_click(lambda _: self.refresh())
        self.x_axis = w.ToggleButtons(options=["step", "time"], value="step",
                                      style={"button_width": "60px"})
        self.log_y = w.Checkbox(value=False, description="log scale", indent=False,
                                layout=w.Layout(width="auto"))
        self.x_axis.observe(lambda _: self._draw_compare(), names="value")
        self.log_y.observe(lambda _: self._draw_compare(), names="value")
        self.hint = w.HTML("<i>tick runs to overlay their curves</i>")
        self.grid = w.GridBox()
        self.grid.add_class("celltrain-runs-grid")
        self._corner = w.HTML("")
        self.compare = w.HTML()
        self._widget = w.VBox([
            w.HBox([self.refresh_button, self.x_axis, self.log_y, self.hint],
                   layout=w.Layout(align_items="center")),
            self.grid, self.compare])
        self._widget.add_class("celltrain-runs-table")
        self._make_cells()

    def _make_cells(self) -> None:
        w = self._w
        self._headers = {}
        for c in self.columns:
            # A header shows its whole name ("train_acc" and "train_loss" must differ).
            b = w.Button(description=c.split(":", 1)[-1], tooltip=f"sort by {c}",
                         layout=w.Layout(width="auto", min_width="max-content"))
            b.on_click(lambda _, c=c: self.sort(c))
            self._headers[c] = b
        self._cells, self._checkboxes = {}, {}
        for row in self.rows:
            box = w.Checkbox(value=row["run"] in self.selected, indent=False,
                             layout=w.Layout(width="24px"))
            box.observe(lambda change, run_id=row["run"]: self._on_tick(run_id, change["new"]),
                        names="value")
            self._checkboxes[row["run"]] = box
            self._cells[row["run"]] = [   # one line each: ids and dates do not wrap
                w.HTML(f'<span style="white-space:nowrap">{self._cell_html(row, c)}</span>')
                for c in self.columns]
        self._layout_grid()
        self._draw_compare()

    def _layout_grid(self) -> None:
        w = self._w
        for c, b in self._headers.items():
            arrow = (" ▼" if self.descending else " ▲") if c == self.sort_column else ""
            b.description = c.split(":", 1)[-1] + arrow
        children = [self._corner, *self._headers.values()]
        for row in self.sorted_rows():
            children += [self._checkboxes[row["run"]], *self._cells[row["run"]]]
        self.grid.layout = w.Layout(grid_template_columns=f"24px repeat({len(self.columns)}, "
                                                          f"auto)", grid_gap="2px 10px",
                                    align_items="center", overflow="auto")
        self.grid.children = children

    def _on_tick(self, run_id: str, ticked: bool) -> None:
        if ticked and run_id not in self.selected:
            self.selected.append(run_id)
        elif not ticked and run_id in self.selected:
            self.selected.remove(run_id)
        self._draw_compare()

    def _draw_compare(self) -> None:
        if self._widget is None:
            return
        if not self.selected:
            self.compare.value = ""
            return
        x = self.x_axis.value
        self.compare.value = charts.svg_panels(
            self.compare_panels(x), xlabel="step" if x == "step" else "seconds since start",
            log_y=self.log_y.value)

    def refresh(self) -> None:
        """Re-read the store and redraw (the Refresh button)."""
        old = [*self._headers.values(), *self._checkboxes.values(),
               *(c for cells in self._cells.values() for c in cells)] if self._widget else []
        self.refresh_data()
        if self._widget is not None:
            self._make_cells()
            for widget in old:
                widget.close()

    def _ipython_display_(self):
        from IPython.display import display
        display({"application/vnd.jupyter.widget-view+json": {
                    "version_major": 2, "version_minor": 0, "model_id": self.widget.model_id},
                 "text/html": self.to_html(), "text/plain": repr(self)}, raw=True)


def runs_table(workspace, **kwargs) -> RunsTable:
    """The workspace's runs as a sortable table; tick runs to overlay their curves.

    In [1]: ws.runs_table(experiment="birds")
    In [2]: ws.runs_table().sort("metric:val_loss").select(["birds-3", "birds-4"])
    In [3]: ws.runs_table(search="lr<0.1 adam", metrics=["val_loss", "acc"])
    """
    return RunsTable(workspace, **kwargs)
