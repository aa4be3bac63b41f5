"""The REST API of the server extension, through a real Jupyter Server (pytest-jupyter's jp_fetch)
over a real workspace: real local runs for logs, files, metrics and cancel; rows written through
the store for the many-runs cases; model rows written into the registry's tables."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tornado.httpclient

from celltrain import Workspace, states
from celltrain.server.manager import CelltrainManager, find_workspace
from celltrain.workspace import new_run_id

pytest_plugins = ["pytest_jupyter.jupyter_server"]

TRAIN = """
import sys, time
from celltrain import log
for i in range(30):
    log("loss", 1.0 / (i + 1), step=i)
    log("acc", i / 30, step=i)
log("loss", float("nan"), step=30)  # a NaN must come out as null, not break the JSON
print("épochs done ✓")
import os
os.makedirs("outputs/sub", exist_ok=True)
open("outputs/model.txt", "w").write("weights")
open("outputs/sub/notes.txt", "w").write("notes")
"""
SLEEPER = """
import time
print("sleeping", flush=True)
time.sleep(120)
"""


def wait_status(run, wanted, timeout=60):
    deadline = time.monotonic() + timeout
    while run.status not in wanted:
        assert time.monotonic() < deadline, f"{run.id} still {run.status}, wanted {wanted}"
        time.sleep(0.1)
    return run.status


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A workspace with one real finished local run, 12 stored runs and two models."""
    root = tmp_path_factory.mktemp("server")
    ws = Workspace(root / "ws")
    src = root / "src"
    src.mkdir()
    (src / "train.py").write_text(TRAIN)
    run = ws.experiment("real").submit("train.py", src, target="local", params={"lr": 0.1},
                                       tags={"kind": "demo"})
    assert run.wait(timeout=120) == states.COMPLETED, run.logs()
    store = ws.store
    statuses = [states.COMPLETED, states.FAILED, states.CANCELED]
    for i in range(12):
        rec = store.create_run("alpha" if i % 2 else "beta", run_id_for=new_run_id,
                               status=states.QUEUED, target="local", params={"i": i})
        store.set_status(rec["id"], statuses[i % 3], reason="made for the test" if i % 3 else None)
    with store.write() as conn:
        for version in (1, 2):
            conn.execute("INSERT INTO models (name, version, run_id, created, path, sha256, "
                         "description, tags, metrics) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         ("birds", version, run.id, time.time(), f"models/birds/{version}",
                          "0" * 64, f"version {version}", "{}", json.dumps({"acc": 0.9})))
        conn.execute("INSERT INTO model_aliases VALUES ('birds', 'production', 1)")
    return {"ws": ws, "run": run, "src": src}


@pytest.fixture
def jp_server_config(filled):
    return {"ServerApp": {"jpserver_extensions": {"celltrain": True}},
            "CelltrainConfig": {"workspace": str(filled["ws"].path)}}


async def get(jp_fetch, *parts, **params):
    response = await jp_fetch("celltrain", *parts, params=params)
    return json.loads(response.body)


async def refused(jp_fetch, *parts, method="GET", body=None, **params):
    """The HTTPError of a request that must fail."""
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await jp_fetch("celltrain", *parts, params=params, method=method, body=body)
    return info.value


# -- workspace discovery -----------------------------------------------------------------------
def test_workspace_comes_from_config_then_environment_then_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLTRAIN_WORKSPACE", str(tmp_path / "from-env"))
    assert find_workspace(str(tmp_path / "cfg"), tmp_path)[0] == tmp_path / "cfg"
    path, source = find_workspace(None, tmp_path)
    assert path == tmp_path / "from-env" and "CELLTRAIN_WORKSPACE" in source
    monkeypatch.delenv("CELLTRAIN_WORKSPACE")
    path, source = find_workspace(None, tmp_path / "root")
    assert path == tmp_path / "root" / ".celltrain" and "default" in source


async def test_server_says_which_workspace_it_shows(jp_fetch, filled):
    info = await get(jp_fetch, "workspace")
    assert info["path"] == str(filled["ws"].path)
    assert "config" in info["source"] and info["exists"] is True
    assert info["runs"] == 13 and info["experiments"] == 3


