"""The views as a person sees them (issue 15), in a real JupyterLab 4 / Notebook 7 and Chromium.

Light and dark theme: the widget's charts and text take the theme's colours and every text
stays readable (WCAG contrast measured on the computed colours); a reopened notebook whose
widget models are gone shows the static copy and no widget error; a failure's cause shows once.
Runs are local (no container): what is tested is the view.  Screenshots go to ``screenshots/``.
"""
from __future__ import annotations

import json
import textwrap
import time
import urllib.request

import pytest

from celltrain import states
from test_widget_browser import run_first_cell
from views import READABLE, check_widget_theme, contrast, open_notebook, set_theme, write_notebook

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


def _submit_and_show(page, server, ws, name, src, submit_args, then="", app="lab"):
    """A notebook whose cell submits a run and shows it (then ``then``), opened in ``app``
    (JupyterLab or Notebook 7) and run; returns the widget."""
    base, token, root = server
    write_notebook(root / f"{name}.ipynb", textwrap.dedent(f"""\
        from celltrain import Workspace
        run = Workspace({str(ws.path)!r}).experiment({name!r}).submit(
            "train.py", {str(src)!r}, {submit_args})
        w = run.show()
        """) + then)
    open_notebook(page, base, token, f"{name}.ipynb", app)
    run_first_cell(page, app)
    return page.locator(".celltrain-run")


def _app(app: str) -> str:
    """The screenshots' infix: none for JupyterLab (the names they had), "notebook7-" else."""
    return "" if app == "lab" else "notebook7-"


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
    check_widget_theme(page, theme, "30/30")
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


def _shut_down_kernels(base: str, token: str) -> None:
    """What closing JupyterLab overnight does: the kernels, and with them the widget models,
    are gone; the notebook file keeps the widget's output."""
    headers = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(urllib.request.Request(f"{base}/api/sessions",
                                                       headers=headers)) as r:
        sessions = json.load(r)
    for s in sessions:
        urllib.request.urlopen(urllib.request.Request(
            f"{base}/api/sessions/{s['id']}", method="DELETE", headers=headers)).close()


@pytest.mark.parametrize("app", ["lab", "notebook"])
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_a_reopened_notebook_shows_the_static_copy_and_no_widget_error(
        app, theme, workspace, make_source, request, page, screenshots):
    """Item 3: saved with the live widget, reopened with a new kernel (the widget model is
    gone): only the static copy shows, not ipywidgets' "Error displaying widget"."""
    run = _finished_run(workspace, make_source)
    base, token, root = request.getfixturevalue(f"{app}_server")
    set_theme(base, token, theme)
    write_notebook(root / "saved.ipynb", _show_cell(workspace, run))
    open_notebook(page, base, token, "saved.ipynb", app)
    run_first_cell(page, app)
    page.locator(".celltrain-run .celltrain-charts svg").first.wait_for(timeout=60_000)
    page.locator("[class^='celltrain-static-'] img").first.wait_for(state="attached",
                                                                     timeout=60_000)
    page.locator(".jp-Notebook .jp-Cell").first.click()
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 60
    while "widget-view+json" not in (root / "saved.ipynb").read_text():
        assert time.monotonic() < deadline, "the notebook was not saved with the widget"
        time.sleep(0.2)
    _shut_down_kernels(base, token)

    open_notebook(page, base, token, "saved.ipynb", app)
    static = page.locator("[class^='celltrain-static-']").first
    static.wait_for(state="visible", timeout=90_000)
    # The widget output has rendered (its model looked for, and not found) by now or soon.
    error = page.locator(".jp-OutputArea-output.jupyter-widgets")
    error.first.wait_for(state="attached", timeout=90_000)
    assert "model not found" in error.first.text_content()
    assert page.get_by_text("Error displaying widget").filter(visible=True).count() == 0
    assert "Completed" in static.inner_text()
    assert static.locator("img[src^='data:image/png;base64,']").count() == 1
    page.screenshot(path=str(screenshots / f"views-reopened-{app}-{theme}.png"), full_page=True)


