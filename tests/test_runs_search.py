"""Searching runs and choosing the run list's metric columns (issue 15, item 15): the query
language in the store, the REST API (a real Jupyter Server), ``celltrain runs/list`` and
``%train list`` (a real IPython shell).  Runs are written through the store; metrics are real
rows in the store's tables."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import tornado.httpclient
from IPython.core.error import UsageError
from IPython.testing import globalipapp
from IPython.utils.capture import capture_output

from celltrain import Workspace, states
from celltrain.server.manager import BadRequest, CelltrainManager
from celltrain.store.search import SearchError
from celltrain.workspace import new_run_id

pytest_plugins = ["pytest_jupyter.jupyter_server"]

RUNS = [  # experiment, params, tags, metrics logged in this order (the last one is "last")
    ("birds", {"lr": 0.01, "opt": "adam", "batch": 32}, {"team": "vision"},
     [("loss", 0.5), ("acc", 0.81)]),
    ("birds", {"lr": 0.1, "opt": "sgd", "batch": 32, "amp": True}, {},
     [("acc", 0.7), ("loss", 0.9)]),
    ("cats", {"lr": 1, "name": "my run"}, {"note": "lr=0.01 was too slow"}, []),
]


def fill(path) -> tuple[Workspace, list[str]]:
    ws = Workspace(path, reconcile=False)
    ids = []
    for i, (experiment, params, tags, metrics) in enumerate(RUNS):
        record = ws.store.create_run(experiment, run_id_for=new_run_id, status=states.QUEUED,
                                     target="local", params=params, tags=tags)
        ws.store.set_status(record["id"], states.COMPLETED, started=time.time() - 5,
                            ended=time.time())
        ws.store.add_metrics(record["id"], [(name, step, value, time.time())
                                            for step in range(3) for name, value in metrics])
        ids.append(record["id"])
    return ws, ids


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    return fill(tmp_path_factory.mktemp("search") / "ws")


def found(ws, query) -> list[str]:
    return [f"{r['experiment']} #{r['number']}" for r in
            sorted(ws.store.list_runs(search=query), key=lambda r: r["created"])]


@pytest.mark.parametrize("query, expected", [
    ("lr=0.01", ["birds #1"]),
    ("lr=1e-2", ["birds #1"]),                 # numbers compare as numbers
    ("lr<0.5", ["birds #1", "birds #2"]),
    ("lr>=0.1", ["birds #2", "cats #1"]),
    ("lr!=0.01", ["birds #2", "cats #1"]),
    ("opt=adam", ["birds #1"]),
    ("amp=true", ["birds #2"]),
    ("team=vision", ["birds #1"]),             # a tag
    ("adam", ["birds #1"]),                    # a param's value
    ("VISION", ["birds #1"]),                  # a tag's value, any case
    ("amp", ["birds #2"]),                     # a param's name
    ("cats", ["cats #1"]),                     # the experiment
    ("birds #2", ["birds #2"]),                # the name as the sidebar shows it
    ('"my run"', ["cats #1"]),                 # quoted: one word with a space
    ('name="my run"', ["cats #1"]),
    ("birds batch=32 lr<0.05", ["birds #1"]),  # every word must match
    ("%", []), ("_", []),                      # LIKE's wildcards are plain characters
    ("", ["birds #1", "birds #2", "cats #1"]),
])
def test_search_finds_runs_by_name_param_or_tag(filled, query, expected):
    ws, _ = filled
    assert found(ws, query) == expected
    assert ws.store.count_runs(search=query) == len(expected)


def test_search_by_id(filled):
    ws, ids = filled
    assert found(ws, ids[1][-6:]) == ["birds #2"]


@pytest.mark.parametrize("query, message", [
    ("lr<abc", "lr<abc: < compares numbers, and 'abc' is not one"),
    ("=3", "'=3' compares nothing: write NAME=3"),
    ('"open', "cannot read the search '\"open'"),
    ("x" * 1001, "at most 1000"),
])
def test_a_search_that_cannot_be_read_says_why(filled, query, message):
    ws, _ = filled
    with pytest.raises(SearchError) as info:
        ws.store.list_runs(search=query)
    assert message in str(info.value)
    with pytest.raises(BadRequest):
        CelltrainManager(ws.path, reconcile=False).list_runs(search=query)


def test_the_search_pages_over_every_run_not_just_the_loaded_ones(tmp_path):
    ws = Workspace(tmp_path / "ws", reconcile=False)
    for i in range(130):
        ws.store.create_run("bulk", run_id_for=new_run_id, status=states.COMPLETED,
                            params={"i": i})
    manager = CelltrainManager(ws.path, reconcile=False)
    first_page = manager.list_runs(limit=100)
    assert "bulk #1" not in {f"{r['experiment']} #{r['number']}" for r in first_page["runs"]}
    page = manager.list_runs(limit=100, search="i=0")
    assert page["total"] == 1 and page["runs"][0]["number"] == 1
    page = manager.list_runs(limit=10, offset=10, search="i<25")
    assert page["total"] == 25 and len(page["runs"]) == 10


def test_a_sweep_and_its_trials_show_the_metric_the_sweep_optimises(tmp_path):
    from celltrain.server.runlist import add_metrics
    ws = Workspace(tmp_path / "ws", reconcile=False)
    store = ws.store
    sweep = store.create_run("tune", run_id_for=new_run_id, status=states.COMPLETED,
                             kind="sweep", spec={"sweep": {"metric": "acc", "goal": "max"}})
    trial = store.create_run("tune", run_id_for=new_run_id, status=states.COMPLETED,
                             kind="trial", parent_id=sweep["id"])
    store.add_metrics(trial["id"], [("acc", 0, 0.8, 1.0), ("loss", 0, 0.3, 1.0)])
    store.add_metrics(sweep["id"], [("best_acc", 0, 0.8, 1.0), ("trials", 0, 1, 1.0)])
    page = add_metrics(CelltrainManager(ws.path, reconcile=False),
                       CelltrainManager(ws.path, reconcile=False).list_runs(), None)
    shown = {r["id"]: r["metric"] for r in page["runs"]}
    assert shown == {trial["id"]: {"name": "acc", "value": 0.8},       # not loss, logged last
                     sweep["id"]: {"name": "best_acc", "value": 0.8}}


def test_columns_are_kept_in_the_workspace_and_checked(tmp_path):
    ws, _ = fill(tmp_path / "ws")
    assert ws.store.run_columns() == []
    assert ws.store.set_run_columns("loss, acc") == ["loss", "acc"]
    assert Workspace(ws.path, reconcile=False).store.run_columns() == ["loss", "acc"]
    for bad, message in [(["ok", ""], "'' is not a metric name"), ([1], "a list of metric"),
                         ([f"m{i}" for i in range(9)], "at most 8")]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            ws.store.set_run_columns(bad)
    assert ws.store.run_columns() == ["loss", "acc"]


# -- the REST API --------------------------------------------------------------------------------
@pytest.fixture
def jp_server_config(tmp_path):
    ws, _ = fill(tmp_path / "rest-ws")
    return {"ServerApp": {"jpserver_extensions": {"celltrain": True}},
            "CelltrainConfig": {"workspace": str(ws.path), "reconcile": False}}


async def get(jp_fetch, *parts, **params):
    return json.loads((await jp_fetch("celltrain", *parts, params=params)).body)


async def test_rest_search_metrics_and_settings(jp_fetch):
    page = await get(jp_fetch, "runs", search="lr<0.5 birds", sort="number", order="asc")
    assert page["total"] == 2 and [r["params"]["lr"] for r in page["runs"]] == [0.01, 0.1]
    assert "metric" not in page["runs"][0]         # only asked for: the plain list stays fast

    page = await get(jp_fetch, "runs", metrics="1", sort="created", order="asc")
    first, second, third = page["runs"]
    assert first["metric"] == {"name": "acc", "value": 0.81}     # logged last
    assert second["metric"] == {"name": "loss", "value": 0.9}
    assert third["metric"] is None and page["columns"] == []
    assert page["metric_names"] == ["acc", "loss"]

    assert await get(jp_fetch, "settings") == {"run_columns": []}
    saved = await jp_fetch("celltrain", "settings", method="PUT",
                           body=json.dumps({"run_columns": ["loss", "f1"]}))
    assert json.loads(saved.body) == {"run_columns": ["loss", "f1"]}
    page = await get(jp_fetch, "runs", metrics="1", sort="created", order="asc")
    assert page["columns"] == ["loss", "f1"]
    assert page["runs"][0]["metrics"] == {"loss": 0.5, "f1": None}
    page = await get(jp_fetch, "runs", metrics="1", columns="acc", sort="created", order="asc")
    assert page["columns"] == ["acc"] and page["runs"][1]["metrics"] == {"acc": 0.7}


@pytest.mark.parametrize("parts, kwargs, echoed", [
    (("runs",), {"params": {"search": "lr>fast"}}, "lr>fast"),
    (("runs",), {"params": {"metrics": "1", "columns": ",".join("abcdefghi")}}, "at most 8"),
    (("settings",), {"method": "PUT", "body": json.dumps({"colour": "red"})}, "'colour'"),
    (("settings",), {"method": "PUT", "body": json.dumps({"run_columns": [""]})}, "''"),
    (("settings",), {"method": "PUT", "body": "not json"}, "not json"),
])
async def test_rest_refuses_bad_searches_and_settings_naming_them(jp_fetch, parts, kwargs,
                                                                  echoed):
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await jp_fetch("celltrain", *parts, **kwargs)
    assert info.value.code == 400
    assert echoed in json.loads(info.value.response.body)["message"]


# -- celltrain runs/list and %train list ---------------------------------------------------------
def cli(ws, *args):
    return subprocess.run([sys.executable, "-m", "celltrain.cli", "-w", str(ws.path), *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_list_searches_and_shows_the_chosen_columns(tmp_path):
    ws, ids = fill(tmp_path / "ws")
    out = cli(ws, "list", "--search", "lr=0.01", "--columns", "acc,loss")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[-2:] == ["acc", "loss"] and len(lines) == 2
    assert ids[0] in lines[1] and lines[1].split()[-2:] == ["0.81", "0.5"]
    ws.store.set_run_columns(["loss"])                # chosen in the sidebar: the default here
    lines = cli(ws, "runs", "-q", "birds").stdout.splitlines()
    assert lines[0].split()[-1] == "loss" and len(lines) == 3
    assert cli(ws, "runs", "-q", "nothing-like-this").stdout.startswith("no runs in")
    bad = cli(ws, "runs", "--search", "lr<abc")
    assert bad.returncode == 2 and "lr<abc: < compares numbers" in bad.stderr


def test_train_list_searches_and_shows_the_chosen_columns(tmp_path):
    ws, ids = fill(tmp_path / "ws")
    ip = globalipapp.get_ipython()
    ip.run_cell("%load_ext celltrain")
    ip.run_line_magic("train", f"config workspace={ws.path}")
    try:
        with capture_output() as out:
            ip.run_line_magic("train", "list --search 'opt=sgd' --columns loss")
        lines = out.stdout.splitlines()
        assert lines[0].split()[-1] == "loss" and len(lines) == 2 and ids[1] in lines[1]
        table = ws.runs_table(search="opt=sgd", metrics=["loss"])
        assert [r["run"] for r in table.rows] == [ids[1]] and table.metrics_shown == ["loss"]
        ws.store.set_run_columns(["acc"])
        assert ws.runs_table().metrics_shown == ["acc"]
        with pytest.raises(UsageError, match="lr<abc: < compares numbers"):
            ip.run_line_magic("train", "list --search lr<abc")
    finally:
        ip.run_line_magic("train", "config workspace=")
