"""The metric API a training script uses, inside a run and outside one."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from celltrain.runtime import context
from celltrain.runtime.wire import EVENTS_FILE, NO_STEP, decode_body, decode_frames


def read_events(folder):
    """The records of a run's events file: ("m", [(name, step, value, time)]) or JSON ones."""
    with open(os.path.join(folder, EVENTS_FILE), "rb") as f:
        bodies, used, skipped = decode_frames(f.read(), final=True)
    assert skipped == 0
    records = []
    for body in bodies:
        kind, payload = decode_body(body)
        if kind == "m":
            names, ids, steps, values, times = payload
            payload = [(names[i], None if s == NO_STEP else s, v, t)
                       for i, s, v, t in zip(ids, steps, values, times)]
        records.append((kind, payload))
    return records


def metric_points(records):
    return [p for kind, payload in records if kind == "m" for p in payload]


def test_offline_context_keeps_values_in_memory():
    run = context.OfflineRun()
    run.log("loss", 0.5)
    run.log("loss", np.float32(0.25))
    run.log("acc", torch.tensor(0.75), step=3)
    run.log_list("lr", [0.1, 0.01])
    run.log_row("table", epoch=1, acc=np.float64(0.5))
    assert run.get_metrics() == {"loss": [0.5, 0.25], "acc": [0.75], "lr": [0.1, 0.01]}
    assert run.tables == {"table": [{"epoch": 1, "acc": 0.5}]}


def test_get_context_outside_celltrain_is_offline(monkeypatch):
    monkeypatch.delenv(context.TELEMETRY_ENV, raising=False)
    monkeypatch.setattr(context, "_context", None)
    assert context.get_context().offline
    context.log("x", 1.0)  # never fails
    monkeypatch.setattr(context, "_context", None)


def test_frames_carry_numpy_and_tensor_values(tmp_path):
    run = context.Run(str(tmp_path))
    run.log("a", np.float64(1.5), step=np.int64(2))
    run.log("b", torch.tensor(2.5))
    with pytest.raises(TypeError, match="not a str"):
        run.log("c", "not a number")
    run.flush()
    points = metric_points(read_events(tmp_path))
    assert [(n, s, v) for n, s, v, _ in points] == [("a", 2, 1.5), ("b", None, 2.5)]


def test_log_image_copies_the_file_and_rejects_a_missing_one(tmp_path):
    run = context.Run(str(tmp_path / "t"))
    image = tmp_path / "plot.png"
    image.write_bytes(b"\x89PNG fake")
    run.log_image("plot", str(image))
    run.flush()
    [(kind, [name, stored, step, _])] = read_events(tmp_path / "t")
    assert (kind, name) == ("img", "plot")
    assert (tmp_path / "t" / stored).read_bytes() == b"\x89PNG fake"
    with pytest.raises(FileNotFoundError, match="no file at"):
        run.log_image("plot", str(tmp_path / "missing.png"))


SCRIPT = """
import os, sys, time
from celltrain import Run, log
run = Run.get_context()
for i in range(1000):
    log("loss", float(i))
mode = sys.argv[1]
if mode == "raise":
    raise RuntimeError("boom")
if mode == "sigterm":
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("mode", ["exit", "raise", "sigterm"])
def test_nothing_is_lost_on_exit_exception_or_sigterm(tmp_path, mode):
    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, context.TELEMETRY_ENV: str(tmp_path / "t")}
    proc = subprocess.Popen([sys.executable, str(script), mode], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if mode == "sigterm":
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert proc.returncode == {"exit": 0, "raise": 1, "sigterm": 128 + 15}[mode]
    values = [v for _, _, v, _ in metric_points(read_events(tmp_path / "t"))]
    assert values == [float(i) for i in range(1000)]


def test_progress_reports_steps_rate_and_eta(monkeypatch):
    run = context.OfflineRun()
    monkeypatch.setattr(context, "_context", run)
    items = list(context.progress(range(5), desc="epoch"))
    run.flush()
    assert items == [0, 1, 2, 3, 4]
    assert run.progress_state["n"] == 5 and run.progress_state["total"] == 5
    assert run.progress_state["done"] and run.progress_state["desc"] == "epoch"
    monkeypatch.setattr(context, "_context", None)