class TestDefaultWorkspace:
    @pytest.fixture
    def jp_server_config(self, monkeypatch):
        monkeypatch.delenv("CELLTRAIN_WORKSPACE", raising=False)
        return {"ServerApp": {"jpserver_extensions": {"celltrain": True}}}

    async def test_missing_default_workspace_is_reported_and_not_created(self, jp_fetch,
                                                                           jp_root_dir):
        info = await get(jp_fetch, "workspace")
        assert info["path"] == str((jp_root_dir / ".celltrain").resolve())
        assert info["exists"] is False and "first run" in info["message"]
        assert (await get(jp_fetch, "runs"))["runs"] == []
        assert (await get(jp_fetch, "models"))["models"] == []
        assert not (jp_root_dir / ".celltrain").exists()


# -- experiments and runs ----------------------------------------------------------------------
async def test_experiments_with_run_counts(jp_fetch):
    experiments = {e["name"]: e["runs"] for e in (await get(jp_fetch, "experiments"))
                   ["experiments"]}
    assert experiments == {"alpha": 6, "beta": 6, "real": 1}


async def test_runs_filter_sort_and_pages(jp_fetch, filled):
    page = await get(jp_fetch, "runs", experiment="alpha", limit="4")
    assert page["total"] == 6 and len(page["runs"]) == 4
    assert {r["experiment"] for r in page["runs"]} == {"alpha"}
    created = [r["created"] for r in page["runs"]]
    assert created == sorted(created, reverse=True)
    rest = await get(jp_fetch, "runs", experiment="alpha", limit="4", offset="4")
    assert len(rest["runs"]) == 2
    assert not {r["id"] for r in rest["runs"]} & {r["id"] for r in page["runs"]}

    failed = await get(jp_fetch, "runs", status="Failed,Canceled", sort="number", order="asc")
    assert failed["total"] == 8
    assert {r["status"] for r in failed["runs"]} == {"Failed", "Canceled"}
    one = (await get(jp_fetch, "runs", experiment="real"))["runs"][0]
    assert one["id"] == filled["run"].id and one["params"] == {"lr": 0.1}
    assert one["progress"] is None or isinstance(one["progress"], dict)


def test_nan_in_params_comes_out_as_null(tmp_path):
    ws = Workspace(tmp_path / "ws", reconcile=False)
    ws.store.create_run("odd", run_id_for=new_run_id, status=states.COMPLETED,
                        params={"lr": float("nan"), "note": "fine"})
    text = CelltrainManager(ws.path).list_runs_json()
    assert json.loads(text)["runs"][0]["params"] == {"lr": None, "note": "fine"}
    assert "NaN" not in text


@pytest.mark.parametrize("param, value", [("sort", "colour"), ("order", "sideways"),
                                          ("status", "Sleeping"), ("limit", "lots"),
                                          ("limit", "0"), ("offset", "-3")])
async def test_bad_list_parameters_are_400_echoing_the_value(jp_fetch, param, value):
    error = await refused(jp_fetch, "runs", **{param: value})
    assert error.code == 400
    assert value in json.loads(error.response.body)["message"]


async def test_one_run_has_params_tags_history_and_latest_metrics(jp_fetch, filled):
    run = filled["run"]
    detail = await get(jp_fetch, "runs", run.id)
    assert detail["params"] == {"lr": 0.1} and detail["tags"] == {"kind": "demo"}
    assert [h["status"] for h in detail["history"]][0] == "Queued"
    assert detail["history"][-1]["status"] == "Completed"
    assert detail["metric_names"] == ["acc", "loss"]
    assert detail["metrics"]["loss"] is None            # the last loss logged was NaN
    assert detail["terminal"] is True


async def test_unknown_run_is_404_naming_it(jp_fetch):
    for parts in [("runs", "no-such-run"), ("runs", "no-such-run", "metrics"),
                  ("runs", "no-such-run", "logs"), ("runs", "no-such-run", "files"),
                  ("runs", "no-such-run", "files", "output.log")]:
        error = await refused(jp_fetch, *parts)
        assert error.code == 404, parts
        assert "no-such-run" in json.loads(error.response.body)["message"]
    error = await refused(jp_fetch, "runs", "no-such-run", "cancel", method="POST", body="{}")
    assert error.code == 404


