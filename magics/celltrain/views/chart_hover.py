"""The value readout of an SVG chart, without script: hovering a column of the plot shows the
x value there and each series' value at it (a line, a dot per series and a box of values).

The plot is cut into columns, one per logged x when there are few (so the readout names the
very point under the pointer), else ``MAX_COLUMNS`` of equal width each showing the points
nearest its middle.  Each column is an invisible rectangle with its readout next to it; CSS
``:hover`` shows the readout (an ``ipywidgets.HTML`` runs no script, and needs none for this).
"""
from __future__ import annotations

import html

import numpy as np

MAX_COLUMNS = 60
CHAR_W, LINE_H = 6.5, 14
HOVER_CSS = (".celltrain-chart .readout{visibility:hidden;pointer-events:none}"
             ".celltrain-chart .hover:hover .readout{visibility:visible}"
             ".celltrain-chart .hit{fill:transparent;pointer-events:all}"
             ".celltrain-chart .readout rect{fill:var(--jp-layout-color0, white);"
             "stroke:var(--jp-border-color1, #999)}"
             ".celltrain-chart .readout line{stroke:var(--jp-ui-font-color2, #555);"
             "stroke-dasharray:3 2}")


def value_label(v: float) -> str:
    return "–" if not np.isfinite(v) else f"{v:.4g}"


def _columns(xs: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The x values that get a readout: every logged x, or the ones nearest evenly spaced
    points when there are more than ``MAX_COLUMNS``."""
    unique = np.unique(xs)
    if unique.size <= MAX_COLUMNS:
        return unique
    centres = lo + (np.arange(MAX_COLUMNS) + 0.5) * (hi - lo) / MAX_COLUMNS
    at = np.clip(np.searchsorted(unique, centres), 1, unique.size - 1)
    nearer = np.where(centres - unique[at - 1] < unique[at] - centres, at - 1, at)
    return np.unique(unique[nearer])


def _nearest(x: np.ndarray, value: float) -> int | None:
    ok = np.flatnonzero(np.isfinite(x))
    if ok.size == 0:
        return None
    return int(ok[np.argmin(np.abs(x[ok] - value))])


def hover_layer(series, to_px, colors, box, xlabel: str) -> list[str]:
    """``series``: (label, xs, values, y pixels) each; ``to_px`` maps x to pixels; ``box``:
    the plot's (left, top, width, height).  Returns the SVG elements of the readouts."""
    left, top, width, height = box
    xs = [x[np.isfinite(x)] for _, x, _, _ in series]
    xs_all = np.concatenate(xs) if xs else np.empty(0)
    if xs_all.size == 0:
        return []
    columns = _columns(xs_all, float(xs_all.min()), float(xs_all.max()))
    px = np.asarray(to_px(columns), dtype=float)
    edges = np.concatenate(([left], (px[1:] + px[:-1]) / 2, [left + width]))
    out = []
    for c, value in enumerate(columns.tolist()):
        rows, dots = [f"{xlabel} {value_label(value)}"], []
        for i, (label, x, values, py) in enumerate(series):
            at = _nearest(x, value)
            if at is None:
                continue
            rows.append(f"{label} {value_label(float(values[at]))}")
            if np.isfinite(py[at]):
                dots.append(f'<circle cx="{float(to_px(x[at])):.1f}" cy="{py[at]:.1f}" r="3" '
                            f'fill="{colors[i % len(colors)]}"/>')
        w = 10 + CHAR_W * max(len(r) for r in rows)
        h = 6 + LINE_H * len(rows)
        bx = px[c] + 8 if px[c] + 8 + w <= left + width else px[c] - 8 - w
        bx = max(bx, 0)
        text = "".join(f'<tspan x="{bx + 5:.1f}" y="{top + 4 + LINE_H * (k + 1) - 3:.1f}">'
                       f"{html.escape(r)}</tspan>" for k, r in enumerate(rows))
        out.append(f'<g class="hover" data-x="{value_label(value)}">'
                   f'<rect class="hit" x="{edges[c]:.1f}" y="{top}" '
                   f'width="{max(edges[c + 1] - edges[c], 1):.1f}" height="{height}"/>'
                   f'<g class="readout"><line x1="{px[c]:.1f}" x2="{px[c]:.1f}" y1="{top}" '
                   f'y2="{top + height}"/>{"".join(dots)}'
                   f'<rect x="{bx:.1f}" y="{top + 4}" width="{w:.1f}" height="{h}" rx="3"/>'
                   f'<text class="values">{text}</text></g></g>')
    return out
