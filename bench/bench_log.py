"""Cost of one log() call in the training process, for 1M scalars, against two baselines.

Baselines measured in the same process and run: appending to a Python list (the floor), and
writing JSON lines (what a naive logger does).  celltrain's figure includes its flusher thread
and the final flush, i.e. everything the training process pays.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

N = 1_000_000


def bench_list() -> float:
    values = []
    append = values.append
    t = time.perf_counter()
    for i in range(N):
        append(("loss", i, i * 0.5, time.time()))
    return time.perf_counter() - t


def bench_jsonl(folder: str) -> float:
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        t = time.perf_counter()
        for i in range(N):
            f.write(json.dumps({"name": "loss", "step": i, "value": i * 0.5,
                                "time": time.time()}) + "\n")
        f.flush()
        return time.perf_counter() - t


def bench_celltrain(folder: str) -> float:
    from celltrain import context
    run = context.Run(os.path.join(folder, "telemetry"))
    log = run.log
    t = time.perf_counter()
    for i in range(N):
        log("loss", i * 0.5, i)
    run.flush()
    return time.perf_counter() - t


def main() -> dict:
    with tempfile.TemporaryDirectory() as folder:
        results = {}
        for name, fn in (("list append", bench_list), ("JSON lines", lambda: bench_jsonl(folder)),
                         ("celltrain log()", lambda: bench_celltrain(folder))):
            results[name] = min(fn() for _ in range(3)) / N * 1e6
    base = results["list append"]
    print(f"log() cost per call, {N:,} scalars (best of 3), python {sys.version.split()[0]}")
    for name, us in results.items():
        print(f"  {name:<16} {us:6.2f} us/call   {us / base:5.2f}x list append   "
              f"{us / results['JSON lines']:5.2f}x JSON lines")
    return results


if __name__ == "__main__":
    main()
