"""The value readout of an SVG chart, without script: hovering a column of the plot shows the
x value there and each series' value at it (a line, a dot per series and a box of values).

The plot is cut into columns, one per logged x when there are few (so the readout names the
very point under the pointer), else ``MAX_COLUMNS`` of equal width each showing the points
nearest its middle.  Each column is an invisible rectangle with its readout next to it; CSS
``:hover`` shows the readout (an ``ipywidgets.HTML`` runs no script, and needs none for this).
"""
from __future__ import annotations

import html
import math

import numpy as np

MAX_COLUMNS = 40
CHAR_W, LINE_H = 6.5, 14
HOVER_CSS = (".celltrain-chart .readout{display:none;pointer-events:none}"
             ".celltrain-chart .hover:hover .readout{display:inline}"
             ".celltrain-chart .hit{fill:transparent;pointer-events:all}"
             ".celltrain-chart .readout rect{fill:var(--jp-layout-color0, white);"
             "stroke:var(--jp-border-color1, #999)}"
             ".celltrain-chart .readout line{stroke:var(--jp-ui-font-color2, #555);"
             "stroke-dasharray:3 2}")


def value_label(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else "–"


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


def _nearest(x: np.ndarray, columns: np.ndarray) -> np.ndarray | None:
    """For each column, the index of the finite x nearest to it (None: no finite x)."""
    ok = np.flatnonzero(np.isfinite(x))
    if ok.size == 0:
        return None
    ok = ok[np.argsort(x[ok], kind="stable")]
    xs = x[ok]
    at = np.clip(np.searchsorted(xs, columns), 1, max(xs.size - 1, 1))
    if xs.size == 1:
        return np.repeat(ok, columns.size)
    nearer = np.where(columns - xs[at - 1] <= xs[at] - columns, at - 1, at)
    return ok[nearer]


def hover_layer(series, to_px, colors, box, xlabel: str) -> list[str]:
    """``series``: (label, xs, values, y pixels) each; ``to_px`` maps x to pixels; ``box``:
    the plot's (left, top, width, height).  Returns the SVG elements of the readouts."""
    left, top, width, height = box
    xs = [x[np.isfinite(x)] for _, x, _, _ in series]
    xs_all = np.concatenate(xs) if xs else np.empty(0)
    if xs_all.size == 0:
        return []
    columns = _columns(xs_all, float(xs_all.min()), float(xs_all.max()))
    px = np.asarray(to_px(columns), dtype=float).tolist()
    edges = [left, *((a + b) / 2 for a, b in zip(px, px[1:])), left + width]
    # Per series, per column: the label's text, and the dot's pixels (None: nothing to mark).
    texts, dots = [], []
    for i, (label, x, values, py) in enumerate(series):
        at = _nearest(x, columns)
        if at is None:
            continue
        color = colors[i % len(colors)]
        dx = np.asarray(to_px(x[at]), dtype=float).tolist()
        dy = np.asarray(py, dtype=float)[at].tolist()
        texts.append([f"{label} {value_label(v)}" for v in values[at].tolist()])
        dots.append([f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{color}"/>'
                     if cy == cy else "" for cx, cy in zip(dx, dy)])     # NaN: no dot
    out = []
    for c, value in enumerate(columns.tolist()):
        rows = [f"{xlabel} {value_label(value)}", *(t[c] for t in texts)]
        w = 10 + CHAR_W * max(len(r) for r in rows)
        h = 6 + LINE_H * len(rows)
        bx = px[c] + 8 if px[c] + 8 + w <= left + width else max(px[c] - 8 - w, 0)
        text = "".join(f'<tspan x="{bx + 5:.1f}" y="{top + 1 + LINE_H * (k + 1):.1f}">'
                       f"{html.escape(r)}</tspan>" for k, r in enumerate(rows))
        out.append(f'<g class="hover" data-x="{value_label(value)}">'
                   f'<rect class="hit" x="{edges[c]:.1f}" y="{top}" '
                   f'width="{max(edges[c + 1] - edges[c], 1):.1f}" height="{height}"/>'
                   f'<g class="readout"><line x1="{px[c]:.1f}" x2="{px[c]:.1f}" y1="{top}" '
                   f'y2="{top + height}"/>{"".join(d[c] for d in dots)}'
                   f'<rect x="{bx:.1f}" y="{top + 4}" width="{w:.1f}" height="{h}" rx="3"/>'
                   f'<text class="values">{text}</text></g></g>')
    return out
