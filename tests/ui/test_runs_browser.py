"""The sidebar's run list and Compare as a person uses them (issue 15, items 10, 14 and 15), and
the widget in Notebook 7's themes, in a real JupyterLab 4 / Notebook 7 and a real Chromium.

Item 10: each run row shows a metric (the one logged last, or the chosen columns) next to its
duration, on one line.  Item 15: the search box finds runs by name, param or tag, also runs
beyond the loaded page (the server searches); the metric columns picked are kept in the
workspace.  Item 14: Compare shows params and final metrics side by side, the differing params
highlighted, the curves labelled by what differs.  Light and dark theme; text contrast measured
as the views' other tests do.  Runs are local (no container).  Screenshots go to
``screenshots/``.
"""
from __future__ import annotations

import textwrap

import pytest

from celltrain import states
from celltrain.workspace import new_run_id
from test_sidebar_browser import show_sidebar
from test_widget_browser import run_first_cell
from views import COLOUR_JS, READABLE, background, check_widget_theme, contrast, open_notebook, \
    set_theme, write_notebook

pytestmark = pytest.mark.browser
UI_TIMEOUT_MS = 30_000

TRAIN = """
import sys
from celltrain import log, progress
lr = float(sys.argv[1])
for i in progress(range(20), desc="epoch"):
    log("loss", 2.0 / (1 + lr * i), step=i)
    log("accuracy", 1 - 1.0 / (2 + lr * i), step=i)
"""
BULK = 105          # more runs than the sidebar loads (100 a page)


def _runs(ws, make_source):
    """A hundred-odd older runs ("bulk", params i) and two newer real ones differing in lr."""
    for i in range(BULK):
        record = ws.store.create_run("bulk", run_id_for=new_run_id, status=states.QUEUED,
                                     target="local", params={"i": i})
        ws.store.set_status(record["id"], states.COMPLETED)
    src = make_source(TRAIN)
    runs = [ws.experiment("birds").submit("train.py", src, args=[lr], target="local",
                                          params={"lr": lr, "batch": 32}, tags=tags)
            for lr, tags in ((0.1, {"team": "vision"}), (0.5, {}))]
    for run in runs:
        assert run.wait(timeout=120) == states.COMPLETED, run.logs()
    return runs


def _shown(value: float) -> str:
    """A number as the sidebar writes it (4 significant digits)."""
    return f"{float(f'{value:.4g}'):g}"     # the values here lie between 0.001 and 100000


def _sidebar(page, base, token):
    page.goto(f"{base}/lab?token={token}")
    page.add_script_tag(content=COLOUR_JS)
    tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="celltrain-sidebar"]')
    tab.wait_for(timeout=60_000)
    show_sidebar(page, tab)


def _row(page, run_id):
    return page.locator(f'#celltrain-sidebar .ct-run[data-run-id="{run_id}"]')


def _search(page, text):
    page.locator("#celltrain-sidebar .ct-search").fill(text)