@pytest.mark.parametrize("app", ["lab", "notebook"])
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_a_failed_train_cell_shows_its_cause_once(app, theme, workspace, request, page,
                                                  screenshots):
    """Item 4: a %%train cell that raises: the cause shows once (the widget's header), the
    full reason and traceback one click away, the cell's red error output one line."""
    base, token, root = request.getfixturevalue(f"{app}_server")
    set_theme(base, token, theme)
    write_notebook(root / "fails.ipynb",
                   f"%load_ext celltrain\n%train config workspace={workspace.path} target=local"
                   f" experiment=fails\n",
                   "%%train\nlr = 0.1234\nraise ValueError(f'{lr} is not a learning rate')\n")
    open_notebook(page, base, token, "fails.ipynb", app)
    run_first_cell(page, app)
    page.locator(".jp-Cell").nth(1).click()
    page.keyboard.press("Shift+Enter")
    cell = page.locator(".jp-Cell").nth(1)
    cell.locator(".celltrain-run", has_text="Failed").wait_for(timeout=90_000)
    cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                 ).first.wait_for(timeout=30_000)
    outputs = cell.locator(".jp-OutputArea").first
    text = outputs.inner_text()        # what is visible: a closed <details> shows its summary
    assert text.count("0.1234 is not a learning rate") == 1, text
    header = cell.locator(".celltrain-header .celltrain-detail")
    assert "ValueError: 0.1234 is not a learning rate" in header.inner_text()
    details = cell.locator(".celltrain-run details.celltrain-failure-details")
    details.locator("summary").click()
    assert "Traceback (most recent call last)" in details.inner_text()
    page.screenshot(path=str(screenshots / f"views-failure-{_app(app)}{theme}.png"), full_page=True)


WAITS = """
import os, sys, time
from celltrain import log, progress
print("waiting for the go", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.1)
for i in progress(range(100000), desc="epoch 1"):
    log("loss", 1.0 / (i + 1))
    log("val_loss", 1.2 / (i + 1))
    print("step", i, "of a line long enough to wrap in a narrow cell " * 3, flush=True)
    time.sleep(0.05)
"""
LONG_NAME = "an-experiment-whose-name-is-long-enough-to-push-the-cancel-button-off-" * 2


@pytest.fixture
def runs_canceled_after(workspace):
    """The long run below ends with the test even when an assertion stops it first."""
    yield
    for run in workspace.runs():
        if not states.is_terminal(run.status):
            run.cancel(grace=2)


def _height(page) -> float:
    return page.evaluate("() => document.querySelector('.celltrain-run')"
                         ".getBoundingClientRect().height")


@pytest.mark.parametrize("app", ["lab", "notebook"])
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_widget_keeps_its_height_as_a_run_goes_on_and_cancel_stays_whole(
        app, theme, workspace, make_source, tmp_path, request, page, screenshots, runs_canceled_after):
    """Item 5: the space for the progress bar, the charts and the log tail is kept from the
    start, so the first metric moves nothing; a long header is cut with an ellipsis on one line
    and the Cancel button keeps its whole label."""
    src = make_source(WAITS)
    go = tmp_path / "go"
    server = request.getfixturevalue(f"{app}_server")
    set_theme(*server[:2], theme)
    widget = _submit_and_show(page, server, workspace, LONG_NAME, src,
                              f'args=[{str(go)!r}], target="local"', app=app)
    widget.filter(has_text="waiting for the go").wait_for(timeout=90_000)
    widget.filter(has_text="Running").wait_for(timeout=90_000)
    before = _height(page)
    page.screenshot(path=str(screenshots / f"views-layout-before-{_app(app)}{theme}.png"), full_page=True)

    go.write_text("go")
    page.wait_for_function("() => [...document.querySelectorAll('.celltrain-run "
                           "polyline.series')].length == 2", timeout=60_000)
    widget.filter(has_text="step 12 ").wait_for(timeout=60_000)
    after = _height(page)
    page.screenshot(path=str(screenshots / f"views-layout-after-{_app(app)}{theme}.png"), full_page=True)
    assert abs(after - before) <= 2, f"the widget went from {before} to {after} px"

    header = page.locator(".celltrain-run .celltrain-header")
    assert header.evaluate("e => e.getBoundingClientRect().height") < 40, "one line"
    assert page.evaluate("() => { const q = s => document.querySelector('.celltrain-run ' + s)"
                         ".getBoundingClientRect(); const b = q('.celltrain-badge'), "
                         "c = q('button'); return b.width > 0 && b.right <= c.left; }"), \
        "the long name pushed the status out of sight"
    cancel = page.locator(".celltrain-run button", has_text="Cancel")
    assert cancel.evaluate("b => b.scrollWidth <= b.clientWidth"), "Cancel is cut"
    assert cancel.evaluate("b => b.getBoundingClientRect().right") <= \
        widget.evaluate("e => e.getBoundingClientRect().right") + 1
    cancel.click()
    widget.filter(has_text="Canceled").wait_for(timeout=60_000)


