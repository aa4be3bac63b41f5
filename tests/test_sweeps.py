"""Hyperparameter sweeps on Optuna with real child runs (local processes; one Docker sweep).

The script's metric depends on ``lr`` in a known way: its peak is ``1 - (log10(lr) + 2)^2 / 4``,
best at lr = 0.01, and it rises over the steps, so a bad lr is behind at every step.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest

from celltrain import (BadSpace, BanditPolicy, MedianStoppingPolicy, Workspace, choice,
                       loguniform, quniform, randint, states, uniform)
from celltrain.sweep.space import parse_param
from procs import process_with

TRAIN = """
import argparse, math, sys, time
from celltrain import Run
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, required=True)
p.add_argument("--epochs", type=int, default=8)
p.add_argument("--batch_size", type=int, default=32)
a = p.parse_args()
run = Run.get_context()
run.log_row("lineage", parent=run.parent_id)
if run.params.get("lr") != a.lr or run.params.get("batch_size", 32) != a.batch_size:
    sys.exit(f"params {run.params} differ from the arguments {sys.argv[1:]}")
peak = 1 - (math.log10(a.lr) + 2) ** 2 / 4
for step in range(a.epochs):
    run.log("val_acc", peak * (1 - math.exp(-(step + 1) / 2)), step=step)
    time.sleep(SLEEP)
"""


def script(sleep: float = 0.15) -> str:
    return TRAIN.replace("SLEEP", repr(sleep))


def most_at_once(intervals) -> int:
    """The most intervals (start, end) open at one time."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, change in events:
        now += change
        peak = max(peak, now)
    return peak


def cli(ws, *args):
    return subprocess.run([sys.executable, "-m", "celltrain.cli", "-w", str(ws.path), *args],
                          capture_output=True, text=True, timeout=120)


def test_a_sweep_finds_the_known_best_lr_stops_bad_trials_and_keeps_to_its_limit(
        workspace, make_source):
    src = make_source(script())
    sweep = workspace.experiment("hd").sweep(
        "train.py", src, args=["--epochs", 8], target="local",
        params={"lr": loguniform(1e-4, 1e-1), "batch_size": choice([16, 32, 64])},
        metric="val_acc", goal="maximize", sampler="random", seed=3,
        early_termination=MedianStoppingPolicy(delay_evaluation=2, startup_trials=3),
        max_runs=12, max_concurrent=3)
    assert sweep.wait(timeout=400) == states.COMPLETED, sweep.reason
    record = sweep.record
    assert record["kind"] == "sweep"
    cfg = record["spec"]["sweep"]
    assert cfg["space"]["lr"] == {"kind": "loguniform", "low": 1e-4, "high": 1e-1}
    assert cfg["sampler"]["name"] == "random" and cfg["goal"] == "maximize"
    assert cfg["policy"]["name"] == "median" and cfg["policy"]["delay_evaluation"] == 2

    children = workspace.store.child_runs(sweep.id)
    assert len(children) == 12
    assert sorted(int(c["tags"]["celltrain.trial"]) for c in children) == list(range(12))
    for c in children:
        assert c["kind"] == "trial" and c["parent_id"] == sweep.id
        assert c["args"][:2] == ["--epochs", "8"] and "--lr" in c["args"]
        assert float(c["args"][c["args"].index("--lr") + 1]) == c["params"]["lr"]
        assert c["status"] in (states.COMPLETED, states.CANCELED), c["reason"]
    # never more than 3 at once, from the children's own times
    assert most_at_once([(c["started"], c["ended"]) for c in children]) <= 3
    assert most_at_once([(c["created"], c["ended"]) for c in children]) <= 3
    stopped = [c for c in children if c["status"] == states.CANCELED]
    assert stopped, "the median policy stopped no trial"
    for c in stopped:
        assert c["reason"].startswith("early termination: median stopping at step "), c
        assert "val_acc" in c["reason"] and "< median" in c["reason"]

    best = sweep.best_run()
    assert best.status == states.COMPLETED
    assert abs(math.log10(best.params["lr"]) + 2) < 0.5, best.params
    assert sweep.best()["run"] == best.id
    assert workspace.store.latest_metrics(sweep.id)["best_val_acc"] == pytest.approx(
        best.metrics()["val_acc"][-1])
    table = sweep.trials_table()
    assert len(table) == 12 and table.iloc[0]["run"] == best.id
    assert {"lr", "batch_size", "status", "value"} <= set(table.columns)

    view = sweep.show(live=False)      # outside a notebook: the widget, not displayed
    page = view.static_html()
    table = page.split('class="celltrain-trials"')[1]
    assert table.count('<tr class="trial"') == 12 and table.count("(stopped)") == len(stopped)
    assert table.index(best.id) < min(table.index(c["id"]) for c in children if c["id"] != best.id)
    parallel = page.split('class="celltrain-parallel"')[1].split("</svg>")[0]
    assert parallel.count('<polyline class="trial"') == 12
    assert "best val_acc so far" in page and "val_acc of every trial" in page
    view.sort.value = "trial"
    assert view.table.value.index(">0</td>") < view.table.value.index(">1</td>")

    again = Workspace(workspace.path).sweep(sweep.id[:-2])   # another handle, by prefix
    assert again.best_run() == best and len(again.runs()) == 12
    listing = cli(workspace, "sweeps")
    assert sweep.id in listing.stdout and "12/12" in listing.stdout
    shown = cli(workspace, "show", sweep.id)
    assert shown.returncode == 0 and best.id in shown.stdout
    assert "early termination: median stopping" in shown.stdout
    trial = cli(workspace, "show", stopped[0]["id"])
    assert f"sweep       {sweep.id} (trial {stopped[0]['tags']['celltrain.trial']})" in trial.stdout


