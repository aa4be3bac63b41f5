"""The sidebar's view of a sweep through a real Jupyter Server: the run listing says which runs
are sweeps and trials (so the sidebar groups them), and a sweep's panel gets its view."""
from __future__ import annotations

import json

import pytest
import tornado.httpclient

from celltrain import Workspace, choice, states

pytest_plugins = ["pytest_jupyter.jupyter_server"]

TRAIN = """
import argparse
from celltrain import log
p = argparse.ArgumentParser(); p.add_argument("--lr", type=float)
a = p.parse_args()
for step in range(3):
    log("val_acc", a.lr * (step + 1), step=step)
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-server")
    ws = Workspace(root / "ws")
    (root / "src").mkdir()
    (root / "src" / "train.py").write_text(TRAIN)
    sweep = ws.experiment("hd").sweep("train.py", root / "src", target="local",
                                      params={"lr": choice([0.1, 0.2])}, metric="val_acc",
                                      sampler="grid", max_runs=2, max_concurrent=2)
    assert sweep.wait(timeout=120) == states.COMPLETED, sweep.reason
    return {"ws": ws, "sweep": sweep}


@pytest.fixture
def jp_server_config(swept):
    return {"ServerApp": {"jpserver_extensions": {"celltrain": True}},
            "CelltrainConfig": {"workspace": str(swept["ws"].path)}}


async def get(jp_fetch, *parts, **params):
    return json.loads((await jp_fetch("celltrain", *parts, params=params)).body)


async def test_the_run_listing_says_which_runs_are_a_sweep_and_its_trials(jp_fetch, swept):
    sweep = swept["sweep"]
    page = await get(jp_fetch, "runs")
    kinds = {r["id"]: (r["kind"], r["parent_id"]) for r in page["runs"]}
    assert kinds[sweep.id] == ("sweep", None)
    trials = [run.id for run in sweep.runs()]
    assert len(trials) == 2 and all(kinds[t] == ("trial", sweep.id) for t in trials)


async def test_a_sweeps_panel_gets_the_sweep_view_and_a_plain_run_is_refused(jp_fetch, swept):
    sweep = swept["sweep"]
    body = await get(jp_fetch, "runs", sweep.id, "sweep")
    best = sweep.best_run()
    assert best.params["lr"] == 0.2 and body["best"]["run"] == best.id
    assert [t["params"]["lr"] for t in body["trials"]] and len(body["trials"]) == 2
    assert 'class="celltrain-trials"' in body["html"] and best.id in body["html"]
    assert 'class="celltrain-parallel"' in body["html"]
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await jp_fetch("celltrain", "runs", best.id, "sweep")
    assert info.value.code == 400 and "not a sweep" in info.value.response.body.decode()