# -- series, logs, files -----------------------------------------------------------------------
async def test_metric_series_with_nan_as_null(jp_fetch, filled):
    body = await get(jp_fetch, "runs", filled["run"].id, "metrics", name="loss")
    (loss,) = body["series"]
    assert loss["count"] == 31 and loss["downsampled"] is False
    assert loss["x"][:3] == [0, 1, 2] and loss["y"][:2] == [1.0, 0.5] and loss["y"][-1] is None
    both = await get(jp_fetch, "runs", filled["run"].id, "metrics")
    assert [s["name"] for s in both["series"]] == ["acc", "loss"]
    small = await get(jp_fetch, "runs", filled["run"].id, "metrics", name="acc",
                      max_points="10")
    assert small["series"][0]["downsampled"] and len(small["series"][0]["x"]) <= 10
    error = await refused(jp_fetch, "runs", filled["run"].id, "metrics", name="speed")
    assert error.code == 404 and "speed" in json.loads(error.response.body)["message"]
    error = await refused(jp_fetch, "runs", filled["run"].id, "metrics", max_points="2")
    assert error.code == 400 and "2" in json.loads(error.response.body)["message"]


async def test_metric_series_of_another_rank_and_bad_ranks(jp_fetch, filled):
    """The run panel's rank picker asks for one rank's series; rank 0's are the default."""
    run_id = filled["run"].id
    filled["ws"].store.add_metrics(run_id, [("rank_only", s, 2.0 * s, 0.0, 3) for s in range(4)])
    other = await get(jp_fetch, "runs", run_id, "metrics", rank="3")
    assert other["rank"] == 3 and [s["name"] for s in other["series"]] == ["rank_only"]
    assert other["series"][0]["y"] == [0.0, 2.0, 4.0, 6.0]
    default = await get(jp_fetch, "runs", run_id, "metrics")
    assert default["rank"] == 0 and "rank_only" not in [s["name"] for s in default["series"]]
    assert (await get(jp_fetch, "runs", run_id))["ranks"] == []   # one process: no rank strip
    for bad in ("-1", "one"):
        error = await refused(jp_fetch, "runs", run_id, "metrics", rank=bad)
        assert error.code == 400 and bad in json.loads(error.response.body)["message"]
    error = await refused(jp_fetch, "runs", run_id, "metrics", rank="3", name="loss")
    assert error.code == 404 and "rank 3" in json.loads(error.response.body)["message"]


def test_long_series_is_reduced_in_sqlite_and_keeps_its_spike(tmp_path):
    ws = Workspace(tmp_path / "ws", reconcile=False)
    rec = ws.store.create_run("big", run_id_for=new_run_id, status=states.COMPLETED)
    n = 50_000
    ws.store.add_metrics(rec["id"], [("loss", i, 100.0 if i == 31_337 else math.sin(i / 500),
                                      0.0) for i in range(n)])
    series = CelltrainManager(ws.path).metrics(rec["id"], max_points=500)["series"][0]
    assert series["count"] == n and series["downsampled"] and len(series["x"]) <= 500
    assert max(series["y"]) == 100.0 and min(series["y"]) == pytest.approx(-1, abs=1e-3)
    assert series["x"] == sorted(series["x"]) and series["x"][0] == 0


def test_a_growing_long_series_reads_only_its_new_points_and_matches_a_fresh_read(tmp_path):
    ws = Workspace(tmp_path / "ws", reconcile=False)
    rec = ws.store.create_run("big", run_id_for=new_run_id, status=states.RUNNING)
    live = CelltrainManager(ws.path)
    step = 0
    for batch in (30_000, 1, 7_000, 45_000):           # crosses bucket merges on the way
        points = [("loss", step + i, None if (step + i) % 9_999 == 0 else math.cos(step + i),
                   0.0) for i in range(batch)]
        ws.store.add_metrics(rec["id"], points)
        ws.store.add_metrics(rec["id"], [("acc", step, 0.5, 0.0)])   # interleaved metric
        step += batch
        grown = live.metrics(rec["id"], names=["loss"], max_points=400)["series"][0]
        fresh = CelltrainManager(ws.path).metrics(rec["id"], names=["loss"],
                                                  max_points=400)["series"][0]
        assert grown == fresh and grown["count"] == step and len(grown["x"]) <= 400
    assert live.metrics(rec["id"], names=["loss"], max_points=400)["series"][0] is grown


