"""Sweep controller overhead and pruning latency (local target: no Docker in the numbers).

1. Start to start: the same N trivial runs (i) as a sweep with max_concurrent=1, (ii) submitted
   one after another by hand (submit, wait, submit ...).  Ratio = sweep / by hand, medians of
   the gaps between consecutive runs' creation times.
2. Pruning latency: a sweep whose every trial Optuna's ThresholdPruner stops at step 3; from
   the time the script logged the point at that step to (a) the controller's decision (the
   cancel request) and (b) the run ending Canceled.  Target: p95 of (a) <= 1 s.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

N = 10
QUICK = "from celltrain import log\nlog('val_acc', 0.5)\n"
SLOW = ("import time\nfrom celltrain import log\n"
        "for step in range(40):\n    log('val_acc', 0.3, step=step)\n    time.sleep(0.1)\n")


def gaps(times: list[float]) -> list[float]:
    times = sorted(times)
    return [b - a for a, b in zip(times, times[1:])]


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def overhead(ws, src: Path) -> tuple[float, float]:
    from celltrain import choice
    by_hand = []
    for i in range(N):
        run = ws.experiment("hand").submit("train.py", src, target="local", params={"i": i},
                                           args=["--i", i])
        run.wait(poll=0.02)
        by_hand.append(run.record["created"])
    sweep = ws.experiment("sweep").sweep(
        "train.py", src, target="local", params={"i": choice(list(range(N)))},
        metric="val_acc", sampler="grid", max_runs=N, max_concurrent=1)
    assert sweep.wait(poll=0.05) == "Completed", sweep.reason
    swept = [r.record["created"] for r in sweep.runs()]
    return statistics.median(gaps(by_hand)), statistics.median(gaps(swept))


def pruning(ws, src: Path) -> tuple[list[float], list[float]]:
    import optuna
    from celltrain import uniform
    sweep = ws.experiment("prune").sweep(
        "train.py", src, target="local", params={"x": uniform(0, 1)}, metric="val_acc",
        sampler="random", early_termination=optuna.pruners.ThresholdPruner(
            lower=0.5, n_warmup_steps=3), max_runs=12, max_concurrent=3)
    assert sweep.wait(poll=0.05) == "Completed", sweep.reason
    decided, ended = [], []
    for run in sweep.runs():
        record = run.record
        step = record["options"].get("pruned_step")
        assert step is not None, f"{run.id} was not pruned: {record['reason']}"
        logged = next(t for s, _, t in run.metric("val_acc") if s == step)
        canceled = next(h["time"] for h in run.history() if h["status"] == "Canceled")
        decided.append(record["options"]["pruned_at"] - logged)
        ended.append(canceled - logged)
    return decided, ended


def main() -> int:
    from celltrain import Workspace
    with tempfile.TemporaryDirectory() as tmp:
        quick, slow = Path(tmp) / "quick", Path(tmp) / "slow"
        for folder, code in ((quick, QUICK), (slow, SLOW)):
            folder.mkdir()
            (folder / "train.py").write_text(code)
        ws = Workspace(Path(tmp) / "ws")
        ws.experiment("warm").submit("train.py", quick, target="local").wait()
        hand, swept = overhead(ws, quick)
        print(f"start to start, {N} trivial local runs one at a time (medians)")
        print(f"  by hand (submit, wait, submit)  {hand:6.3f} s")
        print(f"  sweep controller                {swept:6.3f} s   ratio {swept / hand:.2f}")
        decided, ended = pruning(ws, slow)
        print(f"pruning latency over {len(decided)} pruned trials (3 at once), from log()")
        print(f"  to the decision (cancel asked)  p50 {quantile(decided, .5):.3f} s  "
              f"p95 {quantile(decided, .95):.3f} s (target <= 1 s)")
        print(f"  to the run ended Canceled       p50 {quantile(ended, .5):.3f} s  "
              f"p95 {quantile(ended, .95):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
