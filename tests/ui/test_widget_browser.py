"""The run widget in a real JupyterLab 4 and Notebook 7, in a real Chromium, following a real
container run.

It renders (core widgets only, no front-end code of ours), its chart gains points while the
container runs, the static copy for saved notebooks stays hidden next to the live widget, and
clicking Cancel ends the run Canceled, also while the cell still waits for the run (the
widget's clicks go to a kernel subshell).
"""
from __future__ import annotations

import re
import textwrap

import nbformat
import pytest

from celltrain import Workspace

TRAIN = """
import time
from celltrain import log, progress
for i in progress(range(3000), desc="epoch 1"):
    log("loss", 1.0 / (i + 1))
    log("val_loss", 1.2 / (i + 1))
    if i % 10 == 0:
        print("step", i, flush=True)
    time.sleep(0.1)
"""


def run_first_cell(page, app: str):
    """Run the notebook's first cell once its kernel is up; returns the cell's prompt."""
    page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.wait_for(timeout=90_000)
    if app == "lab":
        page.locator(".jp-StatusBar-Widget", has_text="Idle").first.wait_for(timeout=180_000)
    prompt = page.locator(".jp-Cell .jp-InputPrompt").first
    run_button = page.locator(".jp-NotebookPanel-toolbar "
                              "[data-command='notebook:run-cell-and-select-next']").first
    for _ in range(6):           # a click while the kernel still connects can be lost
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and dialog.first.is_visible():
            raise AssertionError(f"a dialog is in the way: {dialog.first.inner_text()!r}")
        page.locator(".jp-Notebook .jp-Cell").first.click()
        run_button.click()
        try:
            page.wait_for_function(
                "() => /\\[(\\*|\\d+)\\]/.test(document.querySelector('.jp-Cell "
                ".jp-InputPrompt').textContent)", timeout=10_000)
            return prompt
        except Exception:
            continue
    raise AssertionError(f"the cell never ran (prompt {prompt.inner_text()!r})")


def _points(page) -> int:
    """Points drawn in the widget's loss chart right now."""
    return page.evaluate("""() => {
        let n = 0;
        for (const p of document.querySelectorAll('.celltrain-run polyline.series'))
            n += p.getAttribute('points').trim().split(/\\s+/).length;
        return n;
    }""")


@pytest.mark.parametrize("app,blocking", [("lab", True), ("notebook", True), ("lab", False)],
                         ids=["lab-cell-waits", "notebook7-cell-waits", "lab-cell-returned"])
def test_widget_renders_updates_live_and_cancels(app, blocking, request, docker_workspace, page,
                                                 make_source, screenshots):
    base, token, root = request.getfixturevalue(f"{app}_server")
    src = make_source(TRAIN)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    code = textwrap.dedent(f"""\
        from celltrain import Workspace, Environment
        ws = Workspace({str(docker_workspace.path)!r})
        run = ws.experiment("browser").submit(
            "train.py", {str(src)!r}, gpus="none",
            environment=Environment(base_image="celltrain/base:offline"))
        w = run.show()
        """)
    if blocking:
        code += "w.wait()   # the cell blocks, as %%train does: Cancel must still work\n"
    nb.cells = [nbformat.v4.new_code_cell(code + 'print("cell finished:", run.status)')]
    nbformat.write(nb, root / "widget.ipynb")

    path = "lab/tree" if app == "lab" else "notebooks"
    page.goto(f"{base}/{path}/widget.ipynb?token={token}")
    try:
        _drive(page, app, blocking, docker_workspace, screenshots)
    except Exception:
        page.screenshot(path=str(screenshots / f"widget-{app}-failure.png"), full_page=True)
        raise


