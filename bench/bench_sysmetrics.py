"""The cost of system metrics to a run, measured in the same run: a fixed CPU-bound loop (its
own CPU time, reported by the script) on the local target with sampling off
(CELLTRAIN_SYS_INTERVAL=0), at the default 5 s, and at 0.5 s, the three alternating.  Prints
the medians of the loop's wall time and their ratios to "off", and the samples taken.

    .venv/bin/python bench/bench_sysmetrics.py [--rounds 5] [--target local|docker]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import celltrain.workspace
from celltrain import Workspace, states

LOOP = """
import time
from celltrain import log
start = time.perf_counter()
n = 0
for i in range(10_000_000):
    n += i
log("loop_s", time.perf_counter() - start)
"""
SETTINGS = {"off": "0", "every 5 s": "5", "every 0.5 s": "0.5"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--target", default="local")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-sysmetrics-"))
    (root / "src").mkdir()
    (root / "src" / "train.py").write_text(LOOP)
    ws = Workspace(root / "ws")
    # Each run's own supervisor, started with this round's setting: a spare supervisor keeps
    # the environment it was started with.
    celltrain.workspace.SPARES = False
    times: dict[str, list[float]] = {k: [] for k in SETTINGS}
    samples: dict[str, list[int]] = {k: [] for k in SETTINGS}
    extra = {"gpus": "none", "network": "none"} if args.target == "docker" else {}
    for _ in range(args.rounds):
        for name, interval in SETTINGS.items():
            os.environ["CELLTRAIN_SYS_INTERVAL"] = interval
            run = ws.experiment("bench").submit("train.py", root / "src", target=args.target,
                                                **extra)
            assert run.wait(timeout=600) == states.COMPLETED, run.reason
            times[name].append(run.latest_metrics()["loop_s"])
            series = ws.store.system_series(run.id, max_points=10_000)
            samples[name].append(len((series.get("sys/mem_bytes") or {"v": []})["v"]))
    base = statistics.median(times["off"])
    print(f"{args.target} target, {args.rounds} rounds, load {os.getloadavg()[0]:.1f}")
    for name in SETTINGS:
        median = statistics.median(times[name])
        print(f"  sampling {name:<12} loop {median:6.2f} s   ratio {median / base:5.3f}   "
              f"samples per run {statistics.median(samples[name]):g}")


if __name__ == "__main__":
    main()
