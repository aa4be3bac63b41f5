"""Small metric charts: inline SVG for live views, a matplotlib PNG for saved notebooks.

Live charts are SVG text in an ``ipywidgets.HTML``: the browser draws them, so the kernel only
formats at most a few thousand numbers per redraw (about a millisecond) instead of rasterizing
with matplotlib (0.2-1 s a frame on a busy 2-core machine, which would make a watching kernel
sluggish).  No front-end code of ours is needed, so it renders wherever core widgets render.
For saved notebooks (nbviewer, GitHub, nbconvert), where SVG in HTML may be sanitized away,
``png_panels`` draws the same panels once with matplotlib (Agg, no pyplot).

A panel is ``(title, [(label, xs, ys), ...])``; series should be downsampled already.
"""
from __future__ import annotations

import html
import io
import math

import numpy as np

from .chart_hover import HOVER_CSS, hover_layer

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")
WIDTH, HEIGHT = 400, 260                 # a panel; enlarged, one a row:
LARGE_WIDTH, LARGE_HEIGHT = 900, 440
LEFT, RIGHT, BOTTOM = 64, 12, 36         # room for tick labels and the axis labels
TITLE_H, LEGEND_ROW, LEGEND_MAX = 22, 15, 8
FONT_PX, CHAR_W = 11, 6.5                # tick and legend text; its width per character, about
# JupyterLab's theme variables (Lab and Notebook 7 define them; the fallbacks are the light
# theme's, for front ends without them): a chart follows the light or dark theme.
BACKGROUND = "var(--jp-layout-color0, white)"
INK = "var(--jp-ui-font-color1, #222)"
MUTED_INK = "var(--jp-ui-font-color2, #555)"
FRAME = "var(--jp-border-color1, #999)"
GRID = "var(--jp-border-color2, #e5e5e5)"


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values (1, 2, 5 times a power of ten) covering [lo, hi]; on an integer axis
    (steps, epochs) whole numbers only."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if integer:
        step = max(step, 1)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a log axis given in log10 units: 1, 2, 5 times powers of ten, or only powers
    of ten when there are many decades."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    values = [math.log10(m) + k for k in range(math.floor(lo), math.ceil(hi) + 1)
              for m in (1, 2, 5)]
    inside = [v for v in values if lo - 1e-9 <= v <= hi + 1e-9]
    if len(inside) > 6:
        inside = [v for v in inside if abs(v - round(v)) < 1e-9]
    if len(inside) >= 2:
        return inside
    return [math.log10(v) for v in nice_ticks(10 ** lo, 10 ** hi) if v > 0]   # a narrow range


def _tick_label(value: float, log: bool) -> str:
    if log:
        value = 10 ** value
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.0e}"


def _segments(xs: np.ndarray, ys: np.ndarray):
    """Runs of finite points (a NaN breaks the line)."""
    ok = np.isfinite(xs) & np.isfinite(ys)
    if ok.all():
        yield xs, ys
        return
    edges = np.flatnonzero(np.diff(np.concatenate(([0], ok.view(np.int8), [0]))))
    for start, stop in zip(edges[::2], edges[1::2]):
        yield xs[start:stop], ys[start:stop]