def _rows_are(page, ids):
    page.wait_for_function(
        "ids => { const got = [...document.querySelectorAll('#celltrain-sidebar .ct-run')]"
        ".map(r => r.dataset.runId).sort(); return JSON.stringify(got) === "
        "JSON.stringify([...ids].sort()); }", arg=list(ids), timeout=UI_TIMEOUT_MS)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_run_rows_show_a_metric_search_finds_runs_and_columns_are_kept(
        theme, workspace, make_source, monkeypatch, request, page, screenshots):
    monkeypatch.setenv("CELLTRAIN_WORKSPACE", str(workspace.path))
    first, second = _runs(workspace, make_source)
    bulk_one = next(r for r in workspace.store.list_runs(experiment="bulk") if r["number"] == 1)
    base, token, root = request.getfixturevalue("lab_server")
    set_theme(base, token, theme)
    _sidebar(page, base, token)

    # Item 10: the metric logged last, its latest value, next to the duration, on one line.
    row = _row(page, second.id)
    row.wait_for(timeout=UI_TIMEOUT_MS)
    latest = second.latest_metrics()["accuracy"]
    metric = row.locator(".ct-run-metric")
    assert metric.inner_text() == f"accuracy {_shown(latest)}"
    duration = row.locator(".ct-run-duration")
    assert duration.inner_text().strip()
    line = metric.evaluate("e => { const l = e.parentElement, d = l.querySelector("
                           "'.ct-run-duration'), m = e.getBoundingClientRect(), "
                           "r = d.getBoundingClientRect(); return {rects: e.getClientRects()"
                           ".length, same: Math.abs(m.top - r.top) < 2 && m.right <= r.left, "
                           "fits: l.scrollWidth <= l.clientWidth, height: l.getBoundingClientRect()"
                           ".height}; }")
    assert line["rects"] == 1 and line["same"] and line["fits"], line
    assert line["height"] < 24, f"the id/metric/duration line wraps: {line}"
    assert contrast(page, f'.ct-run[data-run-id="{second.id}"] .ct-run-metric') >= READABLE

    # Item 15: search by param, by tag, by name; one run the list has not loaded is found.
    assert _row(page, bulk_one["id"]).count() == 0, "the oldest run is beyond the first page"
    _search(page, "lr=0.5")
    _rows_are(page, [second.id])
    assert page.locator("#celltrain-sidebar .ct-page").inner_text() == "1–1 of 1"
    _search(page, "team=vision")
    _rows_are(page, [first.id])
    _search(page, "i=0")
    _rows_are(page, [bulk_one["id"]])
    _search(page, "lr<abc")
    error = page.locator("#celltrain-sidebar .ct-search-error")
    error.wait_for(state="visible", timeout=UI_TIMEOUT_MS)
    assert "lr<abc" in error.inner_text() and "compares numbers" in error.inner_text()
    _search(page, "birds")
    _rows_are(page, [first.id, second.id])
    assert error.is_hidden()
    assert contrast(page, "#celltrain-sidebar .ct-search") >= READABLE

    # Metric columns: picked in the sidebar, kept in the workspace, shown after a reload.
    page.locator("#celltrain-sidebar .ct-columns-picker summary").click()
    page.locator('#celltrain-sidebar .ct-column[data-column="loss"] input').check()
    page.wait_for_function(
        "id => document.querySelector(`.ct-run[data-run-id='${id}'] .ct-run-metric`)"
        "?.textContent.startsWith('loss ')", arg=second.id, timeout=UI_TIMEOUT_MS)
    page.locator('#celltrain-sidebar .ct-column[data-column="accuracy"] input').check()
    losses = second.latest_metrics()
    expected = f"loss {_shown(losses['loss'])} · accuracy {_shown(losses['accuracy'])}"
    page.wait_for_function(
        "([id, text]) => document.querySelector(`.ct-run[data-run-id='${id}'] .ct-run-metric`)"
        "?.textContent === text", arg=[second.id, expected], timeout=UI_TIMEOUT_MS)
    assert workspace.store.run_columns() == ["loss", "accuracy"]
    assert contrast(page, '#celltrain-sidebar .ct-column[data-column="loss"]') >= READABLE
    page.locator("#celltrain-sidebar").screenshot(
        path=str(screenshots / f"views-sidebar-search-columns-{theme}.png"))
    _sidebar(page, base, token)
    _row(page, second.id).locator(".ct-run-metric", has_text=expected).wait_for(
        timeout=UI_TIMEOUT_MS)
    assert _row(page, second.id).locator(".ct-run-metric").evaluate(
        "e => e.getClientRects().length") == 1


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_compare_shows_a_table_highlights_what_differs_and_labels_curves_by_it(
        theme, workspace, make_source, monkeypatch, request, page, screenshots):
    monkeypatch.setenv("CELLTRAIN_WORKSPACE", str(workspace.path))
    src = make_source(TRAIN)
    runs = [workspace.experiment("birds").submit("train.py", src, args=[lr], target="local",
                                                 params={"lr": lr, "batch": 32})
            for lr in (0.1, 0.5)]
    for run in runs:
        assert run.wait(timeout=120) == states.COMPLETED, run.logs()
    base, token, root = request.getfixturevalue("lab_server")
    set_theme(base, token, theme)
    _sidebar(page, base, token)
    for run in runs:
        _row(page, run.id).locator(".ct-select").check()
    page.locator("#celltrain-sidebar .ct-compare").click()
    table = page.locator(".ct-compare-table")
    table.wait_for(timeout=UI_TIMEOUT_MS)

    heads = table.locator("thead th[data-run-id]")
    assert [heads.nth(i).get_attribute("data-run-id") for i in range(2)] == [r.id for r in runs]
    lr, batch = table.locator('tr[data-param="lr"]'), table.locator('tr[data-param="batch"]')
    assert lr.locator("td").all_inner_texts() == ["0.1", "0.5"]
    assert batch.locator("td").all_inner_texts() == ["32", "32"]
    assert "ct-differs" in lr.get_attribute("class")
    assert "ct-differs" not in (batch.get_attribute("class") or "")
    assert background(page, '.ct-compare-table tr[data-param="lr"] td') != \
        background(page, '.ct-compare-table tr[data-param="batch"] td'), "lr is not highlighted"
    finals = table.locator('tr[data-metric="loss"] td').all_inner_texts()
    assert finals == [_shown(r.latest_metrics()["loss"]) for r in runs]
    assert contrast(page, '.ct-compare-table tr[data-param="lr"] td') >= READABLE
    assert contrast(page, ".ct-compare-table td") >= READABLE

    chart = page.locator('.ct-compare-panel .ct-chart-box[data-metric="loss"]')
    chart.locator(".ct-line").nth(1).wait_for(timeout=UI_TIMEOUT_MS)   # the legend's rows
    assert [chart.locator(".ct-line").nth(i).get_attribute("data-label")
            for i in range(chart.locator(".ct-line").count())] == ["lr=0.1", "lr=0.5"]
    assert chart.locator(".ct-line .u-label").all_inner_texts() == ["lr=0.1", "lr=0.5"]
    page.locator(".ct-compare-panel").screenshot(
        path=str(screenshots / f"views-compare-{theme}.png"))


