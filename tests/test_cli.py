"""The celltrain command is a view of the same store."""
from __future__ import annotations

import subprocess
import sys

from celltrain import states

TRAIN = "from celltrain import log\nfor i in range(3):\n    log('loss', 1.0 / (i + 1))\nprint('trained')\n"


def cli(workspace, *args):
    return subprocess.run([sys.executable, "-m", "celltrain.cli", "-w", str(workspace.path),
                           *args], capture_output=True, text=True, timeout=120)


def test_runs_show_logs(workspace, make_source):
    run = workspace.experiment("birds").submit("train.py", make_source(TRAIN), target="local")
    assert run.wait(timeout=60) == states.COMPLETED
    listing = cli(workspace, "runs")
    assert listing.returncode == 0
    assert run.id in listing.stdout and "Completed" in listing.stdout and "loss=0.3333" in listing.stdout
    shown = cli(workspace, "show", run.id[:-2])     # a unique prefix is enough
    assert "status      Completed" in shown.stdout and "Finalizing" in shown.stdout
    assert "trained" in cli(workspace, "logs", run.id).stdout
    assert "trained" in cli(workspace, "logs", run.id, "-f").stdout


def test_cancel_from_the_command_line(workspace, make_source):
    src = make_source("import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    run = workspace.experiment("x").submit("train.py", src, target="local")
    import time
    while "ready" not in run.logs():
        time.sleep(0.1)
    result = cli(workspace, "cancel", run.id, "--grace", "2")
    assert result.returncode == 0 and "Canceled" in result.stdout
    assert run.status == states.CANCELED


def test_unknown_run_is_a_clear_error(workspace):
    result = cli(workspace, "show", "nope")
    assert result.returncode == 2
    assert "no run 'nope' in workspace" in result.stderr


def test_a_missing_workspace_is_an_error_and_is_not_created(tmp_path):
    missing = tmp_path / "no-such-workspace"
    for args in (["runs"], ["show", "x"], ["logs", "x"], ["cancel", "x"], ["models"]):
        result = subprocess.run([sys.executable, "-m", "celltrain.cli", "-w", str(missing),
                                 *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, (args, result.stdout)
        assert f"no workspace at {missing}" in result.stderr
        assert "a workspace is created by the first submit, or pass -w with an existing one" \
            in result.stderr
        assert not missing.exists()


def test_an_empty_folder_is_not_taken_for_a_workspace(tmp_path):
    """A folder without celltrain.db (a typo'd -w pointing at the project, say) is left alone."""
    result = subprocess.run([sys.executable, "-m", "celltrain.cli", "-w", str(tmp_path), "runs"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and f"no workspace at {tmp_path}" in result.stderr
    assert list(tmp_path.iterdir()) == []