def ema(values, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start (so the
    first value is itself, not pulled to 0); NaNs stay NaN and do not enter the average."""
    y = np.asarray(values, dtype=float)
    out = np.full(y.shape, np.nan)
    if not 0 < weight < 1:
        return y.copy()
    last, count = 0.0, 0
    for i, v in enumerate(y.tolist()):
        if math.isfinite(v):
            last = last * weight + (1 - weight) * v
            count += 1
            out[i] = last / (1 - weight ** count)
    return out


def _legend(labels, colors, left: int, width: int) -> tuple[list[str], int]:
    """Legend entries in rows above the plot (never on the data); returns them and the height."""
    out, x, row = [], left, 0
    for i, label in enumerate(labels[:LEGEND_MAX]):
        w = 22 + CHAR_W * len(label)
        if x > left and x + w > left + width:
            x, row = left, row + 1
        y = TITLE_H + LEGEND_ROW * row + 11
        out.append(f'<g class="legend-item"><rect x="{x}" y="{y - 5}" width="14" height="3" '
                   f'fill="{colors[i % len(colors)]}"/><text x="{x + 18}" y="{y}">'
                   f"{html.escape(label)}</text></g>")
        x += w + 10
    return out, (LEGEND_ROW * (row + 1) + 4 if out else 0)


def svg_panel(title: str, lines, *, xlabel: str = "step", log_y: bool = False,
              width: int = WIDTH, height: int = HEIGHT, colors=COLORS,
              smoothing: float = 0.0) -> str:
    """One chart as an ``<svg>`` element: the title, a legend above the plot, labelled axes
    (x: ``xlabel``, y: the title), one polyline per series (with ``smoothing`` > 0 the EMA drawn
    over the raw values, which show faint) and a value readout where the pointer is."""
    prepared = []
    for label, xs, ys in lines:
        x = np.asarray(xs, dtype=float)
        raw = np.asarray(ys, dtype=float)
        y = raw
        if log_y:
            with np.errstate(divide="ignore", invalid="ignore"):
                y = np.where(raw > 0, np.log10(np.where(raw > 0, raw, 1.0)), np.nan)
        prepared.append((label, x, y, raw))
    finite_x = [x[np.isfinite(x)] for _, x, _, _ in prepared]
    finite_y = [y[np.isfinite(y)] for _, _, y, _ in prepared]
    xs_all = np.concatenate(finite_x) if finite_x else np.empty(0)
    ys_all = np.concatenate(finite_y) if finite_y else np.empty(0)
    show_legend = len(prepared) > 1 or (bool(prepared) and prepared[0][0] != title)
    legend, legend_h = _legend([p[0] for p in prepared] if show_legend else [], colors,
                               LEFT, width - LEFT - RIGHT)
    top = TITLE_H + legend_h + 6
    pw, ph = width - LEFT - RIGHT, height - top - BOTTOM
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" class="celltrain-chart" '
           f'style="font:{FONT_PX}px sans-serif;background:{BACKGROUND};fill:{INK}">',
           f"<style>{HOVER_CSS}</style>",
           f'<text class="title" x="{LEFT + pw / 2}" y="15" text-anchor="middle" '
           f'style="font-size:12px;font-weight:600">{html.escape(title)}'
           f'{" (log)" if log_y else ""}</text>', *legend]
    if xs_all.size == 0 or ys_all.size == 0:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="empty">'
                   f'no values{" above 0" if log_y else ""} yet</text></svg>')
        return "".join(out)
    x0, x1 = float(xs_all.min()), float(xs_all.max())
    y0, y1 = float(ys_all.min()), float(ys_all.max())
    integer_x = bool(np.all(xs_all == np.round(xs_all)))      # steps: no tick at 0.5
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5      # one point: its own x in the middle, not -1..1
    if y1 == y0:
        pad = abs(y0) * 0.05 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    else:
        pad = (y1 - y0) * 0.05
        y0, y1 = y0 - pad, y1 + pad
    sx, sy = pw / (x1 - x0), ph / (y1 - y0)
    out.append(f'<rect class="plot" x="{LEFT}" y="{top}" width="{pw}" height="{ph}" '
               f'fill="none" style="stroke:{FRAME}" stroke-width="0.8"/>')
    for t in (log_ticks(y0, y1) if log_y else nice_ticks(y0, y1)):
        py = top + ph - (t - y0) * sy
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py:.1f}" y2="{py:.1f}" '
                   f'style="stroke:{GRID}"/><text class="tick y" x="{LEFT - 4}" '
                   f'y="{py + 4:.1f}" text-anchor="end">{_tick_label(t, log_y)}</text>')
    for t in nice_ticks(x0, x1, count=max(3, pw // 70), integer=integer_x):
        px = LEFT + (t - x0) * sx
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{top + ph}" '
                   f'style="stroke:{GRID}"/><text class="tick x" x="{px:.1f}" '
                   f'y="{top + ph + 14}" text-anchor="middle">{_tick_label(t, False)}</text>')
    out.append(f'<text class="axis-label x" x="{LEFT + pw / 2}" y="{height - 5}" '
               f'text-anchor="middle" style="fill:{MUTED_INK}">{html.escape(xlabel)}</text>'
               f'<text class="axis-label y" transform="translate(13 {top + ph / 2:.1f}) '
               f'rotate(-90)" text-anchor="middle" style="fill:{MUTED_INK}">'
               f"{html.escape(title)}</text>")
    to_px = (lambda x: np.round(LEFT + (x - x0) * sx, 1),
             lambda y: np.round(top + ph - (y - y0) * sy, 1))
    smooth = 0 < smoothing < 1
    for i, (label, x, y, _) in enumerate(prepared):
        color = colors[i % len(colors)]
        out += _polylines(to_px[0](x), to_px[1](y), color, label,
                          'class="series raw" stroke-opacity="0.25"' if smooth
                          else 'class="series"')
        if smooth:
            out += _polylines(to_px[0](x), to_px[1](ema(y, smoothing)), color, label,
                              'class="series smoothed"', data="data-smoothed")
    out += hover_layer([(label, x, raw, to_px[1](y)) for label, x, y, raw in prepared],
                       to_px[0], colors, (LEFT, top, pw, ph), xlabel)
    out.append("</svg>")
    return "".join(out)


def _polylines(px, py, color: str, label: str, attrs: str, data: str = "data-label"):
    out = []
    for seg_x, seg_y in _segments(px, py):
        if seg_x.size == 1:
            out.append(f'<circle cx="{seg_x[0]}" cy="{seg_y[0]}" r="2.5" fill="{color}"/>')
            continue
        xy = np.empty(2 * seg_x.size)
        xy[0::2], xy[1::2] = seg_x, seg_y
        points = ("%.1f,%.1f " * seg_x.size % tuple(xy.tolist()))[:-1]   # fastest in C
        out.append(f'<polyline {attrs} {data}="{html.escape(label)}" points="{points}" '
                   f'fill="none" stroke="{color}" stroke-width="1.5"/>')
    return out


def svg_panels(panels, *, xlabel: str = "step", log_y: bool = False, smoothing: float = 0.0,
               large: bool = False) -> str:
    """All panels side by side, wrapping: the HTML for a live chart widget; ``large``: each
    panel enlarged to a row of its own."""
    if not panels:
        return ""
    size = {"width": LARGE_WIDTH, "height": LARGE_HEIGHT} if large else {}
    body = "".join(svg_panel(title, lines, xlabel=xlabel, log_y=log_y, smoothing=smoothing,
                             **size)
                   for title, lines in panels)
    return f'<div class="celltrain-charts" style="display:flex;flex-wrap:wrap;gap:6px">{body}</div>'


def png_panels(panels, *, xlabel: str = "step", log_y: bool = False, columns: int = 3) -> bytes:
    """The same panels as a PNG, drawn by matplotlib on a private Agg figure (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(len(panels), 1)
    cols = min(columns, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.4 * cols, 2.4 * rows), dpi=90)
    FigureCanvasAgg(fig)
    for i, (title, lines) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        positive = True
        for j, (label, xs, ys) in enumerate(lines):
            ax.plot(xs, ys, label=label, linewidth=1.2, color=COLORS[j % len(COLORS)],
                    marker="o" if len(xs) == 1 else None, markersize=3)
            y = np.asarray(ys, dtype=float)
            y = y[np.isfinite(y)]
            positive = positive and bool((y > 0).all())
        if log_y and positive:
            ax.set_yscale("log")
        if len(lines) > 1:
            ax.legend(fontsize=7, loc="best")
        ax.set_xlabel(xlabel, fontsize=8)
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no metrics", ha="center", va="center")
        ax.set_axis_off()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