def controller_pid(sweep_id: str) -> int | None:
    return process_with(b"celltrain.sweep.controller", sweep_id.encode())


def test_a_killed_controller_is_adopted_and_loses_or_repeats_no_trial(workspace, make_source):
    src = make_source(script(0.3))
    sweep = workspace.experiment("resume").sweep(
        "train.py", src, args=["--epochs", 4], target="local",
        params={"lr": loguniform(1e-3, 1e-1)}, metric="val_acc", sampler="random", seed=1,
        max_runs=6, max_concurrent=2)
    deadline = time.monotonic() + 60
    while len(workspace.store.child_runs(sweep.id)) < 2:
        assert time.monotonic() < deadline, "the sweep started no trial"
        time.sleep(0.05)
    pid = controller_pid(sweep.id)
    os.kill(pid, signal.SIGKILL)
    while controller_pid(sweep.id) == pid:
        time.sleep(0.02)
    # A controller killed after asking Optuna for a trial but before starting its run: the
    # study holds a running trial that no child has.
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    storage = JournalStorage(JournalFileBackend(str(sweep.folder / "study.journal")))
    orphan = optuna.load_study(study_name=sweep.id, storage=storage).ask().number

    Workspace(workspace.path)          # opening the workspace adopts the sweep
    assert sweep.wait(timeout=300) == states.COMPLETED, sweep.reason
    children = workspace.store.child_runs(sweep.id)
    numbers = sorted(int(c["tags"]["celltrain.trial"]) for c in children)
    assert numbers == list(range(6)) and orphan in numbers
    trials = optuna.load_study(study_name=sweep.id, storage=storage).trials
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    by_number = {t.number: t for t in trials}
    for c in children:
        assert by_number[int(c["tags"]["celltrain.trial"])].params["lr"] == c["params"]["lr"]
        assert c["status"] == states.COMPLETED
    assert "controller resumed" in (sweep.folder / "controller.log").read_text()


