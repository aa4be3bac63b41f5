"""What the views' browser tests share: a notebook to open, the theme to set, colours as seen.

Colours are measured as the browser computes them (a canvas turns any CSS colour, ``color-mix``
included, into RGB), and text is judged by its WCAG contrast against what lies under it.
"""
from __future__ import annotations

import json
import urllib.request

import nbformat

THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}
READABLE = 4.5       # WCAG AA contrast for body text

# In the page: rgb(css colour), the effective background of an element (its own and its
# ancestors' backgrounds blended), the colour of its text, and the contrast of two colours.
COLOUR_JS = """
window.ctRgb = c => {
    const cv = document.createElement('canvas'); cv.width = cv.height = 1;
    const x = cv.getContext('2d');
    x.clearRect(0, 0, 1, 1); x.fillStyle = c; x.fillRect(0, 0, 1, 1);
    const d = x.getImageData(0, 0, 1, 1).data;
    return [d[0], d[1], d[2], d[3] / 255];
};
window.ctBackground = el => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
        const c = ctRgb(getComputedStyle(e).backgroundColor);
        if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let out = [255, 255, 255];
    for (const c of layers.reverse())
        out = out.map((v, i) => c[i] * c[3] + v * (1 - c[3]));
    return out;
};
window.ctLuminance = c => {
    const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
};
window.ctContrast = (a, b) => {
    const [hi, lo] = [ctLuminance(a), ctLuminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
};
window.ctTextContrast = (el, bgEl) => {
    const style = getComputedStyle(el);
    const ink = ctRgb(el instanceof SVGElement ? style.fill : style.color);
    return ctContrast(ink, ctBackground(bgEl || el));
};
"""


def set_theme(base: str, token: str, theme: str) -> None:
    """Choose JupyterLab's theme through its settings REST API (before the page loads)."""
    body = json.dumps({"raw": json.dumps({"theme": THEMES[theme]})}).encode()
    request = urllib.request.Request(
        f"{base}/lab/api/settings/@jupyterlab/apputils-extension:themes", data=body,
        method="PUT", headers={"Authorization": f"token {token}",
                               "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).close()


def write_notebook(path, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(code) for code in cells]
    nbformat.write(nb, path)


def open_notebook(page, base: str, token: str, name: str, app: str = "lab") -> None:
    path = "lab/tree" if app == "lab" else "notebooks"
    page.goto(f"{base}/{path}/{name}?token={token}")
    page.add_script_tag(content=COLOUR_JS)


def contrast(page, selector: str, background: str | None = None) -> float:
    """The contrast of the first visible ``selector``'s text with what lies under it."""
    return page.evaluate(
        "([s, b]) => { const el = [...document.querySelectorAll(s)].find(e => e.getClientRects().length);"
        " if (!el) throw new Error('nothing visible matches ' + s);"
        " const bg = b ? el.closest(b) || document.querySelector(b) : el;"
        " return ctTextContrast(el, bg); }", [selector, background])


def background(page, selector: str) -> list[float]:
    return page.evaluate("s => ctBackground(document.querySelector(s))", selector)


def check_widget_theme(page, theme: str, progress_text: str) -> None:
    """The run widget follows ``theme``: its charts' background is the theme's (dark in dark,
    not a white box), and the chart text, the header and the progress line (the element that
    shows ``progress_text``) read at WCAG AA contrast."""
    page.locator(".celltrain-run .celltrain-charts svg").first.wait_for(timeout=60_000)
    chart_bg = background(page, ".celltrain-run .celltrain-charts svg")
    if theme == "dark":
        assert max(chart_bg) < 80, f"a bright chart in the dark theme: rgb{tuple(chart_bg)}"
    else:
        assert min(chart_bg) > 230, f"a dark chart in the light theme: rgb{tuple(chart_bg)}"
    # Tick labels and the title on the chart; the header and the progress text on the cell.
    assert contrast(page, ".celltrain-run .celltrain-charts svg text") >= READABLE
    assert contrast(page, ".celltrain-run .widget-html-content b") >= READABLE
    progress = page.locator(".celltrain-run .widget-html-content", has_text=progress_text).first
    progress.wait_for(timeout=30_000)
    assert progress.evaluate("e => ctTextContrast(e)") >= READABLE
