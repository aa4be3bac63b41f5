"""The views as a person sees them (issue 15), in a real JupyterLab 4 / Notebook 7 and Chromium.

Light and dark theme: the widget's charts and text take the theme's colours and every text
stays readable (WCAG contrast measured on the computed colours); a reopened notebook whose
widget models are gone shows the static copy and no widget error; a failure's cause shows once.
Runs are local (no container): what is tested is the view.  Screenshots go to ``screenshots/``.
"""
from __future__ import annotations

import textwrap

import pytest

from celltrain import states
from test_widget_browser import run_first_cell
from views import READABLE, background, contrast, open_notebook, set_theme, write_notebook

pytestmark = pytest.mark.browser
UI_TIMEOUT_MS = 30_000

TRAIN = """
import os
from celltrain import log, progress
for i in progress(range(30), desc="epoch"):
    log("loss", 2.0 / (1 + i), step=i)
    log("val_loss", 2.4 / (1 + i), step=i)
os.makedirs("outputs", exist_ok=True)
open("outputs/model.pt", "wb").write(b"not really weights")
"""


def _finished_run(ws, make_source, code=TRAIN, experiment="views"):
    src = make_source(textwrap.dedent(code))
    run = ws.experiment(experiment).submit("train.py", src, target="local")
    run.wait(timeout=120)
    return run


def _show_cell(ws, run) -> str:
    return (f"from celltrain import Workspace\n"
            f"Workspace({str(ws.path)!r}, reconcile=False).run({run.id!r}).show()")


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_widget_sidebar_and_pills_follow_the_theme_and_stay_readable(
        theme, workspace, make_source, monkeypatch, request, page, screenshots):
    """Item 1: in the dark theme the charts are dark, not white boxes; the widget's text, the
    sidebar's status pill and progress text and the alias pill read at WCAG AA contrast."""
    monkeypatch.setenv("CELLTRAIN_WORKSPACE", str(workspace.path))
    run = _finished_run(workspace, make_source)
    assert run.status == states.COMPLETED, run.logs()
    run.register_model("views-net", "outputs/model.pt", aliases=["production"])
    base, token, root = request.getfixturevalue("lab_server")
    set_theme(base, token, theme)
    write_notebook(root / "theme.ipynb", _show_cell(workspace, run))
    open_notebook(page, base, token, "theme.ipynb")
    run_first_cell(page, "lab")
    page.locator(".celltrain-run svg.celltrain-chart").first.wait_for(timeout=60_000)

    chart_bg = background(page, ".celltrain-run svg.celltrain-chart")
    if theme == "dark":
        assert max(chart_bg) < 80, f"a bright chart in the dark theme: rgb{tuple(chart_bg)}"
    else:
        assert min(chart_bg) > 230, f"a dark chart in the light theme: rgb{tuple(chart_bg)}"
    # Tick labels and the title on the chart; the header and the progress text on the cell.
    assert contrast(page, ".celltrain-run svg.celltrain-chart text") >= READABLE
    assert contrast(page, ".celltrain-run .widget-html-content b") >= READABLE
    progress = page.locator(".celltrain-run .widget-html-content", has_text="30/30").first
    progress.wait_for(timeout=UI_TIMEOUT_MS)
    assert progress.evaluate("e => ctTextContrast(e)") >= READABLE
    page.locator(".celltrain-run").first.screenshot(
        path=str(screenshots / f"views-widget-{theme}.png"))

    # The sidebar: the run's status pill and progress text, then the Models tab's alias pill.
    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="celltrain-sidebar"]').click()
    row = page.locator(f'#celltrain-sidebar .ct-run[data-run-id="{run.id}"]')
    row.wait_for(timeout=UI_TIMEOUT_MS)
    assert contrast(page, f'.ct-run[data-run-id="{run.id}"] .ct-status') >= READABLE
    assert contrast(page, f'.ct-run[data-run-id="{run.id}"] .ct-progress span',
                    ".ct-progress-bar") >= READABLE, "progress text on the filled bar"
    page.locator("#celltrain-sidebar").screenshot(
        path=str(screenshots / f"views-sidebar-runs-{theme}.png"))
    page.locator("#celltrain-sidebar .ct-tab[data-tab='models']").click()
    page.locator("#celltrain-sidebar .ct-alias").first.wait_for(timeout=UI_TIMEOUT_MS)
    assert contrast(page, "#celltrain-sidebar .ct-alias") >= READABLE
    page.locator("#celltrain-sidebar").screenshot(
        path=str(screenshots / f"views-sidebar-models-{theme}.png"))
