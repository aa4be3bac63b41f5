"""The celltrain sidebar in a real JupyterLab, driven in a real Chromium.

The workspace is real: local runs that finished, a model registered from them, and one run in a
real container from the offline base image, which the test watches go from starting to Running
in the sidebar and then cancels from its panel.  Screenshots go to ``screenshots/``.
"""
from __future__ import annotations

import json
import time

import nbformat
import pytest

from celltrain import Environment, states

pytestmark = pytest.mark.browser

LOCAL = """
from celltrain import log
import os, sys
lr = float(sys.argv[1])
for i in range(40):
    log("loss", 2.0 / (1 + lr * i), step=i)
    log("accuracy", 1 - 1.0 / (2 + lr * i), step=i)
print(f"trained with lr={lr}")
os.makedirs("outputs", exist_ok=True)
open("outputs/model.pt", "wb").write(b"not really weights")
import base64
from celltrain import get_context
open("outputs/dot.png", "wb").write(base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="))
get_context().log_image("sample", "outputs/dot.png", step=1)
"""
CONTAINER = """
import time
from celltrain import log, progress
print("container up", flush=True)
for i in progress(range(400), desc="train"):
    log("loss", 1.0 / (i + 1), step=i)
    print(f"step {i}", flush=True)
    time.sleep(0.5)
"""
QUICK = """
import time
print("short run", flush=True)
time.sleep(12)
"""
UI_TIMEOUT_MS = 30_000


def local_runs(ws, src, lrs=(0.1, 0.5)):
    (src / "train.py").write_text(LOCAL)
    runs = [ws.experiment("birds").submit("train.py", src, args=[lr], target="local",
                                          params={"lr": lr}) for lr in lrs]
    for run in runs:
        assert run.wait(timeout=120) == states.COMPLETED, run.logs()
    return runs


@pytest.fixture
def lab(workspace, monkeypatch, request):
    """JupyterLab whose server extension shows ``workspace`` (via $CELLTRAIN_WORKSPACE)."""
    monkeypatch.setenv("CELLTRAIN_WORKSPACE", str(workspace.path))
    base, token, root = request.getfixturevalue("lab_server")
    return base, token, root, workspace


def open_lab(page, base, token, path=""):
    page.goto(f"{base}/lab{path}?token={token}")
    page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
    tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="celltrain-sidebar"]')
    tab.wait_for(timeout=UI_TIMEOUT_MS)
    return tab


def show_sidebar(page, tab):
    """Open celltrain's sidebar.  JupyterLab restores the last layout a moment after the tab
    appears, and a click made before that can be undone by it: click again while hidden."""
    sidebar = page.locator("#celltrain-sidebar")
    for _ in range(5):
        if sidebar.is_visible():
            break
        tab.click()
        page.wait_for_timeout(2000)
    sidebar.wait_for(state="visible", timeout=UI_TIMEOUT_MS)


def write_notebook(path):
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(notebook, path)


def run_row(page, run_id):
    return page.locator(f'#celltrain-sidebar .ct-run[data-run-id="{run_id}"]')


