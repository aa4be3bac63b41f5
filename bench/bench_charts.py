"""Charts: uPlot (canvas) against the hand-written SVG, redrawn as a live view redraws (issue 15).

A chart of 2 series x N points (default 10,000; a noisy falling loss) is redrawn 5 times a
second, as the widget's throttle allows, in the real Chromium the browser tests use (Playwright,
headless, software rendering).  Each redraw appends 20 points and replaces the data; its cost
is the time from the update's start until the next animation frame has run (script, style,
layout and paint of that frame).  Three ways, interleaved frame by frame on the same page:

- ``svg``: the widget's SVG, made in Python by ``charts.svg_panel`` and set as the HTML
  widget's ``innerHTML`` (the browser parses and draws it); the kernel's cost of making the
  string is reported on its own.
- ``svg-1k``: the same, downsampled to the widget's ``MAX_DISPLAY_POINTS`` per series first.
- ``uplot``: uPlot 1.6 from node_modules, ``setData`` on one chart.

Also the bytes each adds to a bundle (uPlot's minified file, raw and gzipped).  Ratios are
against uPlot measured in the same run.

    .venv/bin/python bench/bench_charts.py [--points 10000] [--frames 40] [--json F]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "magics"))

import numpy as np  # noqa: E402

from celltrain.views import charts  # noqa: E402
from celltrain.views.downsample import downsample  # noqa: E402
from celltrain.views.format import MAX_DISPLAY_POINTS  # noqa: E402

UPLOT = ROOT / "node_modules" / "uplot" / "dist"
CHROMIUM = os.environ.get("CELLTRAIN_CHROMIUM", "/usr/bin/chromium")

PAGE_JS = """
window.frame = () => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
window.boxes = {};
window.box = way => boxes[way] || (boxes[way] = document.body.appendChild(
    document.createElement('div')));
window.plot = null;
// [until layout is done (script, style, layout; the canvas drawn), until the next frame ran]
window.timeSvg = async (way, html) => {
    const t0 = performance.now(); box(way).innerHTML = html;
    box(way).getBoundingClientRect(); const t1 = performance.now(); await frame();
    return [t1 - t0, performance.now() - t0]; };
window.timeUplot = async (xs, ys1, ys2) => {
    const t0 = performance.now();
    const data = [Float64Array.from(xs), Float64Array.from(ys1), Float64Array.from(ys2)];
    if (!plot) {
        plot = new uPlot({width: 330, height: 210, scales: {x: {time: false}},
            axes: [{label: 'step'}, {label: 'loss'}],
            series: [{}, {label: 'train', stroke: '#1f77b4'}, {label: 'val', stroke: '#ff7f0e'}]},
            data, box('uplot'));
    } else { plot.setData(data); }
    await Promise.resolve(); box('uplot').getBoundingClientRect();
    const t1 = performance.now(); await frame();
    return [t1 - t0, performance.now() - t0]; };
"""


def series(n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.arange(n, dtype=float)
    train = 2.0 / (1 + x / 100) + rng.normal(0, 0.05, n)
    val = 2.2 / (1 + x / 100) + rng.normal(0, 0.03, n)
    return x, train, val


def svg_for(x, a, b, limit: int | None) -> tuple[str, float]:
    t0 = time.perf_counter()
    lines = []
    for label, y in (("train_loss", a), ("val_loss", b)):
        xs, ys = (x, y) if limit is None else downsample(x, y, limit)
        lines.append((label, xs, ys))
    svg = charts.svg_panel("loss", lines)
    return svg, time.perf_counter() - t0


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--json")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(0)
    x, a, b = series(args.points + 20 * args.frames, rng)
    times = {"svg": [], "svg-1k": [], "uplot": []}
    frames = {"svg": [], "svg-1k": [], "uplot": []}
    kernel = {"svg": [], "svg-1k": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_content("<html><body></body></html>")
        page.add_style_tag(path=str(UPLOT / "uPlot.min.css"))
        page.add_script_tag(path=str(UPLOT / "uPlot.iife.min.js"))
        page.add_script_tag(content=PAGE_JS)
        ways = ["svg", "svg-1k", "uplot"]
        for frame in range(args.frames + 3):
            n = args.points + 20 * frame
            for way in ways[frame % 3:] + ways[:frame % 3]:    # each goes first in turn
                if way == "uplot":
                    spent = page.evaluate("d => timeUplot(d.x, d.a, d.b)", {
                        "x": x[:n].tolist(), "a": a[:n].tolist(), "b": b[:n].tolist()})
                else:
                    limit = MAX_DISPLAY_POINTS if way == "svg-1k" else None
                    svg, made = svg_for(x[:n], a[:n], b[:n], limit)
                    spent = page.evaluate("([w, h]) => timeSvg(w, h)", [way, svg])
                    if frame >= 3:
                        kernel[way].append(made * 1000)
                if frame >= 3:                       # the first frames warm the page up
                    times[way].append(spent[0])
                    frames[way].append(spent[1])
                time.sleep(0.05)
            time.sleep(0.2)                          # 5 redraws a second
        browser.close()

    minified = (UPLOT / "uPlot.iife.min.js").read_bytes()
    base = statistics.median(times["uplot"])
    result = {"points_per_series": args.points, "frames": args.frames,
              "load_1min": os.getloadavg()[0],
              "uplot_bytes": len(minified), "uplot_gzip_bytes": len(gzip.compress(minified)),
              "ways": {}}
    print(f"2 series x {args.points} points, {args.frames} redraws at 5/s; "
          f"load {result['load_1min']:.1f}")
    for way, values in times.items():
        row = {"browser_ms_p50": statistics.median(values), "browser_ms_p95": pct(values, 0.95),
               "ratio_to_uplot": statistics.median(values) / base,
               "to_next_frame_ms_p50": statistics.median(frames[way])}
        if way in kernel:
            row["kernel_ms_p50"] = statistics.median(kernel[way])
        result["ways"][way] = row
        extra = f", kernel {row['kernel_ms_p50']:.1f} ms" if "kernel_ms_p50" in row else ""
        print(f"  {way:7s} browser p50 {row['browser_ms_p50']:6.1f} ms, "
              f"p95 {row['browser_ms_p95']:6.1f} ms, {row['ratio_to_uplot']:.2f}x uPlot; "
              f"to the next frame p50 {row['to_next_frame_ms_p50']:5.1f} ms{extra}")
    print(f"  uPlot adds {len(minified) / 1024:.1f} KiB minified, "
          f"{result['uplot_gzip_bytes'] / 1024:.1f} KiB gzipped")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
