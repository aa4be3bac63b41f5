"""System metrics and code capture as a person sees them (issue 15, items 12 and 13), in a real
JupyterLab 4 and Chromium, light and dark theme: the widget has a System section, closed until
clicked, with CPU and memory charts; the run panel shows the system samples and a Code section
(the %%train cell's source, its notebook and cell).  The run is local (no container): the
sampler itself is tested on Docker and local runs in tests/test_sysmetrics.py.  Screenshots go
to ``screenshots/``."""
from __future__ import annotations

import pytest

from celltrain import states
from test_widget_browser import run_first_cell
from views import READABLE, contrast, open_notebook, set_theme, write_notebook

pytestmark = pytest.mark.browser
UI_TIMEOUT_MS = 30_000

CELL = """%%train
import time
from celltrain import log
block = bytearray(48 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
end = time.time() + 3
while time.time() < end:
    pass
log("loss", 0.5, step=0)
"""


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_widget_and_run_panel_show_system_metrics_and_the_code(
        theme, workspace, monkeypatch, request, page, screenshots):
    monkeypatch.setenv("CELLTRAIN_WORKSPACE", str(workspace.path))
    monkeypatch.setenv("CELLTRAIN_SYS_INTERVAL", "0.5")     # the kernel's supervisors inherit it
    base, token, root = request.getfixturevalue("lab_server")
    set_theme(base, token, theme)
    write_notebook(root / "sys.ipynb",
                   f"%load_ext celltrain\n%train config workspace={workspace.path} "
                   f"target=local experiment=sys", CELL)
    open_notebook(page, base, token, "sys.ipynb")
    run_first_cell(page, "lab")
    page.locator(".jp-Cell").nth(1).click()
    page.keyboard.press("Shift+Enter")
    widget = page.locator(".jp-Cell").nth(1).locator(".celltrain-run", has_text="Completed")
    widget.wait_for(timeout=90_000)
    run = workspace.runs()[0]
    assert run.status == states.COMPLETED
    assert "sys/cpu_percent" in workspace.store.system_names(run.id)

    # The widget: a System section, closed; opened, it charts CPU and memory.
    box = widget.locator(".celltrain-system-box")
    header = box.locator(".jupyter-widget-Collapse-header", has_text="System (CPU, memory, GPU)")
    header.wait_for(timeout=UI_TIMEOUT_MS)
    assert not box.locator(".celltrain-system").is_visible(), "the section starts closed"
    header.click()
    charts = box.locator(".celltrain-system svg.celltrain-chart")
    charts.first.wait_for(timeout=UI_TIMEOUT_MS)
    titles = box.locator(".celltrain-system").inner_text()
    assert "CPU (%)" in titles and "memory (MiB)" in titles, titles
    assert contrast(page, ".celltrain-system-latest b") >= READABLE
    widget.screenshot(path=str(screenshots / f"views-widget-system-{theme}.png"))

    # The run panel: the System section's samples and charts, and the Code section.
    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="celltrain-sidebar"]').click()
    row = page.locator(f'#celltrain-sidebar .ct-run[data-run-id="{run.id}"]')
    row.wait_for(timeout=UI_TIMEOUT_MS)
    row.locator(".ct-run-name").click()
    panel = page.locator(f"#celltrain-run-{run.id}")
    panel.locator('.ct-system .ct-system-chart[data-system="sys/cpu_percent"] .ct-line') \
        .wait_for(timeout=UI_TIMEOUT_MS)
    assert panel.locator('.ct-system .ct-system-chart[data-system="sys/mem_bytes"] .ct-line') \
        .count() == 1
    latest = panel.locator(".ct-system-latest").inner_text()
    assert "CPU" in latest and "MiB" in latest, latest
    code = panel.locator("pre.ct-code")
    code.wait_for(timeout=UI_TIMEOUT_MS)
    assert code.text_content() == CELL, code.text_content()
    notebook = panel.locator(".ct-code-notebook").inner_text()
    assert "sys.ipynb" in notebook and "In [" in notebook, notebook
    assert contrast(page, f"#celltrain-run-{run.id} pre.ct-code") >= READABLE
    panel.locator(".ct-system").scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / f"views-run-panel-system-code-{theme}.png"),
                    full_page=True)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_notebook7_widget_has_the_closed_system_section(theme, workspace, make_source,
                                                        monkeypatch, request, page, screenshots):
    """The same System section in Notebook 7: closed, then CPU and memory charts in the
    theme's colours (a run sampled here, shown by a notebook's cell)."""
    monkeypatch.setenv("CELLTRAIN_SYS_INTERVAL", "0.5")
    src = make_source(CELL.split("\n", 1)[1])
    run = workspace.experiment("sys").submit("train.py", src, target="local")
    assert run.wait(timeout=120) == states.COMPLETED, run.logs()
    assert "sys/mem_bytes" in run.system_metrics()
    base, token, root = request.getfixturevalue("notebook_server")
    set_theme(base, token, theme)
    write_notebook(root / "sys7.ipynb",
                   f"from celltrain import Workspace\n"
                   f"Workspace({str(workspace.path)!r}, reconcile=False).run({run.id!r}).show()")
    open_notebook(page, base, token, "sys7.ipynb", "notebook")
    run_first_cell(page, "notebook")
    box = page.locator(".celltrain-run .celltrain-system-box")
    header = box.locator(".jupyter-widget-Collapse-header", has_text="System")
    header.wait_for(timeout=60_000)
    assert not box.locator(".celltrain-system").is_visible(), "the section starts closed"
    header.click()
    box.locator(".celltrain-system svg.celltrain-chart").nth(1).wait_for(timeout=UI_TIMEOUT_MS)
    assert contrast(page, ".celltrain-system svg.celltrain-chart text") >= READABLE
    page.locator(".celltrain-run").first.screenshot(
        path=str(screenshots / f"views-widget-system-notebook7-{theme}.png"))
