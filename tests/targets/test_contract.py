"""What every compute target must do, written once and run against each (see conftest.TARGETS).

States, reasons, cancel, timeout, outputs back, re-attach after the supervisor dies: the
behaviours a user relies on whatever runs the script.
"""
from __future__ import annotations

import os
import signal
import time

from celltrain import Workspace, states
from celltrain.workspace import supervisor_alive
from test_faults_process import supervisor_pid

WAIT_S = 180

TRAIN = """
import os, sys
from celltrain import Run
run = Run.get_context()
for i in range(5):
    run.log("loss", 1.0 / (i + 1))
os.makedirs("outputs", exist_ok=True)
open("outputs/model.pt", "w").write("weights")
os.makedirs("logs", exist_ok=True)
open("logs/train.log", "w").write("epoch 1\\n")
print("args", sys.argv[1:], "greeting", os.environ.get("GREETING"), "params", run.params)
"""


def _wait_for(predicate, timeout=WAIT_S):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_a_run_passes_every_state_and_brings_back_metrics_outputs_and_logs(target, make_source):
    run = target.submit(make_source(TRAIN), args=["--epochs", 2], params={"lr": 0.5},
                        env_vars={"GREETING": "hello"})
    assert run.wait(timeout=WAIT_S) == states.COMPLETED, run.reason
    seen = [h["status"] for h in run.history()]
    assert seen == [states.QUEUED, states.PREPARING, states.STARTING, states.RUNNING,
                    states.FINALIZING, states.COMPLETED]
    assert run.exit_code == 0 and run.reason is None
    assert run.metrics() == {"loss": [1.0, 0.5, 1 / 3, 0.25, 0.2]}
    assert {"outputs/model.pt", "logs/train.log"} <= set(run.files())
    assert (run.folder / "outputs" / "model.pt").read_text() == "weights"
    assert "args ['--epochs', '2'] greeting hello params {'lr': 0.5}" in run.logs()


def test_a_failing_script_fails_with_its_exit_code_and_stderr_and_keeps_outputs(target,
                                                                                  make_source):
    run = target.submit(make_source("""
        import os, sys
        os.makedirs("outputs", exist_ok=True)
        open("outputs/checkpoint.pt", "w").write("half")
        print("loss went nan", file=sys.stderr)
        sys.exit(3)
    """))
    assert run.wait(timeout=WAIT_S) == states.FAILED
    assert run.exit_code == 3
    assert run.reason.startswith("exit code 3") and "loss went nan" in run.reason
    assert (run.folder / "outputs" / "checkpoint.pt").read_text() == "half"


def test_cancel_stops_a_running_script_and_keeps_what_it_logged(target, make_source):
    run = target.submit(make_source("""
        import time
        from celltrain import log
        log("before", 1.0)
        print("ready", flush=True)
        time.sleep(300)
    """))
    _wait_for(lambda: "ready" in run.logs())
    assert run.cancel(grace=3) == states.CANCELED
    assert run.reason == "canceled by the user"
    assert run.metrics() == {"before": [1.0]}


def test_cancel_before_the_run_starts_cancels_it(target, make_source):
    run = target.submit(make_source("print('never')"))
    status = run.cancel(grace=1)
    assert status == states.CANCELED
    # Whether it was caught before or after starting, nothing of the script is left running.
    assert run.reason in ("canceled before the run started", "canceled by the user")


def test_a_timeout_stops_the_run_and_says_so(target, make_source):
    run = target.submit(make_source("import time; time.sleep(300)"), timeout=3)
    assert run.wait(timeout=WAIT_S) == states.FAILED
    assert "timed out after 3s" in run.reason


def test_a_cancel_of_a_finished_run_changes_nothing(target, make_source):
    run = target.submit(make_source("print('quick')"))
    assert run.wait(timeout=WAIT_S) == states.COMPLETED
    history = run.history()
    assert run.cancel(grace=1) == states.COMPLETED
    assert run.history() == history


def test_a_run_outlives_its_supervisor_and_the_next_opener_finishes_it(target, make_source):
    run = target.submit(make_source("""
        import time
        from celltrain import log
        for i in range(30):
            log("x", i)
            time.sleep(0.1)
        print("finished")
    """))
    _wait_for(lambda: run.status == states.RUNNING)
    os.kill(supervisor_pid(run.folder), signal.SIGKILL)
    _wait_for(lambda: not supervisor_alive(run.folder))
    again = Workspace(target.workspace.path).run(run.id)        # a new kernel, say
    assert again.wait(timeout=WAIT_S) == states.COMPLETED, again.reason
    assert again.metrics()["x"] == list(range(30))
    assert "finished" in again.logs()


def test_the_runs_cpu_and_memory_are_sampled_apart_from_its_metrics(target, make_source,
                                                                    monkeypatch):
    """README "System metrics": the supervisor samples what the run uses into sys/ series
    (the Ray target through its nodes' agents)."""
    monkeypatch.setenv("CELLTRAIN_SYS_INTERVAL", "0.3")
    run = target.submit(make_source(
        "import time\nfrom celltrain import log\nblock = bytearray(32 * 2**20)\n"
        "for i in range(0, len(block), 4096):\n    block[i] = 1\n"
        "end = time.time() + 2\nwhile time.time() < end:\n    pass\nlog('loss', 1.0)\n"))
    assert run.wait(timeout=WAIT_S) == states.COMPLETED, run.reason
    series = run.system_metrics()
    assert run.metrics() == {"loss": [1.0]}
    assert max(series["sys/mem_bytes"]["v"]) > 32 * 2**20, series
    assert max(series["sys/cpu_percent"]["v"]) > 0, series
