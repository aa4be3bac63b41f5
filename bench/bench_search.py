"""What the sidebar's run list costs with a search and with metrics: a page of 100 runs out of
10,000, through ``CelltrainManager`` (the REST handlers only parse and call it), against the
plain page measured in the same run on the same database.

    plain      list_runs_json(limit=100): the page the sidebar asked for before (baseline)
    search     the same page with a search: "lr=0.01" (a param compared), "adam" (text in
               names, ids, params and tags), "lr<0.05 birds" (two words): each runs over all
               10,000 runs in SQLite (json_each over params and tags)
    metrics    the plain page plus each run's last-logged metric and two chosen columns
               (what ?metrics=1 adds): the 100 runs have 6 metrics of 500 points each

Medians of 9 rounds, interleaved so every variant sees the same load.

Usage: python bench/bench_search.py [--runs 10000]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

ROUNDS = 9
METRICS = ("loss", "val_loss", "acc", "val_acc", "lr", "grad_norm")


def fill(path: Path, runs: int) -> None:
    from celltrain.store import Store
    store = Store(path)
    now = time.time()
    with store.write() as conn:
        for e in ("birds", "cats"):
            conn.execute("INSERT INTO experiments (name, created) VALUES (?, ?)", (e, now))
        ids = dict(conn.execute("SELECT name, id FROM experiments"))
        rows = []
        for i in range(runs):
            exp = "birds" if i % 2 else "cats"
            params = {"lr": [0.001, 0.01, 0.1][i % 3], "batch": 32 * (1 + i % 4),
                      "opt": ["adam", "sgd"][i % 2 // 1 if i % 5 else 0], "epochs": 10}
            rows.append((f"{exp}-{i}-{i:06x}", ids[exp], i, "Completed", "local", now - runs + i,
                         json.dumps(params), json.dumps({"team": f"t{i % 7}"})))
        conn.executemany("INSERT INTO runs (id, experiment_id, number, status, target, created, "
                         "params, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    newest = [r[0] for r in rows[-100:]]
    for run_id in newest:
        store.add_metrics(run_id, [(m, s, 1.0 / (s + 1), now) for s in range(500)
                                   for m in METRICS])
    store.set_run_columns(["val_loss", "acc"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=10_000)
    args = p.parse_args()
    from celltrain.server.manager import CelltrainManager
    from celltrain.server.runlist import add_metrics
    with tempfile.TemporaryDirectory() as tmp:
        fill(Path(tmp) / "ws", args.runs)
        m = CelltrainManager(Path(tmp) / "ws", reconcile=False)
        variants = {
            "plain": lambda: m.list_runs_json(limit=100),
            "search lr=0.01": lambda: m.list_runs_json(limit=100, search="lr=0.01"),
            "search adam": lambda: m.list_runs_json(limit=100, search="adam"),
            "search lr<0.05 birds": lambda: m.list_runs_json(limit=100,
                                                              search="lr<0.05 birds"),
            "metrics=1": lambda: json.dumps(add_metrics(m, json.loads(m.list_runs_json(
                limit=100)), None)),
        }
        for fn in variants.values():
            fn()                                    # warm the page cache and connections
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(ROUNDS):
            for name, fn in variants.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        base = statistics.median(times["plain"])
        print(f"{args.runs} runs, a page of 100; medians of {ROUNDS}")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"{name:22s} {med * 1000:8.2f} ms  {med / base:6.2f}x plain")


if __name__ == "__main__":
    main()
