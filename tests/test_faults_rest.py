"""The REST API under bad input: every endpoint answers 400/403/404 naming the value, never 500.

A real Jupyter Server (pytest-jupyter's jp_fetch) over a real workspace: one real local run whose
folder then gets a dangling link, a link out and a link to a folder; one run whose metrics hold
text, bytes and NULL values written straight into SQLite (as another tool, or an older celltrain,
could have), in a short series and in one long enough for the server's bucketed path.
"""
from __future__ import annotations

import json
import os
import time

import pytest
import tornado.httpclient

from celltrain import Workspace, states
from celltrain.workspace import new_run_id

pytest_plugins = ["pytest_jupyter.jupyter_server"]

TRAIN = """
import os
os.makedirs("outputs/sub", exist_ok=True)
open("outputs/model.txt", "w").write("weights")
open("outputs/sub/notes.txt", "w").write("notes")
print("trained")
"""
SECRET = "root:do-not-serve-this-line"
ODD = [1.0, b"\x00\x01", None, 2.0, "abc"]       # the last value logged is text
LONG = 30_000


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-rest")
    ws = Workspace(root / "ws")
    src = root / "src"
    src.mkdir()
    (src / "train.py").write_text(TRAIN)
    run = ws.experiment("real").submit("train.py", src, target="local")
    assert run.wait(timeout=120) == states.COMPLETED, run.logs()
    secret = root / "secret.txt"
    secret.write_text(SECRET)
    os.symlink("/nonexistent/celltrain-target", run.folder / "dangling")
    os.symlink(secret, run.folder / "outputs" / "out")
    os.symlink(root, run.folder / "outputs" / "linkdir")

    store = ws.store
    stuck = store.create_run("stuck", run_id_for=new_run_id, status=states.QUEUED,
                             target="local")
    store.set_status(stuck["id"], states.RUNNING)    # nobody supervises it: reconcile is off
    odd = store.create_run("odd", run_id_for=new_run_id, status=states.QUEUED, target="local")
    store.set_status(odd["id"], states.COMPLETED)
    now = time.time()
    with store.write() as conn:
        conn.executemany("INSERT INTO metrics (run_id, name, step, value, time) "
                         "VALUES (?, 'odd', ?, ?, ?)",
                         [(odd["id"], i, v, now) for i, v in enumerate(ODD)])
        conn.executemany("INSERT INTO metrics (run_id, name, step, value, time) "
                         "VALUES (?, 'long', ?, ?, ?)",
                         [(odd["id"], i, "text" if i % 1000 == 7 else
                           b"\xff" if i % 1000 == 9 else float(i % 10), now)
                          for i in range(LONG)])
    return {"ws": ws, "run": run, "odd": odd["id"], "stuck": stuck["id"], "secret": secret}


@pytest.fixture
def jp_server_config(faulty):
    return {"ServerApp": {"jpserver_extensions": {"celltrain": True}},
            "CelltrainConfig": {"workspace": str(faulty["ws"].path), "reconcile": False}}


async def get(jp_fetch, *parts, **params):
    response = await jp_fetch("celltrain", *parts, params=params)
    assert response.code == 200
    return json.loads(response.body)


def named(value: str, message: str) -> bool:
    """The message names the value, as it is or as Python's repr writes it (a NUL: '\\x00')."""
    return value in message or repr(value)[1:-1] in message


async def test_the_file_listing_reports_links_as_links(jp_fetch, faulty):
    files = {f["path"]: f for f in (await get(jp_fetch, "runs", faulty["run"].id, "files"))
             ["files"]}
    assert files["dangling"]["link"] == "/nonexistent/celltrain-target"
    assert files["outputs/out"]["link"] == str(faulty["secret"])
    assert files["outputs/linkdir"]["link"] == str(faulty["secret"].parent)
    for path in ("dangling", "outputs/out", "outputs/linkdir"):
        assert files[path]["size"] is None, path         # never the target's size
    assert files["outputs/model.txt"]["size"] == len("weights")
    assert "link" not in files["outputs/model.txt"]
    assert not any(p.startswith("outputs/linkdir/") for p in files)   # not followed


async def test_a_run_with_text_and_bytes_metric_values_is_shown(jp_fetch, faulty):
    detail = await get(jp_fetch, "runs", faulty["odd"])
    assert detail["metric_names"] == ["long", "odd"]
    assert detail["metrics"]["odd"] is None               # the last value is text: null
    (odd,) = (await get(jp_fetch, "runs", faulty["odd"], "metrics", name="odd"))["series"]
    assert odd["x"] == [0, 1, 2, 3, 4] and odd["y"] == [1.0, None, None, 2.0, None]
    for max_points in ("4", "1000", "100000"):           # rollup blocks, SQL buckets, whole
        (long,) = (await get(jp_fetch, "runs", faulty["odd"], "metrics", name="long",
                             max_points=max_points))["series"]
        values = [y for y in long["y"] if y is not None]
        assert all(isinstance(y, float) for y in values), max_points
        if max_points != "4":            # these rows bypassed the rollups: no blocks to show
            assert max(values) == 9.0 and min(values) == 0.0, max_points