def _full_scan(store, run_id: str, name: str, max_points: int) -> dict:
    """The chart of a long series computed from every point, in Python: buckets of ids as the
    server lays them out (from the first id rounded down to 256, a power-of-two width, at most
    max_points / 2 buckets), min at the bucket's first step, max halfway to the next bucket."""
    rows = store.conn.execute("SELECT id, step, value FROM metrics WHERE run_id=? AND name=? "
                              "ORDER BY id", (run_id, name)).fetchall()
    base, hi, width = rows[0][0] // 256 * 256, rows[-1][0], 1
    while -(-(hi - base + 1) // width) > max_points // 2:
        width *= 2
    buckets: dict = {}
    for id_, step, value in rows:
        first, values = buckets.setdefault((id_ - base) // width, (step, []))
        if value is not None:
            values.append(value)
    firsts = [buckets[k][0] for k in sorted(buckets)] + [rows[-1][1]]
    x, y = [], []
    for i, k in enumerate(sorted(buckets)):
        values = buckets[k][1]
        x += [firsts[i], (firsts[i] + firsts[i + 1]) / 2]
        y += [min(values, default=None), max(values, default=None)]
    return {"count": len(rows), "x": x, "y": y}


@pytest.mark.parametrize("max_points", [600, 20_000])   # buckets of whole blocks; narrower
def test_a_cold_long_series_equals_a_full_scan(tmp_path, max_points):
    """The first read of a long series (from the store's blocks, or raw aggregates when the
    buckets are narrower than a block) has exactly the min and max per bucket of a full scan,
    whatever the batches, interleaved series and None values."""
    ws = Workspace(tmp_path / "ws", reconcile=False)
    rec = ws.store.create_run("big", run_id_for=new_run_id, status=states.COMPLETED)
    other = ws.store.create_run("big", run_id_for=new_run_id, status=states.RUNNING)
    step = 0
    for batch in (700, 1, 33_333, 90_000, 257):
        ws.store.add_metrics(rec["id"], [
            ("loss", step + i, None if (step + i) % 1_001 == 0 else
             50.0 if step + i == 77_777 else math.sin((step + i) / 300), 0.0)
            for i in range(batch)])
        ws.store.add_metrics(rec["id"], [("acc", s, s / 1e5, 0.0) for s in range(step, step + 99)])
        ws.store.add_metrics(other["id"], [("loss", s, 2.0, 0.0) for s in range(batch // 2)])
        step += batch
    got = CelltrainManager(ws.path).metrics(rec["id"], names=["loss"],
                                            max_points=max_points)["series"][0]
    want = _full_scan(ws.store, rec["id"], "loss", max_points)
    assert got["downsampled"] and len(got["x"]) <= max_points
    assert (got["count"], got["x"], got["y"]) == (want["count"], want["x"], want["y"])
    assert max(y for y in got["y"] if y is not None) == 50.0


async def test_logs_from_an_offset(jp_fetch, filled):
    run = filled["run"]
    whole = await get(jp_fetch, "runs", run.id, "logs")
    assert "épochs done ✓" in whole["text"] and whole["offset"] == whole["size"]
    later = await get(jp_fetch, "runs", run.id, "logs", offset=str(whole["offset"]))
    assert later["text"] == "" and later["offset"] == whole["offset"]
    middle = await get(jp_fetch, "runs", run.id, "logs", offset="3")
    assert whole["text"].encode()[3:].decode() == middle["text"]
    error = await refused(jp_fetch, "runs", run.id, "logs", file="secrets")
    assert error.code == 400 and "secrets" in json.loads(error.response.body)["message"]
    error = await refused(jp_fetch, "runs", run.id, "logs", offset="abc")
    assert error.code == 400 and "abc" in json.loads(error.response.body)["message"]


def test_log_reads_stop_before_a_half_written_character(tmp_path):
    ws = Workspace(tmp_path / "ws", reconcile=False)
    rec = ws.store.create_run("odd", run_id_for=new_run_id, status=states.RUNNING)
    log = ws.store.run_dir(rec["id"]) / "output.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"loss " + "é".encode()[:1])        # the writer is mid-character
    manager = CelltrainManager(ws.path)
    first = manager.logs(rec["id"], offset=0)
    assert first["text"] == "loss " and first["offset"] == 5
    with open(log, "ab") as f:
        f.write("é".encode()[1:] + b" ok\n")
    second = manager.logs(rec["id"], offset=first["offset"])
    assert second["text"] == "é ok\n" and second["offset"] == 11
    log.write_bytes(b"rewritten\n")                      # shorter: the reader starts again
    again = manager.logs(rec["id"], offset=second["offset"])
    assert again["reset"] and again["text"] == "rewritten\n"


async def test_files_list_and_download(jp_fetch, filled):
    run = filled["run"]
    files = {f["path"]: f["size"] for f in (await get(jp_fetch, "runs", run.id, "files"))
             ["files"]}
    assert files["outputs/model.txt"] == len("weights") and "outputs/sub/notes.txt" in files
    assert not any(p.startswith("snapshot/") for p in files)
    response = await jp_fetch("celltrain", "runs", run.id, "files", "outputs", "sub", "notes.txt")
    assert response.body == b"notes"
    assert "attachment" in response.headers["Content-Disposition"]
    (run.folder / "outputs" / "page.html").write_text("<script>alert(1)</script>")
    response = await jp_fetch("celltrain", "runs", run.id, "files", "outputs", "page.html",
                              params={"inline": "1"})
    assert response.headers["Content-Disposition"].startswith("attachment")  # never rendered
    error = await refused(jp_fetch, "runs", run.id, "files", "outputs", "nothing.bin")
    assert error.code == 404 and "nothing.bin" in json.loads(error.response.body)["message"]


async def test_paths_leaving_the_run_folder_are_refused(jp_fetch, filled, http_server_client,
                                                        jp_base_url, jp_auth_header):
    run = filled["run"]
    (filled["ws"].path / "secret.txt").write_text("do not serve")
    (run.folder / "outputs" / "link").symlink_to(filled["ws"].path / "secret.txt")
    for rel in ["../../secret.txt", "..%2F..%2Fsecret.txt", "%2Fetc%2Fpasswd",
                "outputs/link", "outputs/../../../secret.txt"]:
        url = f"{jp_base_url}celltrain/runs/{run.id}/files/{rel}"
        with pytest.raises(tornado.httpclient.HTTPClientError) as info:
            await http_server_client.fetch(url, headers=jp_auth_header)
        assert info.value.code == 403, rel
        assert b"do not serve" not in info.value.response.body
        assert "outside the folder" in json.loads(info.value.response.body)["message"]
    error = await refused(jp_fetch, "runs", run.id, "files", "outputs")
    assert error.code == 404 and "a folder" in json.loads(error.response.body)["message"]


# -- cancel ------------------------------------------------------------------------------------
async def test_cancel_a_live_run_then_409_once_it_ended(jp_fetch, filled):
    ws = filled["ws"]
    (filled["src"] / "sleep.py").write_text(SLEEPER)
    run = ws.experiment("sleepy").submit("sleep.py", filled["src"], target="local")
    wait_status(run, {states.RUNNING})
    response = await jp_fetch("celltrain", "runs", run.id, "cancel", method="POST",
                              body=json.dumps({"grace": 2}))
    assert response.code == 202 and json.loads(response.body)["cancel_requested"] is True
    assert run.wait(timeout=60) == states.CANCELED
    error = await refused(jp_fetch, "runs", run.id, "cancel", method="POST", body="{}")
    assert error.code == 409 and "Canceled" in json.loads(error.response.body)["message"]
    error = await refused(jp_fetch, "runs", run.id, "cancel", method="POST", body="[soon]")
    assert error.code == 400 and "[soon]" in json.loads(error.response.body)["message"]


# -- models ------------------------------------------------------------------------------------
async def test_models_with_versions_and_aliases(jp_fetch):
    (model,) = (await get(jp_fetch, "models"))["models"]
    assert model["name"] == "birds" and model["latest"] == 2
    assert model["aliases"] == {"production": 1}
    assert [v["version"] for v in model["versions"]] == [2, 1]
    assert model["versions"][1]["aliases"] == ["production"]
    assert model["versions"][0]["metrics"] == {"acc": 0.9}
    assert (await get(jp_fetch, "models", "birds"))["name"] == "birds"
    error = await refused(jp_fetch, "models", "cats")
    assert error.code == 404 and "cats" in json.loads(error.response.body)["message"]


# -- authentication ----------------------------------------------------------------------------
ENDPOINTS = [("GET", "workspace"), ("GET", "experiments"), ("GET", "runs"),
             ("GET", "runs/{run}"), ("GET", "runs/{run}/metrics"), ("GET", "runs/{run}/logs"),
             ("GET", "runs/{run}/files"), ("GET", "runs/{run}/files/output.log"),
             ("POST", "runs/{run}/cancel"), ("GET", "models"), ("GET", "models/birds")]


@pytest.mark.parametrize("method, path", ENDPOINTS)
async def test_every_endpoint_refuses_requests_without_credentials(jp_fetch, filled, method,
                                                                   path):
    parts = path.format(run=filled["run"].id).split("/")
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await jp_fetch("celltrain", *parts, method=method, headers={"Authorization": ""},
                       body="{}" if method == "POST" else None)
    assert info.value.code == 403
    # ... and answers the same request with the token.
    if method == "GET":
        assert (await jp_fetch("celltrain", *parts)).code == 200


# -- packaging ---------------------------------------------------------------------------------
def test_entry_points_keep_import_celltrain_cheap():
    """Jupyter finds both extensions on the package; importing it loads neither server code."""
    code = ("import sys, celltrain; "
            "assert celltrain._jupyter_server_extension_points() == [{'module': 'celltrain.server'}]; "
            "assert celltrain._jupyter_labextension_paths()[0]['dest'] == 'celltrain'; "
            "assert not {'tornado', 'jupyter_server', 'celltrain.server'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_prebuilt_lab_extension_is_in_the_package():
    import celltrain
    built = Path(celltrain.__file__).parent / "labextension" / "package.json"
    assert built.is_file(), f"{built} is missing: `make extension` builds it (npm run build)"
    assert json.loads(built.read_text())["jupyterlab"]["_build"]["load"].startswith("static/")


# -- deployments (last: it adds a run to the module's workspace) ---------------------------------
async def test_deployments_list_state_url_and_reason_for_the_sidebar(jp_fetch, filled):
    store = filled["ws"].store
    rec = store.create_run("deployments", run_id_for=new_run_id, status=states.QUEUED,
                           target="docker", kind="deployment",
                           tags={"deployment": "old-birds", "model": "birds:1",
                                 "url": "http://127.0.0.1:9", "auth": "none"})
    store.set_status(rec["id"], states.FAILED, reason="the model failed to load: made for "
                                                      "the test")
    shown = (await get(jp_fetch, "deployments"))["deployments"]
    assert [(d["name"], d["state"], d["url"], d["model"], d["run"]) for d in shown] == [
        ("old-birds", "Failed", "http://127.0.0.1:9", "birds:1", rec["id"])]
    assert shown[0]["reason"].startswith("the model failed to load") and shown[0]["requests"] == 0


# -- system metrics and code -------------------------------------------------------------------
async def test_run_shows_its_code_and_system_series(jp_fetch, filled):
    run, store = filled["run"], filled["ws"].store
    started = run.record["started"]
    # samples written through the store (the sampler is tested in test_sysmetrics.py), 100 s
    # after the start, apart from any the run's own sampler took
    for i in range(5):
        store.add_system_sample(run.id, started + 100 + i, {"sys/cpu_percent": 50.0 + i,
                                                      "sys/mem_bytes": 2**20 * (i + 1)})
    detail = await get(jp_fetch, "runs", run.id)
    assert detail["code"] == {"kind": "script", "source": None, "notebook": None,
                              "cell": None, "command": "python train.py"}
    assert detail["system"]["sys/cpu_percent"] == 54.0
    assert "sys/cpu_percent" not in detail["metrics"]
    # room for every point: the run's own sampler may have taken many on a loaded machine
    answer = await get(jp_fetch, "runs", run.id, "system", max_points="1000")
    cpu = answer["series"]["sys/cpu_percent"]
    assert cpu["v"][-5:] == [50.0, 51.0, 52.0, 53.0, 54.0] and cpu["t"][-1] == 104.0
    assert answer["latest"]["sys/mem_bytes"] == 5 * 2**20
    error = await refused(jp_fetch, "runs", run.id, "system", max_points="1")
    assert error.code == 400 and "not 1" in error.response.body.decode()
    assert (await refused(jp_fetch, "runs", "nope", "system")).code == 404