def test_every_trial_failing_fails_the_sweep_with_their_common_reason(workspace, make_source):
    src = make_source("import sys\nprint('no data here', file=sys.stderr)\nsys.exit(4)\n")
    sweep = workspace.experiment("broken").sweep(
        "train.py", src, target="local", params={"lr": uniform(0.1, 1)}, metric="val_acc",
        max_runs=10, max_concurrent=2, sampler="random")
    assert sweep.wait(timeout=200) == states.FAILED
    assert sweep.reason.startswith("every trial failed")
    assert "exit code 4" in sweep.reason and "no data here" in sweep.reason
    # it started no trial once 3 had failed (the 2nd of a pair may have been running then)
    assert 3 <= len(sweep.runs()) <= 4
    assert sweep.best_run() is None


def test_a_trial_that_logs_no_metric_fails_and_canceling_the_sweep_cancels_its_trials(
        workspace, make_source):
    src = make_source("import time\nprint('up', flush=True)\ntime.sleep(120)\n")
    sweep = workspace.experiment("cancel").sweep(
        "train.py", src, target="local", params={"lr": uniform(0.1, 1)}, metric="val_acc",
        max_runs=4, max_concurrent=2, sampler="random")
    deadline = time.monotonic() + 60
    while sum(r.status == states.RUNNING for r in sweep.runs()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert sweep.cancel(grace=2) == states.CANCELED
    assert "canceled by the user" in sweep.reason
    runs = sweep.runs()
    assert len(runs) == 2 and all(r.status == states.CANCELED for r in runs)
    assert all("the sweep was canceled" in r.reason for r in runs)


def test_a_sweep_past_its_duration_limit_starts_no_trial_and_cancels_the_running_one(
        workspace, make_source, tmp_path):
    # The first trial to start finishes at once; every later one would run for 5 minutes.
    first = tmp_path / "first-trial-started"
    src = make_source(f"""
import os, time
from celltrain import Run
run = Run.get_context()
run.log_row("lineage", parent=run.parent_id)
run.log("val_acc", run.params["lr"], step=0)
try:
    os.close(os.open({str(first)!r}, os.O_CREAT | os.O_EXCL))
except FileExistsError:
    time.sleep(300)
""")
    sweep = workspace.experiment("limited").sweep(
        "train.py", src, target="local", params={"lr": uniform(0.1, 1)}, metric="val_acc",
        max_runs=5, max_concurrent=1, sampler="random", max_duration_s=30)
    assert sweep.wait(timeout=200) == states.COMPLETED     # the first trial's result stands
    assert "duration limit (max_duration_s=30, 0.5 min) was reached" in sweep.reason
    assert "no new trial was started and the running ones were canceled" in sweep.reason
    runs = sweep.runs()
    assert [r.status for r in runs] == [states.COMPLETED, states.CANCELED]
    assert "canceled: the sweep's duration limit" in runs[1].reason
    assert sweep.best_run().id == runs[0].id
    assert runs[0].table("lineage") == [{"parent": sweep.id}]   # CELLTRAIN_PARENT_RUN_ID


@pytest.mark.parametrize("kwargs, words", [
    (dict(params={"lr": (1e-4, 1e-1)}), "is not a distribution"),
    (dict(params={}), "at least one"),
    (dict(params={"learning-rate": uniform(0, 1)}), "'learning-rate' must be an identifier"),
    (dict(sampler="grid"), "sampler='grid' needs a discrete space"),
    (dict(sampler="bayes"), "unknown sampler 'bayes'"),
    (dict(early_termination="bandits"), "unknown early_termination 'bandits'"),
    (dict(goal="max_acc"), "goal='max_acc'"),
    (dict(max_concurrent=0), "max_concurrent must be a whole number"),
    (dict(metric=""), "metric= must name the metric"),
    (dict(max_duration_s=0), "max_duration_s must be a number of seconds above 0"),
    (dict(max_duration_s="1h"), "max_duration_s must be a number of seconds above 0"),
])
def test_a_bad_sweep_is_refused_before_anything_starts(workspace, make_source, kwargs, words):
    src = make_source(script())
    options = dict(params={"lr": loguniform(1e-4, 1e-1)}, metric="val_acc", target="local")
    with pytest.raises(BadSpace, match=words.replace("(", r"\(").replace("[", r"\[")):
        workspace.experiment("bad").sweep("train.py", src, **{**options, **kwargs})
    assert workspace.store.count_runs() == 0


@pytest.mark.parametrize("make, words", [
    (lambda: loguniform(0, 1), "both bounds must be above 0"),
    (lambda: uniform(1, 1), "low must be below high"),
    (lambda: uniform(0, float("nan")), "must be a finite number"),
    (lambda: choice([]), "nothing to choose from"),
    (lambda: choice("abc"), "takes a list of values"),
    (lambda: choice([1, [2]]), "must be numbers, strings"),
    (lambda: randint(1.5, 3), "takes integers"),
    (lambda: quniform(0, 1, 2), "the step must be above 0"),
    (lambda: BanditPolicy(), "exactly one of slack_factor= and slack_amount="),
    (lambda: MedianStoppingPolicy(evaluation_interval=0), "evaluation_interval must be"),
    (lambda: parse_param("lr=gauss(0,1)"), "unknown distribution 'gauss'"),
    (lambda: parse_param("lr loguniform(1e-4, 1)"), "write NAME=DIST"),
])
def test_a_bad_distribution_or_policy_says_what_to_write(make, words):
    with pytest.raises(BadSpace, match=words.replace("(", r"\(").replace("=", "=")):
        make()


def test_magic_params_parse_without_eval():
    assert parse_param("lr=loguniform(1e-4,1e-1)") == ("lr", loguniform(1e-4, 1e-1))
    assert parse_param("bs=choice(16,32,64)") == ("bs", choice([16, 32, 64]))
    assert parse_param("opt=choice(['sgd', 'adam'])") == ("opt", choice(["sgd", "adam"]))
    assert parse_param("n=randint(1, 4)")[1].grid() == [1, 2, 3, 4]


def test_the_bandit_policy_stops_a_trial_behind_the_best_by_more_than_the_slack():
    """HyperDrive's rule on Optuna's study: best 0.80 with slack_factor 0.15 stops < 0.696."""
    import optuna
    from celltrain.sweep.policies import policy_to_dict
    from celltrain.sweep.pruners import make_pruner, why_pruned
    policy = policy_to_dict(BanditPolicy(slack_factor=0.15, delay_evaluation=2))
    study = optuna.create_study(direction="maximize", pruner=make_pruner(policy))
    leader = study.ask()
    for step, value in enumerate([0.5, 0.7, 0.8]):
        leader.report(value, step)
    study.tell(leader, 0.8)
    close, behind = study.ask(), study.ask()
    verdicts = []
    for step, (a, b) in enumerate([(0.1, 0.1), (0.2, 0.2), (0.7, 0.61)]):
        close.report(a, step)
        behind.report(b, step)
        verdicts.append((close.should_prune(), behind.should_prune()))
    assert verdicts == [(False, False), (False, False), (False, True)]   # delay_evaluation=2
    assert why_pruned(policy, study, behind, 2, 0.61, "val_acc") == (
        "early termination: bandit at step 2 (val_acc 0.61 < best 0.8 / 1.15 = 0.6957)")


@pytest.mark.docker
def test_a_short_sweep_in_containers(docker_workspace, make_source):
    src = make_source(script(0.05))
    sweep = docker_workspace.experiment("dock").sweep(
        "train.py", src, args=["--epochs", 3], gpus="none",
        params={"lr": choice([0.001, 0.01])}, metric="val_acc", sampler="grid",
        max_runs=5, max_concurrent=2)
    assert sweep.record["spec"]["sweep"]["max_runs"] == 2        # the grid has 2 points
    assert sweep.wait(timeout=400) == states.COMPLETED, sweep.reason
    runs = sweep.runs()
    assert sorted(r.params["lr"] for r in runs) == [0.001, 0.01]
    assert all(r.status == states.COMPLETED and r.record["target"] == "docker" for r in runs)
    # the trial's process in its container knew its sweep (CELLTRAIN_PARENT_RUN_ID)
    assert all(r.table("lineage") == [{"parent": sweep.id}] for r in runs)
    assert sweep.best_run().params["lr"] == 0.01


def test_the_sweep_cell_magic_binds_each_trials_params_as_names(tmp_path, monkeypatch):
    from IPython.testing import globalipapp
    from IPython.utils.capture import capture_output
    ip = globalipapp.get_ipython()
    ip.run_cell("%load_ext celltrain")
    monkeypatch.chdir(tmp_path)
    ip.user_ns["offset"] = 0.5                      # a notebook variable the cell reads
    with capture_output() as out:
        result = ip.run_cell(f"""%%sweep --param lr=loguniform(1e-3,1e-1) --param bs=choice(16,32) --metric score --goal max --max-runs 3 --max-concurrent 3 --sampler random --target local --max-duration 900 --workspace {tmp_path / 'ws'} -o sw --wait
import math
for step in range(3):
    log("score", offset - abs(math.log10(lr) + 2) + bs / 1000, step=step)
""", store_history=True)
    assert result.error_in_exec is None, out.stdout + out.stderr
    sweep = ip.user_ns.pop("sw")
    assert sweep.status == states.COMPLETED, sweep.reason
    assert sweep.settings["max_duration_s"] == 900
    for run in sweep.runs():
        lr, bs = run.params["lr"], run.params["bs"]
        assert 1e-3 <= lr <= 1e-1 and bs in (16, 32)
        assert run.metrics()["score"][-1] == pytest.approx(0.5 - abs(math.log10(lr) + 2)
                                                           + bs / 1000)
    with capture_output():
        bad = ip.run_cell("%%sweep --param lr=gauss(0,1) --metric score\nx = 1\n")
    assert "unknown distribution 'gauss'" in str(bad.error_in_exec)


def test_optuna_samplers_and_pruners_are_taken_as_they_are(workspace, make_source):
    import optuna
    src = make_source(script(0.1))
    sweep = workspace.experiment("optuna").sweep(
        "train.py", src, args=["--epochs", 30], target="local",
        params={"lr": loguniform(1e-4, 1e-1)}, metric="val_acc",
        sampler=optuna.samplers.RandomSampler(seed=0),
        early_termination=optuna.pruners.ThresholdPruner(upper=0.2, n_warmup_steps=1),
        max_runs=2, max_concurrent=2)
    assert sweep.settings["sampler"]["class"] == "RandomSampler"
    assert sweep.settings["policy"]["class"] == "ThresholdPruner"
    assert sweep.wait(timeout=200) == states.COMPLETED, sweep.reason   # stopped is not failed
    for run in sweep.runs():
        assert run.status == states.CANCELED
        assert run.reason.startswith("early termination: ThresholdPruner at step 1 (val_acc ")
        assert len(run.metrics()["val_acc"]) < 30
    assert sweep.best_run() is None and sweep.best_run(include_failed=True) is not None


@pytest.mark.parametrize("max_concurrent, gpus, free, limit", [
    (4, "none", 8, 4),          # CPU trials: only max_concurrent
    (4, 1, None, 4),            # the target cannot say: no bound
    (4, 1, 2, 2),               # one GPU each, two GPUs: two at once
    (4, 2, 8, 4),
    (4, 3, 8, 2),
    (4, [0, 1], 3, 1),          # device ids count as that many GPUs
    (4, "all", 8, 1),           # every GPU each: one at a time
    (4, 2, 1, 1),               # fewer than one trial needs: still one, the run says why
])
def test_concurrent_trials_stay_within_the_targets_gpus(max_concurrent, gpus, free, limit):
    """By construction (no GPU on this machine): the bound the controller applies."""
    from celltrain.sweep.trials import concurrency_limit
    assert concurrency_limit(max_concurrent, gpus, free) == limit


def test_targets_count_the_gpus_they_can_give():
    """No NVIDIA driver here: the local target has 0, Docker without a GPU runtime 0."""
    from celltrain.gpus import visible_gpu_count
    from celltrain.targets import target_class
    assert target_class("local").gpu_count() == visible_gpu_count()
    assert target_class("local").gpu_count() >= 0
