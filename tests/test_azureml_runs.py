"""Runs the Azure ML v1 layer submitted, seen from everywhere else: every view shows the user's
script (not the layer's boot module), and HyperDrive's ``max_duration_minutes`` ends the sweep.
Real local runs and a real Jupyter Server; the training script in ``azureml_src/`` is v1 code."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import celltrain.azureml as layer
from test_azureml import SRC, make_compute, v1  # noqa: F401  (v1 is a fixture)

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture(scope="module")
def layer_run(tmp_path_factory):
    """One finished run of the v1 script, submitted through the layer (local target)."""
    root = tmp_path_factory.mktemp("layer-views")
    shutil.copytree(SRC, root / "src")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CELLTRAIN_WORKSPACE", str(root / "ws"))
        mp.setenv("CELLTRAIN_AZUREML_COMPUTE", "local")
        mp.chdir(root)
        layer.install()
        try:
            from azureml.core import Experiment, ScriptRunConfig, Workspace
            ws = Workspace.from_config()
            run = Experiment(ws, "views").submit(ScriptRunConfig(
                "src", "train.py", arguments=["--num_epochs", 2],
                compute_target=make_compute(ws)))
            run.wait_for_completion()
        finally:
            layer.uninstall()
    return {"ws": ws.celltrain, "run": run._handle}


def cli(ws, *args) -> str:
    done = subprocess.run([sys.executable, "-m", "celltrain.cli", "-w", str(ws.path), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_cli_shows_the_users_script_of_a_layer_run(layer_run):
    ws, run = layer_run["ws"], layer_run["run"]
    shown = cli(ws, "show", run.id)
    assert "command     python train.py --num_epochs 2\n" in shown
    assert "-m" not in shown.split("command", 1)[1].splitlines()[0]
    listing = cli(ws, "runs")
    assert run.id in listing and "azureml_boot" not in listing
    # what ran is still the boot module, so the script's azureml imports resolved
    assert run.record["spec"]["boot"] == "celltrain.runtime.azureml_boot"
    assert run.status == "Completed" and "online 0" in run.logs()


@pytest.fixture
def jp_server_config(layer_run):
    return {"ServerApp": {"jpserver_extensions": {"celltrain": True}},
            "CelltrainConfig": {"workspace": str(layer_run["ws"].path)}}


async def test_the_rest_api_shows_the_users_script_of_a_layer_run(jp_fetch, layer_run):
    run = layer_run["run"]
    listed = json.loads((await jp_fetch("celltrain", "runs")).body)["runs"]
    assert [(r["id"], r["script"]) for r in listed] == [(run.id, "train.py")]
    detail = json.loads((await jp_fetch("celltrain", "runs", run.id)).body)
    assert (detail["script"], detail["args"]) == ("train.py", ["--num_epochs", "2"])


# -- HyperDrive's max_duration_minutes -------------------------------------------------------------
def test_max_duration_minutes_ends_the_hyperdrive_run_and_cancels_its_children(v1):  # noqa: F811
    from azureml.core import Experiment, ScriptRunConfig, Workspace
    from azureml.train.hyperdrive import (HyperDriveConfig, PrimaryMetricGoal,
                                          RandomParameterSampling, uniform)
    ws = Workspace.from_config()
    slow = ScriptRunConfig("src", "train.py", compute_target=make_compute(ws),
                           arguments=["--num_epochs", 300, "--epoch_seconds", 1])
    hd = HyperDriveConfig(run_config=slow, max_duration_minutes=0.1,    # 6 s; a child: 300 s
                          hyperparameter_sampling=RandomParameterSampling(
                              {"--learning_rate": uniform(0.001, 0.1)}),
                          primary_metric_name="val_acc",
                          primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
                          max_total_runs=6, max_concurrent_runs=2)
    run = Experiment(ws, "hd-limit").submit(hd)
    assert run._sweep.settings["max_duration_s"] == 6.0
    details = run.wait_for_completion(raise_on_error=False)
    # no child finished in time, so nothing completed: canceled, saying why
    assert run.get_status() == "Canceled"
    assert "duration limit (max_duration_s=6, 0.1 min) was reached" in \
        details["error"]["error"]["message"]
    children = run.get_children()
    assert 1 <= len(children) <= 2          # no child was started after the limit
    for child in children:
        assert child.get_status() == "Canceled"
        assert "duration limit" in child._handle.reason
    with pytest.raises(ValueError, match="max_duration_minutes=0: give the sweep's limit"):
        HyperDriveConfig(run_config=slow, max_duration_minutes=0,
                         hyperparameter_sampling=RandomParameterSampling(
                             {"--learning_rate": uniform(0.001, 0.1)}),
                         primary_metric_name="val_acc", primary_metric_goal="MAXIMIZE",
                         max_total_runs=2)


# -- the notebook under CI ---------------------------------------------------------------------
def test_the_migration_notebook_test_fails_under_ci_when_it_cannot_run(tmp_path):
    """Without nbclient the notebook cannot run: under CI that is a failure, not a skip."""
    (tmp_path / "nbclient").mkdir()
    (tmp_path / "nbclient" / "__init__.py").write_text("raise ImportError('no nbclient here')")
    tests = Path(__file__).parent
    env = {**os.environ, "CI": "true",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tests / "test_azureml.py") + "::" +
                           "test_the_migration_notebook_runs_in_a_real_kernel"],
                          capture_output=True, text=True, env=env, cwd=tests.parent, timeout=300)
    assert "1 failed" in done.stdout, done.stdout[-2000:]
    assert "no nbclient here" in done.stdout
