"""The System section of the widget (collapsed): a run's CPU, memory and GPU use as the host
sampled it (``celltrain.sysmetrics``), from the store's ``sys/`` series.

``SystemSection`` owns an Accordion of core ipywidgets that starts closed; while open it redraws
at most every ``REFRESH_S`` seconds (samples come every few seconds), charts as the inline SVG of
``charts.svg_panel`` with seconds since the start on x.
"""
from __future__ import annotations

import html
import re
import time

REFRESH_S = 2.0
TITLE = "System (CPU, memory, GPU)"
_GPU = re.compile(r"sys/gpu(\d+)_(util|mem_bytes)$")


def format_system(name: str, value: float | None) -> str:
    """A sample as a person reads it: "23.5 %", "1.2 GiB"."""
    if value is None:
        return "-"
    if name.endswith("_bytes"):
        for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(value) >= size:
                return f"{value / size:.1f} {unit}"
        return f"{value:.0f} B"
    return f"{value:.1f} %"


def label(name: str) -> str:
    """``sys/gpu0_util`` -> "GPU 0 utilisation"."""
    gpu = _GPU.match(name)
    if gpu:
        return f"GPU {gpu.group(1)} " + ("utilisation" if gpu.group(2) == "util" else "memory")
    return {"sys/cpu_percent": "CPU", "sys/mem_bytes": "memory",
            "sys/mem_percent": "memory of the limit"}.get(name, name.removeprefix("sys/"))


def panels(series: dict[str, dict]) -> list:
    """(title, [(label, seconds, values)]) per chart: CPU %, memory (MiB), and each GPU's
    utilisation % and memory (MiB)."""
    out = []
    for name in sorted(series, key=lambda n: (n.startswith("sys/gpu"), n)):
        if name == "sys/mem_percent":
            continue             # the memory chart's title says the limit's share instead
        s = series[name]
        scale = 2**20 if name.endswith("_bytes") else 1
        unit = "MiB" if scale > 1 else "%"
        title = f"{label(name)} ({unit})"      # one series, named as its chart: no legend
        out.append((title, [(title, s["t"], [None if v is None else v / scale
                                             for v in s["v"]])]))
    return out


def summary_html(latest: dict[str, float]) -> str:
    """The last sample, one "name value" pair after another."""
    if not latest:
        return ('<div class="celltrain-system-empty" style="color:var(--jp-ui-font-color2, '
                '#777)">no samples yet (the host samples every few seconds; '
                'CELLTRAIN_SYS_INTERVAL)</div>')
    cells = "".join(f'<span style="margin-right:1.5em"><b>{html.escape(label(n))}</b> '
                    f"{html.escape(format_system(n, v))}</span>" for n, v in latest.items())
    return f'<div class="celltrain-system-latest" style="font-size:12px">{cells}</div>'


def section_html(series: dict[str, dict], latest: dict[str, float]) -> str:
    from . import charts
    body = "".join(charts.svg_panel(title, lines, xlabel="seconds")
                   for title, lines in panels(series))
    return (f'<div class="celltrain-system">{summary_html(latest)}<div style="display:flex;'
            f'flex-wrap:wrap;gap:6px;margin-top:4px">{body}</div></div>')


class SystemSection:
    """The widget's collapsed System accordion; ``update()`` redraws it when open and due."""

    def __init__(self, store, run_id: str, get_time=time.monotonic):
        import ipywidgets as w
        self.store, self.run_id, self.get_time = store, run_id, get_time
        self.html = w.HTML()
        self.box = w.Accordion(children=[self.html], selected_index=None)
        self.box.set_title(0, TITLE)
        self.box.add_class("celltrain-system-box")
        self.drawn_at = None
        self.box.observe(lambda _: self.update(force=True), names="selected_index")

    def update(self, force: bool = False) -> bool:
        """Redraw if open and ``REFRESH_S`` passed (or ``force``); whether it drew."""
        now = self.get_time()
        if self.box.selected_index is None:
            return False
        if not force and self.drawn_at is not None and now - self.drawn_at < REFRESH_S:
            return False
        record = self.store.get_run(self.run_id) or {}
        series = self.store.system_series(self.run_id, since=record.get("started"))
        self.html.value = section_html(series, self.store.latest_system(self.run_id))
        self.drawn_at = now
        return True

    def widgets(self) -> list:
        return [self.html, self.box]
