"""Server time for what the sidebar asks most: a page of 10,000 runs, and a 1M-point metric
series downsampled for a chart.  Measured through a real Jupyter Server (HTTP on localhost, the
token checked, JSON encoded), against baselines measured in the same run on the same database:

    list    baseline: the raw SQL query (``SELECT r.*, e.name ... LIMIT 10000``, fetchall)
    series  baseline: reading the 1M points with ``SELECT step, value ... ORDER BY id``
            (fetchall), which any approach that downsamples in Python has to pay first

Targets: list <= 200 ms, series <= 150 ms.  The series is timed cold (a request the server
has no cached answer for), live (one point more than at the previous request: a poll of a
running run, which reads only the new points) and unchanged (a poll of a finished run).

The cold series reads the store's per-block rollups (``metric_blocks``), which ``add_metrics``
keeps as it writes; what that costs the writer is measured too, as CPU time with
``Store.add_metrics`` against the plain ``executemany`` INSERT of the same rows into a fresh
workspace (the write path before the rollups): the points at once, and 200 small telemetry
ingests (what the supervisor does every 0.1 s while a run logs).

Usage: python bench/bench_server.py [--runs 10000] [--points 1000000]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROUNDS = 7


def fill(ws_path: Path, runs: int, points: int) -> str:
    """A workspace with ``runs`` finished runs and one run holding ``points`` loss values."""
    from celltrain.store import Store
    from celltrain.workspace import new_run_id
    store = Store(ws_path)
    big = store.create_run("long", run_id_for=new_run_id, status="Completed",
                           params={"lr": 0.01}, target="local")["id"]
    now = time.time()
    with store.write() as conn:
        for e in range(10):
            conn.execute("INSERT INTO experiments (name, created) VALUES (?, ?)",
                         (f"exp-{e}", now))
        exp_ids = [r[0] for r in conn.execute("SELECT id FROM experiments WHERE name LIKE 'exp-%'")]
        rows, history = [], []
        for i in range(runs - 1):
            run_id = f"exp-{i % 10}-{i // 10 + 1}-{secrets.token_hex(3)}"
            status = ("Completed", "Failed", "Canceled")[i % 3]
            rows.append((run_id, exp_ids[i % 10], i // 10 + 1, status, "docker", now - i,
                         now - i + 1, now - i + 60, "train.py", json.dumps(["--epochs", "3"]),
                         json.dumps({"lr": 0.001 * (i % 7), "batch": 32}),
                         json.dumps({"team": "birds"}),
                         json.dumps({"pip": [], "apt": [], "setup": [], "base_image": None,
                                     "env": {}}),
                         json.dumps({"gpus": "none", "shm_size": "2g"}),
                         json.dumps({"n": 100, "total": 100, "desc": "epoch", "done": True}),
                         "exit code 1" if status == "Failed" else None))
            history.append((run_id, status, now - i + 60, None))
        conn.executemany(
            "INSERT INTO runs (id, experiment_id, number, status, target, created, started, "
            "ended, script, args, params, tags, environment, options, progress, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO status_history VALUES (?, ?, ?, ?)", history)
        store.add_metrics(big, ((("loss", i, math.exp(-i / 2e5) + 0.01 * math.sin(i), now + i))
                                for i in range(points)), conn=conn)
    store.close()
    return big


def write_cost(root: Path, points: int) -> list[tuple[str, float, float]]:
    """CPU seconds to store ``points`` loss values at once, and to ingest 200 telemetry frames
    of 100 points (loss and acc interleaved, as a training loop logs them) the way the
    supervisor does: with the plain INSERT the store did before it kept rollups in place of
    ``Store.add_metrics``, then with it; medians of 3, interleaved so both see the same load."""
    from celltrain import telemetry
    from celltrain.runtime.wire import encode_frame
    from celltrain.store import Store
    from celltrain.workspace import new_run_id

    def plain(self, run_id, rows, conn=None):
        conn.executemany("INSERT INTO metrics (run_id, name, step, value, time) "
                         "VALUES (?, ?, ?, ?, ?)", ((run_id, *r) for r in rows))

    def at_once(store, run_id) -> float:
        now = time.time()
        t = time.process_time()
        with store.write() as conn:
            store.add_metrics(run_id, (("loss", i, math.exp(-i / 2e5), now + i)
                                       for i in range(points)), conn=conn)
        return time.process_time() - t

    def ingest(store, run_id) -> float:
        events = telemetry.events_path(store, run_id)
        events.parent.mkdir(parents=True)
        last_steps: dict = {}
        spent = 0.0
        for frame in range(200):
            with open(events, "ab") as f:
                f.write(encode_frame("m", [(name, None, math.sin(frame * 50 + i), time.time())
                                           for i in range(50) for name in ("loss", "acc")]))
            t = time.process_time()
            telemetry.ingest(store, run_id, last_steps)
            spent += time.process_time() - t
        return spent

    def once(how, writes) -> float:
        folder = Path(tempfile.mkdtemp(dir=root))
        store = Store(folder)
        run_id = store.create_run("w", run_id_for=new_run_id, status="Running")["id"]
        keep = Store.add_metrics
        if how == "plain":
            Store.add_metrics = plain
        try:
            return writes(store, run_id)
        finally:
            Store.add_metrics = keep
            store.close()
            shutil.rmtree(folder)

    out = []
    for what, writes in ((f"{points} points in one add_metrics", at_once),
                         ("200 telemetry ingests of 100 points", ingest)):
        times: dict = {"plain": [], "rollups": []}
        for _ in range(3):
            for how in times:
                times[how].append(once(how, writes))
        out.append((what, statistics.median(times["plain"]),
                    statistics.median(times["rollups"])))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(ws_path: Path, root: Path) -> tuple[subprocess.Popen, str, str]:
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, CELLTRAIN_WORKSPACE=str(ws_path),
               JUPYTER_CONFIG_DIR=str(root / "config"), JUPYTER_RUNTIME_DIR=str(root / "rt"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--ServerApp.jpserver_extensions={'celltrain': True}",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "wb"), env=env,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/celltrain/workspace?token={token}", timeout=2)
            return proc, base, token
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n"
                                   + (root / "server.log").read_text()[-2000:])
            time.sleep(0.3)


def timed(fn, rounds: int = ROUNDS, before=None) -> tuple[float, object]:
    """Median seconds of ``rounds`` calls (after one warm-up call), and the last result;
    ``before()`` runs ahead of each call, outside the time."""
    out = fn()
    times = []
    for _ in range(rounds):
        if before is not None:
            before()
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ws_path = root / "ws"
        t = time.perf_counter()
        big = fill(ws_path, args.runs, args.points)
        print(f"filled a workspace with {args.runs} runs and a {args.points}-point series "
              f"in {time.perf_counter() - t:.1f}s")
        proc, base, token = start_server(ws_path, root)
        try:
            report(base, token, ws_path, big, args)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        print(f"\n{'writing metrics, CPU time':<52}{'plain':>10}{'rollups':>10}{'ratio':>9}")
        for what, plain, rollups in write_cost(root, args.points):
            print(f"{what:<52}{plain:>9.2f}s{rollups:>9.2f}s{rollups / plain:>8.2f}x")


def report(base: str, token: str, ws_path: Path, big: str, args) -> None:
    def get(path: str) -> bytes:
        """The response body, unparsed: parsing is the client's time, not the server's."""
        request = urllib.request.Request(f"{base}/celltrain/{path}",
                                         headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    conn = sqlite3.connect(ws_path / "celltrain.db")

    # -- 10,000 runs -----------------------------------------------------------------------------
    sql = ("SELECT r.*, e.name AS experiment FROM runs r JOIN experiments e "
           "ON e.id = r.experiment_id ORDER BY r.created DESC, r.id LIMIT ?")
    raw_list, rows = timed(lambda: conn.execute(sql, (args.runs,)).fetchall())
    api_list, body = timed(lambda: get(f"runs?limit={args.runs}"))
    page, list_mib = json.loads(body), len(body) / 2**20
    assert len(page["runs"]) == len(rows) == args.runs and page["total"] == args.runs
    api_page, _ = timed(lambda: get("runs?limit=100"))

    # -- 1M-point series ---------------------------------------------------------------------------
    raw_series, points = timed(lambda: conn.execute(
        "SELECT step, value FROM metrics WHERE run_id=? AND name='loss' ORDER BY id",
        (big,)).fetchall(), rounds=3)
    assert len(points) == args.points
    from celltrain.server.manager import CelltrainManager
    from celltrain.store import Store
    store = Store(ws_path)
    step = [args.points]
    sizes = iter(range(1000, 2000, 2))

    def new_point() -> None:
        store.add_metrics(big, [("loss", step[0], 0.0, time.time())])
        step[0] += 1

    # cold: a max_points the server has not seen, so nothing is cached for it
    api_cold, body = timed(lambda: get(f"runs/{big}/metrics?name=loss&max_points={next(sizes)}"))
    series = json.loads(body)
    # live: one new point since the last request (a poll of a running run)
    get(f"runs/{big}/metrics?name=loss&max_points=1000")
    api_live, _ = timed(lambda: get(f"runs/{big}/metrics?name=loss&max_points=1000"),
                        before=new_point)
    # warm: nothing new (a poll of a finished run)
    api_warm, _ = timed(lambda: get(f"runs/{big}/metrics?name=loss&max_points=1000"))
    # The cold read in this process, as CPU time: on a machine shared with other jobs the wall
    # times above include waiting for a core, this does not.
    from celltrain.store import series as series_module

    def cold_cpu() -> tuple[float, dict]:
        cpu = []
        for _ in range(ROUNDS):
            manager = CelltrainManager(ws_path, reconcile=False)
            t = time.thread_time()
            answer = manager.metrics(big, names=["loss"], max_points=1000)
            cpu.append(time.thread_time() - t)
        return statistics.median(cpu), answer

    cpu_cold, with_blocks = cold_cpu()
    # The same read the way it was done before the store kept blocks: no bucket is as wide as
    # a block of 2**62 ids, so every bucket is two aggregates over each of its points.
    bits, series_module.METRIC_BLOCK_BITS = series_module.METRIC_BLOCK_BITS, 62
    try:
        cpu_scan, scanned = cold_cpu()
    finally:
        series_module.METRIC_BLOCK_BITS = bits
    assert with_blocks["series"][0]["count"] == scanned["series"][0]["count"]
    s = series["series"][0]
    assert s["count"] >= args.points and len(s["x"]) <= 1000

    print(f"\n{'what':<52}{'median':>10}{'target':>9}{'vs baseline':>13}")
    lines = [
        (f"baseline: raw SQL, {args.runs} runs (fetchall)", raw_list, None, None),
        (f"GET /celltrain/runs?limit={args.runs} ({list_mib:.1f} MiB)", api_list, 0.200,
         api_list / raw_list),
        ("GET /celltrain/runs?limit=100 (the sidebar's page)", api_page, 0.200,
         api_page / raw_list),
        (f"baseline: raw SQL, {args.points} points (fetchall)", raw_series, None, None),
        (f"GET metrics, {args.points} points -> {len(s['x'])}, cold", api_cold, 0.150,
         api_cold / raw_series),
        (f"GET metrics, {args.points} points, live (+1 point)", api_live, 0.150,
         api_live / raw_series),
        (f"GET metrics, {args.points} points, unchanged (cached)", api_warm, 0.150,
         api_warm / raw_series),
        ("  the cold one in-process, CPU time", cpu_cold, 0.150, cpu_cold / raw_series),
        ("  ... reading every point (the previous way), CPU", cpu_scan, None,
         cpu_scan / raw_series),
    ]
    for what, seconds, target, ratio in lines:
        print(f"{what:<52}{seconds * 1000:>8.1f}ms"
              + (f"{target * 1000:>7.0f}ms" if target else f"{'':>9}")
              + (f"{ratio:>12.2f}x" if ratio else ""))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "magics"))
    main()
