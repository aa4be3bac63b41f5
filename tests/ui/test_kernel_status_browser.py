"""The kernel reads Busy while a ``%%train`` cell waits (issue 15, item 2), in a real JupyterLab 4
and Notebook 7 and Chromium: Run All of a notebook with two ``%%train`` cells (local runs of
~20 s that log metrics), clicking the second one's widget controls while it runs.

The kernel's status is read where a person reads it, in the status bar ("Python 3 (ipykernel) |
Busy"), sampled in the page every 100 ms while a run's badge says Running: the cell then
certainly still waits.  JupyterLab 4.6 asks the kernel for a subshell when the first widget
appears and sends widget messages there, and the clicks are handled on a subshell too; each of
those requests ends with an "idle" that JupyterLab took as the whole kernel's (the first cell
read Idle from its widget's first moments, the second from the first click).  celltrain's
JupyterLab extension now has those requests' status ignored (``extension/src/status.ts``; its
plugin runs in Notebook 7 too).  Notebook 7 shows the status as its tab's icon (busy or not)
and its toolbar's circle; on the old code the tab icon read idle all through a run.  The
status messages the page received are listed when the test fails.
"""
from __future__ import annotations

import json
import struct

import pytest

from test_widget_browser import run_first_cell
from views import open_notebook, set_theme, write_notebook

pytestmark = pytest.mark.browser

TRAIN_CELL = """\
%%train --target local --experiment {name}
import time
for i in progress(range(50), desc="epoch"):
    log("loss", 2.0 / (1 + i), step=i)
    log("val_loss", 2.4 / (1 + i), step=i)
    time.sleep(0.4)
"""
CELLS = ["%load_ext celltrain", "lr = 0.01", TRAIN_CELL.format(name="first"),
         TRAIN_CELL.format(name="second"), "after = 1"]
TRAIN_CELLS = (2, 3)

# Every 100 ms, per train cell: its prompt, its run's badge; and the status bar's kernel status.
SAMPLER = """(cells) => {
    window.ctSamples = [];
    window.ctSampler = setInterval(() => {
        const bar = document.querySelector('#jp-main-statusbar');
        const state = bar && /\\|\\s*([A-Z][a-z]+)/.exec(bar.textContent);
        const all = document.querySelectorAll('.jp-Notebook .jp-Cell');
        for (const i of cells) {
            const badge = all[i] && all[i].querySelector('.celltrain-badge');
            window.ctSamples.push({cell: i, prompt: all[i].querySelector('.jp-InputPrompt')
                .textContent, run: badge ? badge.textContent : '', kernel: state ? state[1] : ''});
        }
    }, 100);
}"""
STATUS_BAR_STATES = {"Idle", "Busy", "Starting", "Connecting", "Restarting", "Unknown", "Dead",
                     "Initializing", "Reconnecting", "Terminating", "Autorestarting"}


def _status_messages(page, record: list) -> None:
    """Keep (state, parent's msg_type, parent's subshell) of each status message the page gets
    (the v1 kernel websocket protocol: part offsets, then the channel and JSON parts)."""
    def frame(payload):
        if isinstance(payload, str):
            return
        try:
            n = struct.unpack_from("<Q", payload, 0)[0]
            offsets = [*struct.unpack_from(f"<{n}Q", payload, 8), len(payload)]
            part = [payload[offsets[i]:offsets[i + 1]] for i in range(n)]
            header, parent = json.loads(part[1]), json.loads(part[2])
            if part[0] == b"iopub" and header["msg_type"] == "status":
                record.append((json.loads(part[4])["execution_state"],
                               parent.get("msg_type"), parent.get("subshell_id")))
        except (struct.error, IndexError, ValueError, KeyError):
            pass     # not a kernel message of this protocol
    page.on("websocket", lambda ws: ws.on("framereceived", frame))


def _click_the_controls(cell) -> None:
    """What a person does while a run goes on: log scale, x by time, open the log."""
    widget = cell.locator(".celltrain-run")
    widget.get_by_text("log scale").first.click()
    widget.locator("button", has_text="time").click()
    widget.locator(".jupyter-widget-Collapse-header").first.click()
    widget.locator("button", has_text="step").click()


def test_the_kernel_reads_busy_while_train_cells_run_all_through(
        workspace, monkeypatch, request, page, screenshots):
    monkeypatch.setenv("CELLTRAIN_WORKSPACE", str(workspace.path))
    base, token, root = request.getfixturevalue("lab_server")
    write_notebook(root / "runall.ipynb", *CELLS)
    statuses: list = []
    _status_messages(page, statuses)
    open_notebook(page, base, token, "runall.ipynb")
    page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.wait_for(timeout=90_000)
    page.locator(".jp-StatusBar-Widget", has_text="Idle").first.wait_for(timeout=180_000)
    samples = _run_all_clicking(page, SAMPLER, screenshots / "views-kernel-status-run-all.png")
    page.screenshot(path=str(screenshots / "views-kernel-status-after-run-all.png"))
    seen = {s["kernel"] for s in samples}
    assert seen <= STATUS_BAR_STATES and "Busy" in seen, f"no kernel status read: {seen}"
    _check_busy_while_running(samples, "kernel", "the status bar", statuses)


