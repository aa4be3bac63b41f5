"""A sweep in the celltrain sidebar, in a real JupyterLab and a real Chromium: its trials are
listed under it, and its panel shows the trials table and the sweep's charts."""
from __future__ import annotations


import pytest

from celltrain import choice, states
from missing import unavailable
from test_sidebar_browser import (UI_TIMEOUT_MS, lab, open_lab, run_row,  # noqa: F401 (lab: a fixture)
                                  show_sidebar, write_notebook)

pytestmark = pytest.mark.browser

TRAIN = """
import argparse
from celltrain import log
p = argparse.ArgumentParser(); p.add_argument("--lr", type=float)
a = p.parse_args()
for step in range(5):
    log("val_acc", a.lr * (step + 1), step=step)
"""


@pytest.fixture
def this_build(tmp_path_factory, monkeypatch):
    """JupyterLab takes the first celltrain labextension on its path: put this checkout's
    build (magics/celltrain/labextension) ahead of the one the environment links to."""
    from pathlib import Path
    import celltrain
    built = Path(celltrain.__file__).parent / "labextension"
    if not (built / "package.json").is_file():
        message = f"no lab extension build at {built}: run `npm run build` (make extension)"
        unavailable(message)            # CI builds it: a missing build is a broken set-up
    data = tmp_path_factory.mktemp("jupyter-data")
    (data / "labextensions").mkdir()
    (data / "labextensions" / "celltrain").symlink_to(built)
    monkeypatch.setenv("JUPYTER_PATH", str(data))


def test_a_sweeps_trials_sit_under_it_and_its_panel_shows_the_sweep(this_build, lab, page,
                                                                     tmp_path, screenshots):
    base, token, root, ws = lab
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(TRAIN)
    plain = ws.experiment("hd").submit("train.py", src, args=["--lr", 0.5], target="local")
    sweep = ws.experiment("hd").sweep("train.py", src, target="local",
                                      params={"lr": choice([0.1, 0.2, 0.3])}, metric="val_acc",
                                      sampler="grid", max_runs=3, max_concurrent=3)
    assert sweep.wait(timeout=120) == states.COMPLETED, sweep.reason
    assert plain.wait(timeout=60) == states.COMPLETED
    trials = sorted(sweep.runs(), key=lambda r: r.number)
    write_notebook(root / "scratch.ipynb")
    tab = open_lab(page, base, token, "/tree/scratch.ipynb")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)   # before a panel opens
    show_sidebar(page, tab)
    run_row(page, sweep.id).wait_for(timeout=UI_TIMEOUT_MS)
    order = page.locator("#celltrain-sidebar .ct-run").evaluate_all(
        "rows => rows.map(r => [r.dataset.runId, r.classList.contains('ct-trial')])")
    at = [run_id for run_id, _ in order].index(sweep.id)
    assert order[at + 1:at + 4] == [[t.id, True] for t in trials]     # right under the sweep
    assert [plain.id, False] in order
    assert "sweep" in run_row(page, sweep.id).get_attribute("class")
    page.locator("#celltrain-sidebar").screenshot(path=str(screenshots / "sidebar-sweep.png"))

    run_row(page, sweep.id).locator(".ct-run-name").click()
    panel = page.locator(f"#celltrain-run-{sweep.id}")
    panel.locator(".ct-sweep-view table.celltrain-trials").wait_for(timeout=UI_TIMEOUT_MS)
    rows = panel.locator(".ct-sweep-view tr.trial")
    assert rows.count() == 3
    assert sweep.best_run().id in rows.nth(0).inner_text()       # sorted by the metric
    assert panel.locator(".ct-sweep-view svg.celltrain-parallel polyline.trial").count() == 3
    page.screenshot(path=str(screenshots / "sweep-panel.png"))
