"""Cost of one log() call in the training process, for 1M scalars, against two baselines.

Baselines measured in the same process and run: appending to a Python list (the floor), and
writing JSON lines (what a naive logger does).  celltrain's figures include its type checks,
its flusher thread (encoding and checksumming frames) and the final flush, i.e. everything the
training process pays; with an explicit step (range-checked) and without one.  The budget is
1 us a call; the ratio to the list append is what to compare across machines.
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


BUDGET_US = 1.0


def bench_celltrain(folder: str, with_step: bool = True) -> float:
    from celltrain.runtime import context
    run = context.Run(os.path.join(folder, "telemetry"))
    log = run.log
    t = time.perf_counter()
    if with_step:
        for i in range(N):
            log("loss", i * 0.5, i)
    else:
        for i in range(N):
            log("loss", i * 0.5)
    run.flush()
    spent = time.perf_counter() - t
    run._close()   # stop its flusher: the next measurement has the machine to itself
    return spent


def main() -> dict:
    with tempfile.TemporaryDirectory() as folder:
        results = {}
        for name, fn in (("list append", bench_list), ("JSON lines", lambda: bench_jsonl(folder)),
                         ("log(n, v, step)", lambda: bench_celltrain(folder)),
                         ("log(n, v)", lambda: bench_celltrain(folder, with_step=False))):
            results[name] = min(fn() for _ in range(3)) / N * 1e6
    base = results["list append"]
    print(f"log() cost per call, {N:,} scalars (best of 3), python {sys.version.split()[0]}")
    for name, us in results.items():
        print(f"  {name:<16} {us:6.2f} us/call   {us / base:5.2f}x list append   "
              f"{us / results['JSON lines']:5.2f}x JSON lines")
    worst = max(results["log(n, v, step)"], results["log(n, v)"])
    print(f"  budget {BUDGET_US:g} us/call: {'within' if worst <= BUDGET_US else 'OVER'} "
          f"({worst:.2f} us at worst)")
    return results


if __name__ == "__main__":
    main()