METRICS = """
import sys
from celltrain import log
lr = float(sys.argv[1])
for i in range(5):
    log("train_acc", 0.5 + lr * i / 10, step=i)
    log("train_loss", 1.0 / (1 + lr * i), step=i)
    log("val_loss", 1.1 / (1 + lr * i), step=i)
"""
TEXT_GAP_JS = """
cells => {
    const box = c => { const r = document.createRange(); r.selectNodeContents(c);
                       return r.getBoundingClientRect(); };
    return box(cells[1]).left - box(cells[0]).right;
}
"""


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_train_list_shows_whole_headers_one_line_rows_and_a_spaced_summary(
        theme, workspace, make_source, request, page, screenshots):
    """Item 8: `%train list` shows each header whole (train_acc and train_loss can be told
    apart), run ids and dates on one line; the widget's summary table has spaced columns."""
    src = make_source(METRICS)
    runs = [workspace.experiment("listed").submit("train.py", src, args=[lr], target="local",
                                                  params={"lr": lr, "batch_size": 32})
            for lr in (0.1, 0.3)]
    for run in runs:
        assert run.wait(timeout=120) == states.COMPLETED, run.logs()
    base, token, root = request.getfixturevalue("lab_server")
    set_theme(base, token, theme)
    write_notebook(root / "list.ipynb",
                   f"%load_ext celltrain\n%train config workspace={workspace.path}\n"
                   f"%train list", _show_cell(workspace, runs[0]))
    open_notebook(page, base, token, "list.ipynb")
    run_first_cell(page, "lab")
    grid = page.locator(".celltrain-runs-grid")
    grid.wait_for(timeout=60_000)
    headers = grid.locator("button")
    labels = headers.all_inner_texts()
    assert {"train_acc", "train_loss", "val_loss", "created"} <= {t.split(" ")[0]
                                                                  for t in labels}, labels
    cut = headers.evaluate_all("bs => bs.filter(b => b.scrollWidth > b.clientWidth)"
                               ".map(b => b.textContent)")
    assert cut == [], f"headers cut: {cut}"
    assert grid.evaluate("g => g.scrollWidth <= g.clientWidth || "
                         "['auto', 'scroll'].includes(getComputedStyle(g).overflowX)"), \
        "columns beyond the cell's width are cut off instead of scrolled to"
    line = grid.locator("code").first.evaluate(
        "c => parseFloat(getComputedStyle(c).lineHeight) || 16")
    for text in (runs[0].id, time.strftime("%Y-%m-%d", time.localtime(runs[0].record["created"]))):
        cell = grid.locator(".widget-html", has_text=text).first
        height = cell.locator(".widget-html-content > *").first.evaluate(
            "e => e.getBoundingClientRect().height")
        assert height < 1.6 * line, f"{text!r} wraps ({height} px for lines of {line} px)"
    page.screenshot(path=str(screenshots / f"views-train-list-{theme}.png"), full_page=True)

    # The summary table of a run's widget: columns apart, not "metricfinal".
    page.locator(".jp-Cell").nth(1).click()
    page.keyboard.press("Shift+Enter")
    table = page.locator(".celltrain-run table").first
    table.wait_for(timeout=60_000)
    gap = table.locator("th").evaluate_all(TEXT_GAP_JS)
    assert gap >= 8, f"the summary's 'metric' and 'final' are {gap} px apart"
    page.locator(".celltrain-run").first.screenshot(
        path=str(screenshots / f"views-summary-table-{theme}.png"))


