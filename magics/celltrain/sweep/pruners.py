"""The stored sampler and policy as Optuna objects (controller side), and why a trial stopped.

Median and truncation are Optuna's MedianPruner and PercentilePruner; Bandit has no Optuna
twin, so it is a small ``BasePruner`` with HyperDrive's rule.  ``why_pruned`` puts the numbers
the decision was made on into the child's reason.
"""
from __future__ import annotations

import base64
import math
import pickle
import statistics

import optuna
from optuna.pruners import BasePruner
from optuna.trial import TrialState


def _best_so_far(study, trial, step: int) -> float | None:
    """The best value any other trial reported at or before ``step``."""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    best = None
    for other in study.get_trials(deepcopy=False):
        if other.number == trial.number:
            continue
        values = [v for s, v in other.intermediate_values.items()
                  if s <= step and math.isfinite(v)]
        if values:
            v = max(values) if maximize else min(values)
            if best is None or (v > best if maximize else v < best):
                best = v
    return best


def bandit_threshold(policy: dict, best: float, maximize: bool) -> float:
    if policy.get("slack_factor") is not None:
        f = policy["slack_factor"]
        return best / (1 + f) if maximize else best * (1 + f)
    a = policy["slack_amount"]
    return best - a if maximize else best + a


class BanditPruner(BasePruner):
    """HyperDrive's Bandit policy: prune when the trial is worse than the best so far by more
    than the slack, every ``evaluation_interval`` steps from ``delay_evaluation`` on."""

    def __init__(self, policy: dict):
        self.policy = policy

    def prune(self, study, trial) -> bool:
        step = trial.last_step
        if step is None or step < self.policy["delay_evaluation"]:
            return False
        if (step - self.policy["delay_evaluation"]) % self.policy["evaluation_interval"]:
            return False
        value = trial.intermediate_values[step]
        best = _best_so_far(study, trial, step)
        if best is None or not math.isfinite(value):
            return False
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        limit = bandit_threshold(self.policy, best, maximize)
        return value < limit if maximize else value > limit


def make_pruner(policy: dict | None):
    if policy is None:
        return optuna.pruners.NopPruner()
    name = policy["name"]
    if name == "bandit":
        return BanditPruner(policy)
    if name not in ("median", "truncation"):
        return unpickle(policy)
    common = dict(n_startup_trials=policy["startup_trials"],
                  n_warmup_steps=policy["delay_evaluation"],
                  interval_steps=policy["evaluation_interval"])
    if name == "median":
        return optuna.pruners.MedianPruner(**common)
    return optuna.pruners.PercentilePruner(100 - policy["truncation_percentage"], **common)


def make_sampler(sampler: dict, space: dict, seed: int | None):
    name = sampler["name"]
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler({k: p.grid() for k, p in space.items()}, seed=seed)
    return unpickle(sampler)


def why_pruned(policy: dict | None, study, trial, step: int, value: float,
               metric: str) -> str:
    """ "early termination: bandit at step 6 (val_acc 0.61 < best 0.80 / 1.15 = 0.70)". """
    name = (policy or {}).get("name", "optuna")
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    worse = "<" if maximize else ">"
    detail = f"{metric} {value:.4g}"
    if name == "bandit":
        best = _best_so_far(study, trial, step)
        if best is not None:
            limit = bandit_threshold(policy, best, maximize)
            slack = (f"{'/' if maximize else '*'} {1 + policy['slack_factor']:g}"
                     if policy.get("slack_factor") is not None else
                     f"{'-' if maximize else '+'} {policy['slack_amount']:g}")
            detail += f" {worse} best {best:.4g} {slack} = {limit:.4g}"
    elif name in ("median", "truncation"):
        done = [t.intermediate_values[step] for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)) if step in t.intermediate_values]
        if done and name == "median":
            detail += f" {worse} median {statistics.median(done):.4g} of {len(done)} trials"
        elif done:
            detail += (f" in the worst {policy['truncation_percentage']:g}% of "
                       f"{len(done)} trials")
        name = {"median": "median stopping", "truncation": "truncation selection"}[name]
    else:
        name = type(study.pruner).__name__
    return f"early termination: {name} at step {step} ({detail})"


def unpickle(stored: dict):
    """A user's Optuna sampler or pruner, pickled into the sweep's spec at submission."""
    return pickle.loads(base64.b64decode(stored["pickle"]))
