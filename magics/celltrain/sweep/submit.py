"""``Experiment.sweep()``: check everything, then record the sweep as a parent run.

Nothing starts before the space, sampler, policy, metric and limits are checked.  The sweep's
spec is its children's base spec with ``kind="sweep"`` and the sweep settings in ``spec.sweep``;
its folder holds one snapshot of the code that every trial copies, so a trial started an hour
later runs the code as it was submitted.
"""
from __future__ import annotations

from typing import Any, Sequence

from .policies import check_goal, policy_to_dict, sampler_to_dict
from .space import BadSpace, check_space, grid_size, space_to_dict


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadSpace(f"{name} must be a whole number of at least 1, not {value!r}")
    return value


def _duration(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or value == float("inf"):
        raise BadSpace(f"max_duration_s must be a number of seconds above 0 (or None for no "
                       f"limit), not {value!r}")
    return float(value)


def sweep_settings(params, metric: str, goal: str, sampler: Any, early_termination: Any,
                   max_runs: int, max_concurrent: int, seed: int | None,
                   cancel_grace: float = 5.0,
                   max_duration_s: float | None = None) -> dict[str, Any]:
    """The ``spec.sweep`` dict, every value checked (``BadSpace`` names the one refused)."""
    space = check_space(params)
    if not isinstance(metric, str) or not metric.strip():
        raise BadSpace(f"metric= must name the metric the script logs (e.g. 'val_acc'), "
                       f"not {metric!r}")
    _count("max_runs", max_runs)
    _count("max_concurrent", max_concurrent)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadSpace(f"seed must be an integer or None, not {seed!r}")
    grid_ok = True
    try:
        size = grid_size(space)
    except BadSpace:
        grid_ok, size = False, None
    sampler_d = sampler_to_dict(sampler, grid_ok)
    if sampler_d["name"] == "grid":
        max_runs = min(max_runs, size)   # the grid has no more points than this
    return {"space": space_to_dict(space), "metric": metric, "goal": check_goal(goal),
            "sampler": sampler_d, "policy": policy_to_dict(early_termination),
            "max_runs": max_runs, "max_concurrent": max_concurrent, "seed": seed,
            "cancel_grace": float(cancel_grace), "max_duration_s": _duration(max_duration_s)}


def submit_sweep(experiment, script: str, source_dir=".", args: Sequence = (),
                 environment=None, gpus: Any = "auto", *, params: dict, metric: str,
                 goal: str = "maximize", sampler: Any = "tpe",
                 early_termination: Any = None, max_runs: int = 16, max_concurrent: int = 4,
                 seed: int | None = None, max_duration_s: float | None = None,
                 base_params: dict | None = None,
                 snapshot_limit_mb: float | None = None, **submit_options: Any):
    """Start a sweep of ``script``: ``params`` is the space ({name: distribution}),
    ``metric``/``goal`` what Optuna optimizes (the last value each trial logs),
    ``sampler`` "random", "grid", "tpe" or an Optuna sampler, ``early_termination`` a policy,
    "median"/"bandit"/"truncation" or an Optuna pruner.  ``max_duration_s`` bounds the whole
    sweep: past it no trial starts, the running ones are canceled and the sweep ends saying
    so (HyperDrive's ``max_duration_minutes``).  Every other keyword is ``submit()``'s
    (target, memory, timeout, tags, ...) and applies to each trial.  Returns the ``Sweep``.
    """
    from .handle import Sweep
    settings = sweep_settings(params, metric, goal, sampler, early_termination, max_runs,
                              max_concurrent, seed, max_duration_s=max_duration_s)
    base = experiment.make_spec(script, source_dir, args, environment, gpus,
                                params=base_params, **submit_options)
    settings["snapshot_limit_mb"] = snapshot_limit_mb   # None: snapshot's default; inf: none
    spec = base.replace(kind="sweep", sweep=settings)
    run = experiment.submit_spec(spec, **({} if snapshot_limit_mb is None else
                                          {"snapshot_limit_mb": snapshot_limit_mb}))
    return Sweep(run.workspace, run.id)