def _run_all_clicking(page, sampler: str, shot, settled: str | None = None) -> list:
    """Start ``sampler``, Run All, click the second train cell's controls while its run goes
    on (then a screenshot to ``shot``); wait for the last cell (and, with ``settled``, until
    that test of the latest sample holds: the kernel idle again); the samples."""
    page.evaluate(sampler, list(TRAIN_CELLS))
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    second = page.locator(".jp-Notebook .jp-Cell").nth(TRAIN_CELLS[1])
    second.locator(".celltrain-run", has_text="Running").wait_for(timeout=120_000)
    second.locator(".celltrain-run polyline.series").first.wait_for(timeout=60_000)
    _click_the_controls(second)
    page.screenshot(path=str(shot))
    page.wait_for_function(
        "n => /\\[\\d+\\]/.test(document.querySelectorAll('.jp-Notebook .jp-Cell')[n]"
        ".querySelector('.jp-InputPrompt').textContent)", arg=len(CELLS) - 1, timeout=120_000)
    if settled:
        page.wait_for_function(f"() => {{ const s = window.ctSamples; "
                               f"return s.length > 0 && ({settled})(s[s.length - 1]); }}",
                               timeout=60_000)
    samples = page.evaluate("() => { clearInterval(window.ctSampler); return window.ctSamples; }")
    assert "Completed" in second.locator(".celltrain-run").inner_text()
    return samples


def _check_busy_while_running(samples: list, key: str, where: str, statuses: list) -> None:
    """Every sample of a train cell taken while its run was Running and the cell [*] read
    busy at ``key``; else the status messages the page got are listed."""
    for i in TRAIN_CELLS:
        running = [s for s in samples if s["cell"] == i and s["run"] == "Running"
                   and "*" in s["prompt"]]
        assert len(running) >= 5, f"cell {i} was seen Running only {len(running)} times"
        idle = [s for s in running if s[key].lower() != "busy"]
        assert not idle, (
            f"cell {i}: {where} read {sorted({s[key] for s in idle})} in "
            f"{len(idle)} of {len(running)} samples while its run was Running and the cell "
            f"[*]; the status messages the page got (state, parent, parent's subshell): "
            + "; ".join(" ".join(map(str, m)) for m in statuses
                        if m[1] not in ("execute_request", "debug_request")))


# Notebook 7 has no status bar: the kernel's status shows as the tab's icon (its favicon turns
# busy, "favicon-busy-1.ico", while the kernel is busy) and as the toolbar's circle (whose
# data-status is the kernel's, or "busy" while cells it counted still run).
NB7_SAMPLER = """(cells) => {
    window.ctSamples = [];
    window.ctSampler = setInterval(() => {
        const icon = document.querySelector("link[rel*='icon']");
        const circle = document.querySelector('.jp-Notebook-ExecutionIndicator');
        const all = document.querySelectorAll('.jp-Notebook .jp-Cell');
        for (const i of cells) {
            const badge = all[i] && all[i].querySelector('.celltrain-badge');
            window.ctSamples.push({cell: i, prompt: all[i].querySelector('.jp-InputPrompt')
                .textContent, run: badge ? badge.textContent : '',
                tab: icon && /favicon-busy/.test(icon.href) ? 'Busy' : 'Idle',
                toolbar: circle ? circle.dataset.status : ''});
        }
    }, 100);
}"""


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_notebook7_reads_busy_while_train_cells_run_all_through(
        theme, workspace, monkeypatch, request, page, screenshots):
    """The same Run All in Notebook 7: its tab icon and its toolbar's kernel circle say busy
    as long as a %%train cell waits for its run, widget clicks included."""
    monkeypatch.setenv("CELLTRAIN_WORKSPACE", str(workspace.path))
    base, token, root = request.getfixturevalue("notebook_server")
    set_theme(base, token, theme)
    write_notebook(root / "runall.ipynb", *CELLS)
    statuses: list = []
    _status_messages(page, statuses)
    open_notebook(page, base, token, "runall.ipynb", "notebook")
    page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.wait_for(timeout=90_000)
    # The toolbar's circle reads idle before the kernel is connected, and a Run All then does
    # nothing: the first cell is run (with retries) until the kernel answers.
    run_first_cell(page, "notebook")
    page.locator(".jp-Cell .jp-InputPrompt", has_text="[1]").first.wait_for(timeout=90_000)
    # celltrain's front-end plugin (which untracks the widgets' requests) runs here too: its
    # sidebar is in the page, in Notebook 7's hidden left area.
    page.locator("#celltrain-sidebar").wait_for(state="attached", timeout=30_000)
    try:
        # the last cell's prompt can show before the icon turns idle: sample until it has
        samples = _run_all_clicking(
            page, NB7_SAMPLER, screenshots / f"views-kernel-status-notebook7-{theme}.png",
            settled="s => s.tab === 'Idle'")
    except Exception:
        page.screenshot(path=str(screenshots / f"views-kernel-status-notebook7-{theme}-failed.png"))
        raise
    assert {s["tab"] for s in samples} == {"Busy", "Idle"}, "the tab icon never changed"
    _check_busy_while_running(samples, "tab", "Notebook 7's tab icon", statuses)
    _check_busy_while_running(samples, "toolbar", "Notebook 7's toolbar circle", statuses)
