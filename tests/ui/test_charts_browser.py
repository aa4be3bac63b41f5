"""Charts a person can read (issue 15, item 6), in the notebook widget and the run panel, in a
real JupyterLab 4 and Chromium, light and dark: the legend is outside the plot, both axes are
labelled, ticks are at least 11 px and whole numbers on a step axis, hovering the plot reads out
the value of the point under the pointer, Enlarge makes a chart bigger and smoothing changes
what is drawn (the raw values stay, faint).  Runs are local (no container): what is tested is
the view.  Screenshots go to ``screenshots/charts-*``.
"""
from __future__ import annotations

import re
import textwrap

import pytest

from celltrain import states
from test_widget_browser import run_first_cell
from views import open_notebook, set_theme, write_notebook

pytestmark = pytest.mark.browser
UI_TIMEOUT_MS = 30_000
STEPS = 30

# A noisy falling loss: what smoothing is for.
TRAIN = f"""
from celltrain import log
for i in range({STEPS}):
    log("loss", 2.0 / (1 + i) + 0.05 * (i % 3 - 1), step=i)
    log("val_loss", 2.4 / (1 + i), step=i)
"""


def loss(i: int) -> float:
    return 2.0 / (1 + i) + 0.05 * (i % 3 - 1)


def _finished_run(ws, make_source):
    run = ws.experiment("charts").submit("train.py", make_source(textwrap.dedent(TRAIN)),
                                         target="local")
    assert run.wait(timeout=120) == states.COMPLETED, run.logs()
    return run


def _overlap(a: dict, b: dict) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


def _number(text: str, after: str) -> float:
    found = re.search(rf"{re.escape(after)}\s*([-+0-9.e]+)", text)
    assert found, f"no value after {after!r} in {text!r}"
    return float(found.group(1))