WIDGET = """
import os
from celltrain import log, progress
for i in progress(range(30), desc="epoch"):
    log("loss", 2.0 / (1 + i), step=i)
    log("val_loss", 2.4 / (1 + i), step=i)
"""


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_widget_follows_notebook_7s_theme_and_stays_readable(
        theme, workspace, make_source, request, page, screenshots):
    """Item 1 in Notebook 7: the charts take the theme's background, and the chart text, the
    header and the progress text read at WCAG AA contrast."""
    run = workspace.experiment("nb7").submit("train.py", make_source(WIDGET), target="local")
    assert run.wait(timeout=120) == states.COMPLETED, run.logs()
    base, token, root = request.getfixturevalue("notebook_server")
    set_theme(base, token, theme)
    write_notebook(root / "theme.ipynb", textwrap.dedent(f"""\
        from celltrain import Workspace
        Workspace({str(workspace.path)!r}, reconcile=False).run({run.id!r}).show()"""))
    open_notebook(page, base, token, "theme.ipynb", "notebook")
    run_first_cell(page, "notebook")
    check_widget_theme(page, theme, "30/30")
    body = page.evaluate("() => ctBackground(document.querySelector('.jp-Notebook'))")
    if theme == "dark":
        assert max(body) < 80, f"Notebook 7 did not take the dark theme: rgb{tuple(body)}"
    page.locator(".celltrain-run").first.screenshot(
        path=str(screenshots / f"views-widget-notebook7-{theme}.png"))