def test_sidebar_lists_runs_watches_a_container_run_live_and_cancels_it(docker_workspace, lab,
                                                                         page, tmp_path,
                                                                         screenshots):
    base, token, root, ws = lab
    src = tmp_path / "src"
    src.mkdir()
    done = local_runs(ws, src)
    write_notebook(root / "scratch.ipynb")
    tab = open_lab(page, base, token, "/tree/scratch.ipynb")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    show_sidebar(page, tab)

    # The sidebar lists the workspace's runs and says which workspace it shows.
    for run in done:
        run_row(page, run.id).wait_for(timeout=UI_TIMEOUT_MS)
        assert run_row(page, run.id).locator(".ct-status").inner_text() == "Completed"
    assert page.locator("#celltrain-sidebar .ct-workspace").inner_text() == str(ws.path)

    # Real container runs appear and their status changes while we watch: a short one goes on
    # to Completed by itself, a long one is cancelled from its panel below.
    (src / "long.py").write_text(CONTAINER)
    (src / "quick.py").write_text(QUICK)
    offline = Environment(base_image="celltrain/base:offline")
    quick = ws.experiment("birds").submit("quick.py", src, target="docker", gpus="none",
                                          environment=offline)
    live = ws.experiment("birds").submit("long.py", src, target="docker", gpus="none",
                                         environment=offline)
    quick_status = run_row(page, quick.id).locator(".ct-status")
    quick_status.wait_for(timeout=UI_TIMEOUT_MS)
    assert quick_status.get_attribute("data-status") in states.ACTIVE
    run_row(page, quick.id).locator('.ct-status[data-status="Completed"]').wait_for(
        timeout=120_000)
    row = run_row(page, live.id)
    row.wait_for(timeout=UI_TIMEOUT_MS)
    seen = []
    deadline = time.monotonic() + 180
    while "Running" not in seen:
        assert time.monotonic() < deadline, f"sidebar showed {seen}, never Running: {live.logs()}"
        status = row.locator(".ct-status").get_attribute("data-status")
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.2)
    assert all(s in states.ACTIVE for s in seen), seen
    # ... and its progress moves on without a reload (the status changes live at Cancel below).
    progress = row.locator(".ct-progress span")
    progress.wait_for(timeout=UI_TIMEOUT_MS)
    first = progress.inner_text()
    page.wait_for_function(
        "([id, first]) => { const p = document.querySelector("
        "`#celltrain-sidebar .ct-run[data-run-id='${id}'] .ct-progress span`);"
        " return p && p.textContent !== first; }", arg=[live.id, first], timeout=UI_TIMEOUT_MS)
    page.locator("#celltrain-sidebar").screenshot(path=str(screenshots / "sidebar-runs.png"))

    # Its panel: live chart, log tail, params, files.
    row.locator(".ct-run-name").click()
    panel = page.locator(f"#celltrain-run-{live.id} .ct-panel")
    panel.wait_for(timeout=UI_TIMEOUT_MS)
    page.wait_for_selector(f'#celltrain-run-{live.id} .ct-chart-box[data-metric="loss"] '
                           f'.ct-line', timeout=60_000)
    page.wait_for_function(
        "id => document.querySelector(`#celltrain-run-${id} .ct-log`)?.textContent"
        ".includes('step 3')", arg=live.id, timeout=60_000)
    assert panel.get_attribute("data-status") == "Running"
    page.screenshot(path=str(screenshots / "run-panel.png"))

    # "Insert code" puts a cell that loads this run into the notebook.
    panel.locator(".ct-insert").click()
    page.wait_for_function(
        "id => [...document.querySelectorAll('.jp-Notebook .jp-Cell .cm-content')]"
        ".some(c => c.textContent.includes(id))", arg=live.id, timeout=UI_TIMEOUT_MS)
    code = page.locator(".jp-Notebook .jp-Cell .cm-content").nth(1).inner_text()
    assert f'.run("{live.id}")' in code and str(ws.path) in code

    # Cancel in the panel cancels the container run.
    page.locator(f'.lm-DockPanel-tabBar .lm-TabBar-tab[data-id="celltrain-run-{live.id}"]').click()
    panel.locator(".ct-cancel").click()
    page.locator(".jp-Dialog .jp-mod-warn").click()
    page.wait_for_selector(f'#celltrain-run-{live.id} .ct-panel[data-status="Canceled"]',
                           timeout=90_000)
    assert live.status == states.CANCELED
    assert panel.locator(".ct-cancel").is_hidden()   # nothing left to cancel
    row.locator('.ct-status[data-status="Canceled"]').wait_for(timeout=UI_TIMEOUT_MS)
    page.screenshot(path=str(screenshots / "run-panel-canceled.png"))


def test_models_tab_lists_versions_and_compare_overlays_curves(lab, page, tmp_path,
                                                                screenshots):
    base, token, root, ws = lab
    src = tmp_path / "src"
    src.mkdir()
    first, second = local_runs(ws, src)
    first.register_model("birds-net", "outputs/model.pt")
    second.register_model("birds-net", "outputs/model.pt", aliases=["production"])
    write_notebook(root / "scratch.ipynb")
    tab = open_lab(page, base, token, "/tree/scratch.ipynb")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    show_sidebar(page, tab)

    page.locator("#celltrain-sidebar .ct-tab[data-tab='models']").click()
    model = page.locator('#celltrain-sidebar .ct-model[data-model="birds-net"]')
    model.wait_for(timeout=UI_TIMEOUT_MS)
    versions = model.locator(".ct-version")
    assert versions.count() == 2
    assert versions.nth(0).get_attribute("data-version") == "2"
    assert "production" in versions.nth(0).inner_text()
    snippet = model.locator(".ct-snippet").inner_text()
    assert 'model("birds-net", version=2)' in snippet and str(ws.path) in snippet
    page.locator("#celltrain-sidebar").screenshot(path=str(screenshots / "sidebar-models.png"))

    # Runs tab: select both, compare: both curves in one chart.
    page.locator("#celltrain-sidebar .ct-tab[data-tab='runs']").click()
    for run in (first, second):
        run_row(page, run.id).locator(".ct-select").check()
    page.locator("#celltrain-sidebar .ct-compare").click()
    chart = page.locator('.ct-chart-box[data-metric="loss"]').last
    chart.wait_for(timeout=UI_TIMEOUT_MS)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.ct-chart-box[data-metric=loss]')]"
        ".some(b => b.querySelectorAll('.ct-line').length === 2)", timeout=UI_TIMEOUT_MS)
    page.screenshot(path=str(screenshots / "compare.png"))

    # A run's panel shows its logged image, fetched from the run's files.
    run_row(page, first.id).locator(".ct-run-name").click()
    page.wait_for_function(
        "id => { const i = document.querySelector(`#celltrain-run-${id} .ct-image-box img`);"
        " return i && i.complete && i.naturalWidth === 1; }", arg=first.id,
        timeout=UI_TIMEOUT_MS)

    # ... and "Insert model code" adds a cell that loads the model registered from it.
    page.locator(f"#celltrain-run-{first.id} .ct-insert-model").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-Notebook .jp-Cell .cm-content')]"
        ".some(c => c.textContent.includes('model(\"birds-net\", version=1)'))",
        timeout=UI_TIMEOUT_MS)