@pytest.mark.parametrize("app", ["lab", "notebook"])
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_widget_chart_has_an_outside_legend_labelled_axes_a_readout_enlarge_and_smoothing(
        app, theme, workspace, make_source, monkeypatch, request, page, screenshots):
    """In JupyterLab and in Notebook 7 (the notebook's own page, with its own narrower
    layout and without JupyterLab's shell)."""
    monkeypatch.setenv("CELLTRAIN_WORKSPACE", str(workspace.path))
    run = _finished_run(workspace, make_source)
    base, token, root = request.getfixturevalue(f"{app}_server")
    shot = "widget" if app == "lab" else "widget-notebook7"
    set_theme(base, token, theme)
    write_notebook(root / "charts.ipynb", f"from celltrain import Workspace\n"
                   f"Workspace({str(workspace.path)!r}, reconcile=False).run({run.id!r}).show()")
    open_notebook(page, base, token, "charts.ipynb", app)
    run_first_cell(page, app)
    svg = page.locator(".celltrain-run .celltrain-charts svg").first
    svg.locator("polyline.series").first.wait_for(timeout=60_000)

    # The legend sits above the plot, not on it; both axes say what they show.
    plot = svg.locator("rect.plot").bounding_box()
    items = svg.locator("g.legend-item")
    assert items.count() == 2
    for i in range(items.count()):
        assert not _overlap(items.nth(i).bounding_box(), plot), "legend on the data"
    assert svg.locator("text.axis-label.x").text_content() == "step"
    assert svg.locator("text.axis-label.y").text_content() == "loss"
    sizes = svg.locator("text.tick").evaluate_all(
        "ts => ts.map(t => parseFloat(getComputedStyle(t).fontSize))")
    assert sizes and min(sizes) >= 11, sizes
    ticks = svg.locator("text.tick.x").all_text_contents()
    assert all(re.fullmatch(r"\d+", t) for t in ticks), f"steps are whole numbers: {ticks}"

    # Hovering step 12 reads out step 12 and its values.
    page.mouse.move(plot["x"] + plot["width"] * 12 / (STEPS - 1), plot["y"] + plot["height"] / 2)
    readout = svg.locator("g.hover .readout >> visible=true")
    readout.first.wait_for(timeout=UI_TIMEOUT_MS)
    text = readout.first.text_content()
    assert _number(text, "step") == 12, text
    assert _number(text, "loss") == pytest.approx(loss(12), rel=1e-3), text
    assert _number(text, "val_loss") == pytest.approx(2.4 / 13, rel=1e-3), text
    page.locator(".celltrain-run").first.screenshot(
        path=str(screenshots / f"charts-{shot}-hover-{theme}.png"))

    # Smoothing draws the EMA over the raw values, which stay, faint.
    raw = svg.locator('polyline.series[data-label="loss"]').get_attribute("points")
    readout_box = page.locator(".celltrain-smoothing .widget-readout")
    readout_box.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("0.8")
    page.keyboard.press("Enter")
    smoothed = page.locator('.celltrain-run svg polyline.smoothed[data-smoothed="loss"]').first
    smoothed.wait_for(timeout=UI_TIMEOUT_MS)
    assert smoothed.get_attribute("points") != raw
    faint = page.locator('.celltrain-run svg polyline.raw[data-label="loss"]').first
    assert faint.get_attribute("points") == raw and float(
        faint.get_attribute("stroke-opacity")) < 0.5
    page.locator(".celltrain-run").first.screenshot(
        path=str(screenshots / f"charts-{shot}-smoothed-{theme}.png"))

    # Enlarge: the chart is bigger.
    before = page.locator(".celltrain-run .celltrain-charts svg").first.bounding_box()
    page.locator(".celltrain-run .celltrain-enlarge").click()
    page.wait_for_function(
        "w => document.querySelector('.celltrain-run .celltrain-charts svg')"
        ".getBoundingClientRect().width > 1.5 * w", arg=before["width"], timeout=UI_TIMEOUT_MS)
    after = page.locator(".celltrain-run .celltrain-charts svg").first.bounding_box()
    assert after["height"] > before["height"]
    page.locator(".celltrain-run").first.screenshot(
        path=str(screenshots / f"charts-{shot}-enlarged-{theme}.png"))


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_run_panel_chart_has_an_outside_legend_labelled_axes_a_readout_enlarge_and_smoothing(
        theme, workspace, make_source, monkeypatch, request, page, screenshots):
    monkeypatch.setenv("CELLTRAIN_WORKSPACE", str(workspace.path))
    run = _finished_run(workspace, make_source)
    base, token, root = request.getfixturevalue("lab_server")
    set_theme(base, token, theme)
    page.goto(f"{base}/lab?token={token}")
    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="celltrain-sidebar"]').click()
    row = page.locator(f'#celltrain-sidebar .ct-run[data-run-id="{run.id}"]')
    row.wait_for(timeout=60_000)
    row.locator(".ct-run-name").click()
    box = page.locator(f'#celltrain-run-{run.id} .ct-chart-box[data-metric="loss"]')
    box.locator(".ct-line").nth(1).wait_for(timeout=UI_TIMEOUT_MS)

    # The legend is below the plot, not on it; both axes are labelled; steps whole numbers.
    over = box.locator(".u-over")
    plot = over.bounding_box()
    assert not _overlap(box.locator(".u-legend").bounding_box(), plot), "legend on the data"
    assert box.locator(".ct-x-label").inner_text() == "step"
    assert box.locator(".ct-y-label").inner_text() == "loss"
    for label in (".ct-x-label", ".ct-y-label", ".u-legend"):
        assert not _overlap(box.locator(label).bounding_box(), plot)
        assert box.locator(label).evaluate("e => parseFloat(getComputedStyle(e).fontSize)") >= 11
    ticks = box.get_attribute("data-x-ticks").split()
    assert ticks and all(re.fullmatch(r"\d+", t) for t in ticks), ticks

    # Hovering step 12 reads out step 12 and its values in the legend.
    page.mouse.move(plot["x"] + plot["width"] * 12 / (STEPS - 1), plot["y"] + plot["height"] / 2)
    values = box.locator(".u-legend .u-series .u-value")
    page.wait_for_function("e => e.textContent.trim() === '12'",
                           arg=values.nth(0).element_handle(), timeout=UI_TIMEOUT_MS)
    assert float(values.nth(1).inner_text()) == pytest.approx(loss(12), rel=1e-3)
    assert float(values.nth(2).inner_text()) == pytest.approx(2.4 / 13, rel=1e-3)
    box.screenshot(path=str(screenshots / f"charts-panel-hover-{theme}.png"))
    page.mouse.move(0, 0)

    # Smoothing changes what is drawn and keeps the raw series (faint) in the legend.
    canvas = box.locator("canvas")
    drawn = canvas.evaluate("c => c.toDataURL()")
    box.locator(".ct-smoothing").fill("0.8")
    page.wait_for_function("e => e.querySelectorAll('.ct-line').length === 4",
                           arg=box.element_handle(), timeout=UI_TIMEOUT_MS)
    assert box.locator(".ct-line").all_inner_texts()[0].startswith("loss (raw)")
    assert canvas.evaluate("c => c.toDataURL()") != drawn, "smoothing drew the same picture"
    box.screenshot(path=str(screenshots / f"charts-panel-smoothed-{theme}.png"))

    # Enlarge: the chart is bigger.
    box.locator(".ct-enlarge").click()
    page.wait_for_function("([e, w]) => e.querySelector('.u-over').getBoundingClientRect()"
                           ".width > 1.5 * w", arg=[box.element_handle(), plot["width"]],
                           timeout=UI_TIMEOUT_MS)
    assert over.bounding_box()["height"] > plot["height"]
    page.screenshot(path=str(screenshots / f"charts-panel-enlarged-{theme}.png"),
                    full_page=True)

