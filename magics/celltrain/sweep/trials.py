"""What a sweep's trials come to: their arguments, their final value, the best one so far.

Shared by the controller (which records the summary in the sweep's row) and the handle.
"""
from __future__ import annotations

from typing import Any

SWEEP_TAG, TRIAL_TAG = "celltrain.sweep", "celltrain.trial"


def arguments(params: dict[str, Any]) -> list[str]:
    """A trial's params as HyperDrive passed them: ``--lr 0.01 --batch_size 32``."""
    out: list[str] = []
    for name, value in params.items():
        out += [f"--{name}", repr(value) if isinstance(value, float) else str(value)]
    return out


def final_value(store, run_id: str, metric: str) -> float | None:
    """The last value the run logged of the sweep's metric (what Optuna is told)."""
    points = store.metric_series(run_id, metric)
    values = [v for _, _, _, v, _ in points if v is not None]
    return values[-1] if values else None


def better(a: float, b: float, goal: str) -> bool:
    return a > b if goal == "maximize" else a < b


def summary(trials, children: list[dict], cfg: dict) -> dict[str, Any]:
    """How many trials finished and the best completed one: {finished, best, desc}."""
    from optuna.trial import TrialState
    runs = {int(c["tags"][TRIAL_TAG]): c["id"] for c in children if TRIAL_TAG in c["tags"]}
    finished = [t for t in trials if t.state.is_finished()]
    best = None
    for t in finished:
        if t.state == TrialState.COMPLETE and t.value is not None and (
                best is None or better(t.value, best.value, cfg["goal"])):
            best = t
    pruned = sum(t.state == TrialState.PRUNED for t in finished)
    desc = f"{len(finished)}/{cfg['max_runs']} trials, {pruned} stopped early"
    best_d = None
    if best is not None:
        best_d = {"trial": best.number, "run": runs.get(best.number), "value": best.value,
                  "params": dict(best.params)}
        desc += f"; best {cfg['metric']} {best.value:.4g} (trial {best.number})"
    return {"finished": len(finished), "best": best_d, "desc": desc}


def concurrency_limit(max_concurrent: int, gpus, free_gpus: int | None) -> int:
    """How many trials may run at once: ``max_concurrent``, and no more than the target's GPUs
    hold when each trial asks for some (a count or device ids; "all" takes every GPU, so one
    at a time).  At least one, so a sweep always moves on."""
    if free_gpus is None or gpus in (None, "none", "auto", 0):
        return max_concurrent
    if gpus == "all":
        return 1
    per = len(gpus) if isinstance(gpus, (list, tuple)) else int(gpus)
    if per <= 0:
        return max_concurrent
    return max(1, min(max_concurrent, free_gpus // per))