@pytest.mark.docker
@pytest.mark.parametrize("app", ["lab", "notebook"])
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_offline_image_notice_is_said_once_in_words_not_in_the_log(
        app, theme, docker_workspace, make_source, request, page, screenshots):
    """Item 9: a run on the default base image, which cannot be pulled here, runs on the
    offline one; the widget's status line says so once, in words; the log tail holds only
    the script's output (no "[celltrain] notice", no "500 Server Error")."""
    src = make_source("print('hello from the script')\n")
    server = request.getfixturevalue(f"{app}_server")
    set_theme(*server[:2], theme)
    widget = _submit_and_show(page, server, docker_workspace, "offline", src, 'gpus="none"',
                              app=app)
    widget.filter(has_text="Completed").wait_for(timeout=240_000)
    widget.filter(has_text="hello from the script").wait_for(timeout=30_000)
    shown = widget.inner_text()          # the log tail, header and summary as seen
    for noise in ("notice:", "Server Error", "[celltrain]"):
        assert noise not in shown, f"{noise!r} in the widget: {shown!r}"
    header = widget.locator(".widget-html-content").first.inner_text()
    assert header.count("ran on the offline base image celltrain/base:offline") == 1, header
    widget.screenshot(path=str(screenshots / f"views-offline-notice-{_app(app)}{theme}.png"))


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_run_panel_names_the_notebook_and_cell_hides_internal_files_and_overlays_splits(
        theme, workspace, make_source, monkeypatch, request, page, screenshots):
    """Item 10: a %%train run's panel says which notebook and cell it came from (not
    "local · celltrain_cell.py"), lists the user's files without celltrain's telemetry, and
    charts train and val loss in one chart; the sidebar's row shows the run's duration on one
    line; the Models tab shows a version's ONNX artifact and a load snippet unbroken."""
    monkeypatch.setenv("CELLTRAIN_WORKSPACE", str(workspace.path))
    base, token, root = request.getfixturevalue("lab_server")
    set_theme(base, token, theme)
    write_notebook(
        root / "panel.ipynb",
        f"%load_ext celltrain\n%train config workspace={workspace.path} target=local "
        f"experiment=panel",
        "%%train\nfrom celltrain import log\nfor i in range(5):\n"
        "    log('train_loss', 1 / (i + 1), step=i)\n    log('val_loss', 1.2 / (i + 1), step=i)\n")
    open_notebook(page, base, token, "panel.ipynb")
    run_first_cell(page, "lab")
    page.locator(".jp-Cell").nth(1).click()
    page.keyboard.press("Shift+Enter")
    page.locator(".jp-Cell").nth(1).locator(".celltrain-run", has_text="Completed").wait_for(
        timeout=90_000)
    run = workspace.runs()[0]
    assert run.status == states.COMPLETED
    # A version with an ONNX artifact: the registry's record as export_onnx writes it (the
    # export itself, torch and onnxruntime, is tested in tests/test_onnx.py; here the view).
    (run.folder / "outputs").mkdir(exist_ok=True)
    (run.folder / "outputs" / "model.pt").write_bytes(b"weights")
    version = run.register_model("panel-net", "outputs/model.pt")
    with workspace.store.write() as conn:
        workspace.store.add_model_artifact("panel-net", version.version, "onnx", {
            "path": "artifacts/onnx/model.onnx", "opset": 18}, conn)

    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="celltrain-sidebar"]').click()
    row = page.locator(f'#celltrain-sidebar .ct-run[data-run-id="{run.id}"]')
    row.wait_for(timeout=UI_TIMEOUT_MS)
    assert row.locator(".ct-run-duration").inner_text().strip()
    for part in (".ct-run-name", ".ct-run-id"):
        assert row.locator(part).evaluate("e => e.getClientRects().length") == 1
        assert row.locator(part).evaluate("e => e.getBoundingClientRect().height") < 24
    row.locator(".ct-run-name").click()
    panel = page.locator(f"#celltrain-run-{run.id}")
    source = panel.locator(".ct-source")
    source.wait_for(timeout=UI_TIMEOUT_MS)
    page.wait_for_function("() => /\\[\\d+\\]/.test(document.querySelectorAll("
                           "'.jp-Cell .jp-InputPrompt')[1].textContent)", timeout=60_000)
    number = page.locator(".jp-Cell").nth(1).locator(".jp-InputPrompt").inner_text()
    number = number.strip().strip("[]:")
    assert source.inner_text() == f"panel.ipynb · In [{number}]", source.inner_text()
    files = panel.locator(".ct-files").inner_text()
    panel.locator('.ct-chart-box[data-metric="loss"] .ct-line').nth(1).wait_for(
        timeout=UI_TIMEOUT_MS)
    assert "telemetry/" not in files, files
    assert panel.locator(".ct-chart-box").count() == 1, "train and val loss in one chart"
    page.screenshot(path=str(screenshots / f"views-run-panel-{theme}.png"), full_page=True)

    page.locator("#celltrain-sidebar .ct-tab[data-tab='models']").click()
    model = page.locator('#celltrain-sidebar .ct-model[data-model="panel-net"]')
    model.wait_for(timeout=UI_TIMEOUT_MS)
    assert model.locator(".ct-artifact[data-format='onnx']").inner_text() == "ONNX"
    snippet = model.locator(".ct-snippet")
    expected = snippet.text_content().splitlines()
    shown = snippet.inner_text().splitlines()
    assert shown == expected, "the load snippet is broken across lines"
    assert snippet.evaluate("e => getComputedStyle(e).whiteSpace") == "pre"
    page.locator("#celltrain-sidebar").screenshot(
        path=str(screenshots / f"views-sidebar-models-onnx-{theme}.png"))
