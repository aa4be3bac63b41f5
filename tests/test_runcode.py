"""Code capture: a ``%%train`` run keeps its cell's source and notebook, a script run its
command line; ``run.code``, ``celltrain show`` and the widget's System section show what the host
sampled.  Real IPython shell, real local runs, the real CLI."""
from __future__ import annotations

from IPython.utils.capture import capture_output

from celltrain import states
from celltrain.run import Run
from celltrain.views.widget import RunWidget
from test_cli import cli
from test_magics import ip, shell  # noqa: F401  (the real IPython shell, a fresh workspace)

CELL = """%%train --target local
total = 0
for i in range(3):
    total += i
print("cell total", total)
"""


def test_train_cell_keeps_its_source_and_notebook(ip, monkeypatch):
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/notebooks/birds.ipynb")
    with capture_output():
        result = ip.run_cell(CELL, store_history=True)
    assert result.error_in_exec is None, result.error_in_exec
    ws = ip.magics_manager.registry["TrainMagics"].workspace()
    run = Run(ws, ws.runs()[0].id)
    assert run.status == states.COMPLETED
    code = run.code
    assert code["kind"] == "cell" and code["command"] is None
    assert code["source"].startswith("%%train --target local\ntotal = 0\n")
    assert 'print("cell total", total)' in code["source"]
    assert code["notebook"] == "/home/me/notebooks/birds.ipynb"
    assert code["cell"].startswith("In [")
    shown = cli(ws, "show", run.id).stdout
    assert f"notebook    /home/me/notebooks/birds.ipynb {code['cell']}" in shown
    assert "code\n  %%train --target local\n  total = 0\n" in shown


def test_script_run_keeps_its_command_line_and_shows_system_samples(workspace, make_source,
                                                                    monkeypatch):
    monkeypatch.setenv("CELLTRAIN_SYS_INTERVAL", "0.3")
    src = make_source("import time\nend = time.time() + 1.5\nwhile time.time() < end: pass\n",
                      name="train net.py")
    run = workspace.experiment("e").submit("train net.py", src, args=["--epochs", 10],
                                           target="local")
    assert run.wait(timeout=60) == states.COMPLETED
    assert run.code == {"kind": "script", "source": None, "notebook": None, "cell": None,
                        "command": "python 'train net.py' --epochs 10"}
    shown = cli(workspace, "show", run.id).stdout
    assert "command     python 'train net.py' --epochs 10" in shown
    assert "system (last sample)" in shown and "sys/mem_bytes" in shown and "MiB" in shown
    assert "\ncode\n" not in shown

    widget = RunWidget(run, live=False)
    widget.refresh(force=True)
    assert widget.system.box.selected_index is None and widget.system.html.value == ""
    widget.system.box.selected_index = 0              # a person opens the section
    drawn = widget.system.html.value
    assert "celltrain-system" in drawn and drawn.count("<svg") >= 2    # CPU and memory
    assert "CPU (%)" in drawn and "memory (MiB)" in drawn
    widget.close()