def _drive(page, app, blocking, docker_workspace, screenshots):
    prompt = run_first_cell(page, app)

    widget = page.locator(".celltrain-run")
    widget.wait_for(timeout=90_000)
    page.locator(".celltrain-run polyline.series").first.wait_for(state="attached",
                                                                  timeout=180_000)
    run_id = page.locator(".celltrain-run code").first.inner_text().strip()
    assert re.fullmatch(r"browser-\d+-[0-9a-f]{6}", run_id), run_id
    first = _points(page)
    page.wait_for_function(f"() => {{ let n = 0; for (const p of document.querySelectorAll("
                           f"'.celltrain-run polyline.series')) n += p.getAttribute('points')"
                           f".trim().split(/\\s+/).length; return n > {first} + 10; }}",
                           timeout=20_000)
    assert "Running" in widget.inner_text()
    name = f"widget-{app}{'' if blocking else '-returned'}"
    page.screenshot(path=str(screenshots / f"{name}-running.png"), full_page=True)
    # The static copy for saved notebooks is in the page but hidden next to the live widget.
    static = page.locator("[class^='celltrain-static-']").first
    static.wait_for(state="attached", timeout=10_000)
    assert static.is_hidden()

    if blocking:
        assert "[*]" in prompt.inner_text(), "the cell is still waiting for the run"
    page.locator(".celltrain-run button", has_text="Cancel").click()
    page.locator(".celltrain-run", has_text="Canceled").first.wait_for(timeout=90_000)
    if blocking:
        page.locator(".jp-OutputArea-output", has_text="cell finished: Canceled").wait_for(
            timeout=30_000)
    page.screenshot(path=str(screenshots / f"{name}-canceled.png"), full_page=True)
    # The static copy (what a saved notebook shows without a kernel) holds the final state.
    page.wait_for_function("() => [...document.querySelectorAll(\"[class^='celltrain-static-']\")]"
                           ".some(e => e.innerHTML.includes('Canceled'))",
                           timeout=30_000)
    run = Workspace(docker_workspace.path, reconcile=False).run(run_id)
    assert run.status == "Canceled"
    assert run.reason == "canceled by the user"
    assert _points(page) >= first
    if app == "lab" and not blocking:
        _reopen_without_the_widget(page, screenshots / f"{name}-reopened.png")


def _reopen_without_the_widget(page, screenshot):
    """Saved and reopened (a new kernel, no widget models): the static copy shows instead."""
    page.keyboard.press("Control+s")
    page.locator(".jp-Document:not(.jp-mod-dirty)").first.wait_for(timeout=30_000)
    page.reload()
    static = page.locator("[class^='celltrain-static-']").first
    static.wait_for(state="visible", timeout=90_000)
    assert "Canceled" in static.inner_text()
    assert static.locator("img[src^='data:image/png;base64,']").count() == 1
    assert page.locator(".celltrain-run").count() == 0
    page.screenshot(path=str(screenshot), full_page=True)


def test_runs_table_sorts_and_compares_in_the_browser(workspace, make_source, lab_server, page,
                                                      screenshots):
    """ws.runs_table() in JupyterLab: a header click sorts, ticking two runs overlays them."""
    base, token, root = lab_server
    src = make_source(textwrap.dedent("""
        import sys
        from celltrain import log
        lr = float(sys.argv[1])
        for i in range(20):
            log("loss", 1.0 / (1 + lr * i))
    """))
    runs = [workspace.experiment("table").submit("train.py", src, args=[lr], target="local",
                                                 params={"lr": lr})
            for lr in (0.1, 1.0, 3.0)]
    for run in runs:
        assert run.wait(timeout=60) == "Completed"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        f"from celltrain import Workspace\nWorkspace({str(workspace.path)!r}).runs_table()")]
    nbformat.write(nb, root / "table.ipynb")
    page.goto(f"{base}/lab/tree/table.ipynb?token={token}")
    run_first_cell(page, "lab")
    table = page.locator(".celltrain-runs-table")
    table.wait_for(timeout=60_000)
    table.locator("button", has_text="loss").click()        # ascending final loss
    page.wait_for_function("() => document.querySelector('.celltrain-runs-table button')"
                           " && [...document.querySelectorAll('.celltrain-runs-table button')]"
                           ".some(b => b.textContent.includes('loss ▲'))", timeout=15_000)
    ids = table.locator("code").all_inner_texts()
    assert ids == [runs[2].id, runs[1].id, runs[0].id], ids   # lr 3.0 has the lowest loss
    boxes = table.locator(".celltrain-runs-grid input[type='checkbox']")
    boxes.nth(0).check()
    boxes.nth(2).check()
    page.wait_for_function("() => document.querySelectorAll("
                           "'.celltrain-runs-table polyline.series').length == 2",
                           timeout=15_000)
    labels = table.locator("polyline.series").evaluate_all(
        "ps => ps.map(p => p.getAttribute('data-label'))")
    assert sorted(labels) == sorted([runs[2].id, runs[0].id])
    page.screenshot(path=str(screenshots / "widget-runs-table.png"), full_page=True)