BIG = "9223372036854775808"          # 2**63: one more than SQLite's integers hold
HUGE = "9" * 5000                    # more digits than Python's int() takes
# (path with {run} and {odd}, query params, the value the message must name, allowed codes)
BAD = [
    ("runs", {"offset": BIG}, BIG, {400}),
    ("runs", {"offset": "-1"}, "-1", {400}),
    ("runs", {"offset": "NaN"}, "NaN", {400}),
    ("runs", {"offset": HUGE}, HUGE[:50], {400}),
    ("runs", {"limit": BIG}, BIG, {400}),
    ("runs", {"limit": "-5"}, "-5", {400}),
    ("runs", {"limit": "1.5"}, "1.5", {400}),
    ("runs", {"sort": "x\x00y"}, "x y", {400}),   # tornado makes control characters spaces
    ("runs", {"status": "x\x00y"}, "x y", {400}),
    ("runs", {"order": "NaN"}, "NaN", {400}),
    ("runs/\x00", {}, "\x00", {404}),
    ("runs/no-such-run", {}, "no-such-run", {404}),
    ("runs/\x00/metrics", {}, "\x00", {404}),
    ("runs/{odd}/metrics", {"name": "x\x00y"}, "x y", {404}),
    ("runs/{odd}/metrics", {"name": "unknown-metric"}, "unknown-metric", {404}),
    ("runs/{odd}/metrics", {"max_points": "NaN"}, "NaN", {400}),
    ("runs/{odd}/metrics", {"max_points": BIG}, BIG, {400}),
    ("runs/{odd}/metrics", {"max_points": "-1"}, "-1", {400}),
    ("runs/\x00/logs", {}, "\x00", {404}),
    ("runs/{run}/logs", {"file": "x\x00y"}, "x y", {400}),
    ("runs/{run}/logs", {"file": "unknown-log"}, "unknown-log", {400}),
    ("runs/{run}/logs", {"offset": "-1"}, "-1", {400}),
    ("runs/{run}/logs", {"offset": "NaN"}, "NaN", {400}),
    ("runs/{run}/logs", {"tail": BIG}, BIG, {400}),
    ("runs/{run}/logs", {"tail": "0"}, "0", {400}),
    ("runs/\x00/files", {}, "\x00", {404}),
    ("runs/{run}/files/\x00", {}, "\x00", {400}),
    ("runs/{run}/files/outputs/\x00x", {}, "\x00x", {400}),
    ("runs/{run}/files/dangling", {}, "dangling", {403}),
    ("runs/{run}/files/outputs/out", {}, "outputs/out", {403}),
    ("runs/{run}/files/outputs/linkdir/secret.txt", {}, "outputs/linkdir/secret.txt", {403}),
    ("runs/{run}/files/outputs/sub", {}, "outputs/sub", {404}),
    ("runs/{run}/files/outputs/model.txt/x", {}, "outputs/model.txt/x", {403, 404}),
    ("runs/{run}/files/unknown.bin", {}, "unknown.bin", {404}),
    ("models/\x00", {}, "\x00", {404}),
    ("models/unknown-model", {}, "unknown-model", {404}),
]


@pytest.mark.parametrize("path, params, value, codes", BAD,
                         ids=[f"{p}?{q}" for p, q, _, _ in BAD])
async def test_bad_values_are_4xx_naming_the_value(jp_fetch, faulty, path, params, value,
                                                   codes):
    parts = path.format(run=faulty["run"].id, odd=faulty["odd"]).split("/")
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await jp_fetch("celltrain", *parts, params=params)
    assert info.value.code in codes, info.value.response.body
    message = json.loads(info.value.response.body)["message"]
    assert named(value, message), message
    assert SECRET not in message


@pytest.mark.parametrize("run, body, value, code", [
    ("{stuck}", '{"grace": NaN}', "nan", 400),
    ("{stuck}", '{"grace": 1e400}', "inf", 400),
    ("{stuck}", '{"grace": -1}', "-1", 400),
    ("{stuck}", '{"grace": "soon"}', "soon", 400),
    ("{stuck}", b'\xff\xfe', "xff", 400),
    ("{stuck}", '{"grace": [1]}', "[1]", 400),
    ("{run}", '{"grace": 1}', "Completed", 409),
    ("\x00", "{}", "\x00", 404),
])
async def test_cancel_with_bad_values_is_4xx_naming_them(jp_fetch, faulty, run, body, value,
                                                         code):
    run_id = run.format(run=faulty["run"].id, stuck=faulty["stuck"])
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await jp_fetch("celltrain", "runs", run_id, "cancel", method="POST", body=body)
    assert info.value.code == code, info.value.response.body
    assert named(value, json.loads(info.value.response.body)["message"])
    assert faulty["ws"].store.get_run(faulty["stuck"])["cancel_requested"] == 0


async def test_raw_paths_with_nul_and_links_are_refused(faulty, http_server_client, jp_base_url,
                                                        jp_auth_header):
    run = faulty["run"]
    for rel, code in [("%00", 400), ("outputs%2F%00", 400), ("outputs/out", 403),
                      ("outputs/linkdir%2Fsecret.txt", 403), ("..%2Fsecret.txt", 403)]:
        url = f"{jp_base_url}celltrain/runs/{run.id}/files/{rel}"
        with pytest.raises(tornado.httpclient.HTTPClientError) as info:
            await http_server_client.fetch(url, headers=jp_auth_header)
        assert info.value.code == code, (rel, info.value.response.body)
        assert SECRET.encode() not in info.value.response.body
