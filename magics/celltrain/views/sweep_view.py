"""``sweep.show()``: a sweep's trials table, best-so-far curve, every trial's metric overlaid
(stopped ones grey) and parallel coordinates of params against the metric.

Everything is drawn as HTML and inline SVG from the store (``views/charts.py`` for the line
charts), so it renders wherever core widgets render; the static copy below the widget is the
same HTML, for saved notebooks.
"""
from __future__ import annotations

import html
import math
import threading
import time

from .charts import BACKGROUND, COLORS, FRAME, INK, MUTED_INK, svg_panel

STOPPED_COLOR = "#bbbbbb"
MAX_POINTS = 300          # per trial in the overlay: a stride keeps the SVG small
PC_WIDTH, PC_HEIGHT, PC_PAD = 520, 230, 40
SORT_KEYS = ("value", "trial", "status", "steps")


def sweep_data(sweep) -> dict:
    """What the view draws, read from the store: record, settings, trials, series."""
    store, cfg = sweep.workspace.store, sweep.settings
    trials = sweep.trials()
    series = {}
    for t in trials:
        points = [(s, v) for _, _, s, v, _ in store.metric_series(t["run"], cfg["metric"])
                  if v is not None]
        stride = max(1, len(points) // MAX_POINTS)
        series[t["run"]] = points[::stride]
    return {"record": sweep.record, "cfg": cfg, "trials": trials, "series": series}


def best_so_far(trials: list[dict], goal: str) -> tuple[list[int], list[float]]:
    """The best final value after each completed trial, in the order they ended."""
    done = sorted((t for t in trials if t["status"] == "Completed" and t["value"] is not None),
                  key=lambda t: t["ended"] or 0)
    xs, ys, best = [], [], None
    for i, t in enumerate(done, 1):
        v = t["value"]
        best = v if best is None or (v > best if goal == "maximize" else v < best) else best
        xs.append(i)
        ys.append(best)
    return xs, ys


def sort_trials(trials: list[dict], key: str, goal: str) -> list[dict]:
    if key == "value":
        sign = -1 if goal == "maximize" else 1
        return sorted(trials, key=lambda t: (t["value"] is None, sign * (t["value"] or 0)))
    return sorted(trials, key=lambda t: (str(t[key]) if key == "status" else t[key]))


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def trials_table_html(data: dict, sort_by: str = "value") -> str:
    cfg = data["cfg"]
    names = list(cfg["space"])
    best = (data["record"]["progress"] or {}).get("best") or {}
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["trial", "run", "status", cfg["metric"], "steps", *names])
    rows = []
    for t in sort_trials(data["trials"], sort_by, cfg["goal"]):
        status = t["status"] + (" (stopped)" if t["pruned"] else "")
        style = ' style="font-weight:600"' if t["run"] == best.get("run") else ""
        title = f' title="{html.escape(t["reason"])}"' if t["reason"] else ""
        cells = [t["trial"], t["run"], status, t["value"], t["steps"],
                 *[t["params"].get(n) for n in names]]
        rows.append(f'<tr class="trial"{style}{title}>'
                    + "".join(f"<td>{_fmt(c)}</td>" for c in cells) + "</tr>")
    return ('<table class="celltrain-trials" style="border-collapse:collapse;font-size:12px">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _axis_position(value, spec: dict, values: list) -> float | None:
    """Where a param's value sits on its axis, 0..1 (log for loguniform, index for choice)."""
    if value is None:
        return None
    if spec["kind"] == "choice":
        options = [repr(v) for v in spec["values"]]
        return options.index(repr(value)) / max(len(options) - 1, 1) if repr(value) in options \
            else None
    lo, hi = spec["low"], spec["high"]
    if spec["kind"] == "loguniform":
        value, lo, hi = math.log10(value), math.log10(lo), math.log10(hi)
    return (value - lo) / (hi - lo) if hi > lo else 0.5


def parallel_coordinates_svg(data: dict) -> str:
    """One axis per param and one for the metric; one line per trial with a value, coloured
    from worst (light) to best (dark); stopped trials grey."""
    cfg = data["cfg"]
    names = list(cfg["space"])
    trials = [t for t in data["trials"] if t["value"] is not None]
    axes = names + [cfg["metric"]]
    w, h, pad = PC_WIDTH, PC_HEIGHT, PC_PAD
    step = (w - 2 * pad) / max(len(axes) - 1, 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'class="celltrain-parallel" style="font:10px sans-serif;background:{BACKGROUND};'
           f'fill:{INK}">',
           f'<text x="{w / 2}" y="14" text-anchor="middle" style="font-size:12px;'
           f'font-weight:600">params vs {html.escape(cfg["metric"])}</text>']
    values = [t["value"] for t in trials]
    lo, hi = (min(values), max(values)) if values else (None, None)
    for i, name in enumerate(axes):
        x = pad + i * step
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{pad}" y2="{h - pad}" '
                   f'style="stroke:{FRAME}"/>'
                   f'<text x="{x:.1f}" y="{h - pad + 14}" text-anchor="middle">'
                   f"{html.escape(name)}</text>")
        spec = cfg["space"].get(name) if i < len(names) else None
        ends = ((spec["values"][0], spec["values"][-1]) if spec and spec["kind"] == "choice"
                else (spec["low"], spec["high"]) if spec else (lo, hi))
        last = i == len(axes) - 1 and i > 0      # its labels go left of it, inside the chart
        for y, label in ((h - pad + 3, ends[0]), (pad - 4, ends[1])):
            out.append(f'<text x="{x - 3 if last else x + 3:.1f}" y="{y}" '
                       f'style="fill:{MUTED_INK}" '
                       f'text-anchor="{"end" if last else "start"}">{_fmt(label)}</text>')
    if not trials:
        out.append(f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle">no values yet</text>')
        return "".join(out) + "</svg>"
    goal_max = cfg["goal"] == "maximize"
    for t in sorted(trials, key=lambda t: t["value"] if goal_max else -t["value"]):
        quality = (t["value"] - lo) / (hi - lo) if hi > lo else 1.0
        quality = quality if goal_max else 1 - quality
        color = STOPPED_COLOR if t["pruned"] else f"hsl(215,70%,{80 - 55 * quality:.0f}%)"
        spots = [_axis_position(t["params"].get(n), cfg["space"][n], values) for n in names]
        spots.append((t["value"] - lo) / (hi - lo) if hi > lo else 0.5)
        if any(s is None for s in spots):
            continue
        points = " ".join(f"{pad + i * step:.1f},{h - pad - s * (h - 2 * pad):.1f}"
                          for i, s in enumerate(spots))
        out.append(f'<polyline class="trial" points="{points}" fill="none" stroke="{color}" '
                   f'stroke-width="1.5"><title>trial {t["trial"]}: {_fmt(t["value"])}</title>'
                   "</polyline>")
    return "".join(out) + "</svg>"


def charts_html(data: dict) -> str:
    cfg, trials = data["cfg"], data["trials"]
    xs, ys = best_so_far(trials, cfg["goal"])
    best = svg_panel(f"best {cfg['metric']} so far", [("best", xs, ys)], xlabel="completed trials")
    lines, colors = [], []
    for i, t in enumerate(sorted(trials, key=lambda t: t["trial"])):
        points = data["series"].get(t["run"]) or []
        if points:
            label = f"trial {t['trial']}" + (" (stopped)" if t["pruned"] else "")
            lines.append((label, [p[0] for p in points], [p[1] for p in points]))
            colors.append(STOPPED_COLOR if t["pruned"] else COLORS[i % len(COLORS)])
    overlay = svg_panel(f"{cfg['metric']} of every trial", lines, colors=tuple(colors) or COLORS)
    return ('<div class="celltrain-sweep-charts" style="display:flex;flex-wrap:wrap;gap:6px">'
            f"{best}{overlay}{parallel_coordinates_svg(data)}</div>")


def header_html(data: dict) -> str:
    r = data["record"]
    desc = (r["progress"] or {}).get("desc") or "no trial finished yet"
    reason = f" — {html.escape(r['reason'])}" if r["reason"] else ""
    return (f"<b>sweep {html.escape(r['experiment'])} #{r['number']}</b> "
            f"<code>{html.escape(r['id'])}</code> <b>{html.escape(r['status'])}</b>{reason}"
            f"<div>{html.escape(desc)}</div>")


def sweep_html(data: dict, sort_by: str = "value") -> str:
    """The whole view as one HTML fragment (the static copy)."""
    return (f'<div class="celltrain-sweep">{header_html(data)}{charts_html(data)}'
            f"{trials_table_html(data, sort_by)}</div>")


class SweepWidget:
    """The live view: redrawn from the store every second until the sweep ends."""

    def __init__(self, sweep, live: bool = True, poll: float = 1.0):
        import ipywidgets as w
        self.sweep, self.live, self.poll = sweep, live, poll
        self.header, self.charts, self.table = w.HTML(), w.HTML(), w.HTML()
        self.sort = w.Dropdown(options=SORT_KEYS, value="value", description="sort by")
        self.cancel_button = w.Button(description="Cancel sweep", button_style="warning")
        self.widget = w.VBox([self.header, self.charts,
                              w.HBox([self.sort, self.cancel_button]), self.table])
        self.sort.observe(lambda _: self.draw(), names="value")
        self.cancel_button.on_click(lambda _: self.sweep.cancel(wait=False))
        self.data = None
        self._stop = threading.Event()
        self._static = None
        self.draw(fresh=True)

    def draw(self, fresh: bool = False) -> None:
        if fresh or self.data is None:
            self.data = sweep_data(self.sweep)
        self.header.value = header_html(self.data)
        self.charts.value = charts_html(self.data)
        self.table.value = trials_table_html(self.data, self.sort.value)
        ended = self.data["record"]["status"] in ("Completed", "Failed", "Canceled")
        self.cancel_button.disabled = ended
        if self._static is not None:
            self._static.update({"text/html": self.static_html()}, raw=True)

    def static_html(self) -> str:
        return sweep_html(self.data, self.sort.value)

    def display(self) -> "SweepWidget":
        from IPython import get_ipython
        from IPython.display import display
        if get_ipython() is None:
            return self
        display(self.widget)
        self._static = display({"text/html": self.static_html(),
                                "text/plain": f"celltrain sweep {self.sweep.id}"},
                               raw=True, display_id=True)
        return self

    def follow(self) -> None:
        while not self._stop.wait(self.poll):
            self.draw(fresh=True)
            if self.data["record"]["status"] in ("Completed", "Failed", "Canceled"):
                return

    def start(self) -> "SweepWidget":
        if self.live:
            threading.Thread(target=self.follow, daemon=True,
                             name=f"celltrain-sweep-{self.sweep.id}").start()
        return self

    def close(self) -> None:
        self._stop.set()


def show_sweep(sweep, *, live: bool = True) -> SweepWidget:
    """Display the sweep's view and follow it until it ends; returns the widget."""
    widget = SweepWidget(sweep, live=live)
    widget.display()
    return widget.start()