def test_sidebar_explains_a_missing_server_extension(tmp_path, monkeypatch, request, page,
                                                     screenshots):
    config = tmp_path / "jupyter-config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"celltrain": False}}}))
    base, token, root = request.getfixturevalue("lab_server")
    show_sidebar(page, open_lab(page, base, token))
    error = page.locator("#celltrain-sidebar .ct-error")
    error.wait_for(state="visible", timeout=UI_TIMEOUT_MS)
    assert "server extension" in error.inner_text()
    assert "jupyter server extension enable celltrain" in error.inner_text()
    page.locator("#celltrain-sidebar").screenshot(
        path=str(screenshots / "sidebar-missing-server.png"))


def test_models_tab_shows_a_deployment_and_stops_it(lab, page, tmp_path, screenshots):
    """An entry-script deployment on the local target (no ONNX needed): Healthy with its URL in
    the Deployments section; Stop ends it, and the section says Stopped."""
    base, token, root, ws = lab
    src = tmp_path / "src"
    src.mkdir()
    run = local_runs(ws, src, lrs=(0.1,))[0]
    version = run.register_model("served-net", "outputs/model.pt")
    (src / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    svc = version.deploy("ui-birds", entry_script="score.py", source_dir=src, target="local")
    write_notebook(root / "scratch.ipynb")
    tab = open_lab(page, base, token, "/tree/scratch.ipynb")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    show_sidebar(page, tab)
    page.locator("#celltrain-sidebar .ct-tab[data-tab='models']").click()
    row = page.locator('#celltrain-sidebar .ct-deployment[data-deployment="ui-birds"]')
    row.wait_for(timeout=UI_TIMEOUT_MS)
    assert "Healthy" in row.inner_text() and svc.url in row.inner_text()
    assert "served-net:1" in row.inner_text()
    page.locator("#celltrain-sidebar").screenshot(path=str(screenshots / "sidebar-deployments.png"))
    row.locator(".ct-stop").click()
    page.wait_for_function(
        "() => { const r = document.querySelector('.ct-deployment[data-deployment=ui-birds]');"
        " return r && r.textContent.includes('Stopped'); }", timeout=60_000)
    assert svc.state == "Stopped"


def test_run_panel_of_a_distributed_run_shows_its_ranks_and_charts_the_picked_one(
        lab, page, tmp_path, screenshots):
    base, token, root, ws = lab
    src = tmp_path / "src"
    src.mkdir()
    (src / "ddp.py").write_text(
        "import torch.distributed as dist\n"
        "from celltrain import log\n"
        "dist.init_process_group('gloo')\n"
        "rank = dist.get_rank()\n"
        "for step in range(4):\n"
        "    log('loss', 1.0 / (step + 1), step=step)\n"
        "    log(f'rank{rank}_only', float(step), step=step)\n"
        "dist.destroy_process_group()\n")
    run = ws.experiment("ddp").submit("ddp.py", src, target="local", procs_per_node=2)
    assert run.wait(timeout=240) == states.COMPLETED, run.logs()
    write_notebook(root / "scratch.ipynb")
    tab = open_lab(page, base, token, "/tree/scratch.ipynb")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    show_sidebar(page, tab)
    run_row(page, run.id).locator(".ct-run-name").click()
    panel = page.locator(f"#celltrain-run-{run.id} .ct-panel")
    panel.wait_for(timeout=UI_TIMEOUT_MS)
    strip = panel.locator(".ct-ranks .ct-rank")
    strip.nth(1).wait_for(timeout=UI_TIMEOUT_MS)
    assert [strip.nth(i).inner_text() for i in range(strip.count())] == [
        "rank 0 · node 0 · completed (0)", "rank 1 · node 0 · completed (0)"]
    panel.locator('.ct-chart-box[data-metric="rank0_only"]').wait_for(timeout=UI_TIMEOUT_MS)
    panel.locator(".ct-rank-picker").select_option("1")
    panel.locator('.ct-chart-box[data-metric="rank1_only"]').wait_for(timeout=UI_TIMEOUT_MS)
    assert panel.locator('.ct-chart-box[data-metric="rank0_only"]').count() == 0
    page.screenshot(path=str(screenshots / "run-panel-ranks.png"))
