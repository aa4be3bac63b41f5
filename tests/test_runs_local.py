"""Runs through their states, outliving whoever started them (local target: no Docker needed)."""
from __future__ import annotations

import os
import time

import pytest

from celltrain import RunNotFound, SourceTooLarge, states
from test_faults_process import supervisor_pid as _supervisor_pid  # noqa: F401 (docker tests)

# Timeouts and a supervisor killed mid-run: tests/test_faults_process.py

TRAIN = """
import os, sys
from celltrain import Run, progress
run = Run.get_context()
for i in progress(range(10)):
    run.log("loss", 1.0 / (i + 1))
run.log_row("summary", best=0.1)
os.makedirs("outputs", exist_ok=True)
open("outputs/model.pt", "w").write("weights")
print("done with", sys.argv[1:])
"""


def test_completed_run_has_metrics_outputs_history_and_logs(workspace, make_source):
    src = make_source(TRAIN)
    run = workspace.experiment("exp").submit("train.py", src, args=["--epochs", 10],
                                             target="local", params={"lr": 0.1})
    assert run.wait(timeout=60) == states.COMPLETED
    assert run.metrics()["loss"] == [1.0 / (i + 1) for i in range(10)]
    assert [s for s, _, _ in run.metric("loss")] == list(range(10))
    assert run.table("summary") == [{"best": 0.1}]
    assert "outputs/model.pt" in run.files()
    assert "done with ['--epochs', '10']" in run.logs()
    assert [h["status"] for h in run.history()] == list(states.ORDER)
    assert run.params == {"lr": 0.1} and run.number == 1
    assert run.record["progress"]["n"] == 10
    target = run.download("outputs/model.pt", str(src.parent / "model"))
    assert target.read_text() == "weights"


def test_failed_run_says_exit_code_and_last_stderr_lines(workspace, make_source):
    src = make_source("import sys\nprint('about to fail', file=sys.stderr)\nsys.exit(3)\n")
    run = workspace.experiment("exp").submit("train.py", src, target="local")
    assert run.wait(timeout=60) == states.FAILED
    assert run.exit_code == 3
    assert "exit code 3" in run.reason and "about to fail" in run.reason


def test_cancel_sends_sigterm_and_keeps_what_was_logged(workspace, make_source):
    src = make_source("""
        import time
        from celltrain import log
        log("before", 1.0)
        print("ready", flush=True)
        time.sleep(60)
    """)
    run = workspace.experiment("exp").submit("train.py", src, target="local")
    deadline = time.time() + 30
    while "ready" not in run.logs() and time.time() < deadline:
        time.sleep(0.1)
    assert run.cancel(grace=5) == states.CANCELED
    assert run.reason == "canceled by the user"
    assert run.metrics() == {"before": [1.0]}


def test_bad_input_is_refused_before_a_run_exists(workspace, make_source, tmp_path):
    src = make_source("print(1)")
    exp = workspace.experiment("exp")
    with pytest.raises(FileNotFoundError, match="source folder .* does not exist"):
        exp.submit("train.py", tmp_path / "nowhere", target="local")
    with pytest.raises(FileNotFoundError, match="script 'missing.py' is not in"):
        exp.submit("missing.py", src, target="local")
    with pytest.raises(ValueError, match="target takes one of docker, local, ray, not 'cloud'"):
        exp.submit("train.py", src, target="cloud")
    with pytest.raises(ValueError, match="gpus takes 'all', 'none', a count"):
        exp.submit("train.py", src, gpus="two")
    assert workspace.runs() == []


def test_source_over_the_limit_names_the_files_and_the_ignore_fix(workspace, make_source):
    src = make_source("print(1)")
    (src / "data").mkdir()
    (src / "data" / "big.bin").write_bytes(os.urandom(2 * 2**20))
    exp = workspace.experiment("exp")
    with pytest.raises(SourceTooLarge, match=r"(?s)over the 1 MB.*data/big.bin.*\.celltrainignore"):
        exp.submit("train.py", src, target="local", snapshot_limit_mb=1)
    assert workspace.runs() == []
    (src / ".celltrainignore").write_text("data/\n")
    run = exp.submit("train.py", src, target="local", snapshot_limit_mb=1)
    assert run.wait(timeout=60) == states.COMPLETED
    assert not (run.folder / "snapshot" / "data").exists()


def test_unknown_run_id_is_a_clear_error(workspace):
    with pytest.raises(RunNotFound, match="no run 'nope' in workspace"):
        workspace.run("nope")
