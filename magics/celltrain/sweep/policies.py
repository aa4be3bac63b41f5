"""Early-termination policies, named as in HyperDrive, and sweep settings checked up front.

A policy is a small value stored in the sweep's spec; the controller turns it into an Optuna
pruner (``celltrain.sweep.pruners``).  Any Optuna pruner or sampler object is taken as it is:
it is pickled into the sweep's spec for the controller.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .space import BadSpace

SAMPLERS = ("random", "grid", "tpe")
GOALS = {"maximize": "maximize", "max": "maximize", "minimize": "minimize", "min": "minimize"}


def _interval(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BadSpace(f"{name} must be an integer of at least {low}, not {value!r}")
    return value


@dataclass(frozen=True)
class BanditPolicy:
    """Stop a trial whose metric falls more than the slack behind the best trial so far.

    ``slack_factor``: the best over (1 + factor) for maximize (times it for minimize);
    ``slack_amount``: the best minus (plus) the amount.  Checked every ``evaluation_interval``
    steps from step ``delay_evaluation`` on.
    """
    slack_factor: float | None = None
    slack_amount: float | None = None
    evaluation_interval: int = 1
    delay_evaluation: int = 0

    def __post_init__(self):
        if (self.slack_factor is None) == (self.slack_amount is None):
            raise BadSpace("BanditPolicy takes exactly one of slack_factor= and slack_amount=")
        slack = self.slack_factor if self.slack_factor is not None else self.slack_amount
        if isinstance(slack, bool) or not isinstance(slack, (int, float)) or slack < 0:
            raise BadSpace(f"BanditPolicy's slack must be a number of at least 0, not "
                           f"{slack!r}")
        _interval("evaluation_interval", self.evaluation_interval, 1)
        _interval("delay_evaluation", self.delay_evaluation, 0)


@dataclass(frozen=True)
class MedianStoppingPolicy:
    """Stop a trial whose metric is worse than the median of earlier trials at the same step
    (Optuna's MedianPruner); ``startup_trials`` trials finish before any is stopped."""
    evaluation_interval: int = 1
    delay_evaluation: int = 0
    startup_trials: int = 3

    def __post_init__(self):
        _interval("evaluation_interval", self.evaluation_interval, 1)
        _interval("delay_evaluation", self.delay_evaluation, 0)
        _interval("startup_trials", self.startup_trials, 0)


@dataclass(frozen=True)
class TruncationSelectionPolicy:
    """Stop the trials in the worst ``truncation_percentage`` percent at each evaluation
    (Optuna's PercentilePruner keeping the rest)."""
    truncation_percentage: float = 20
    evaluation_interval: int = 1
    delay_evaluation: int = 0
    startup_trials: int = 3

    def __post_init__(self):
        p = self.truncation_percentage
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 100:
            raise BadSpace(f"truncation_percentage must be between 0 and 100, not {p!r}")
        _interval("evaluation_interval", self.evaluation_interval, 1)
        _interval("delay_evaluation", self.delay_evaluation, 0)
        _interval("startup_trials", self.startup_trials, 0)


POLICIES = {"bandit": BanditPolicy, "median": MedianStoppingPolicy,
            "truncation": TruncationSelectionPolicy}


def policy_to_dict(policy: Any) -> dict[str, Any] | None:
    """The stored form of ``early_termination=``; an Optuna pruner becomes {"name": "optuna"}
    (the object itself is pickled beside the study)."""
    if policy is None or policy == "none":
        return None
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise BadSpace(f"unknown early_termination {policy!r}: use one of "
                           f"{', '.join(POLICIES)}, a policy object or an Optuna pruner")
        policy = POLICIES[policy]() if policy != "bandit" else BanditPolicy(slack_factor=0.1)
    for name, cls in POLICIES.items():
        if isinstance(policy, cls):
            return {"name": name, **asdict(policy)}
    if _is_optuna(policy, "optuna.pruners"):
        return {"name": "optuna", "class": type(policy).__name__, "pickle": _pickled(policy)}
    raise BadSpace(f"early_termination={policy!r} is not a policy: use BanditPolicy(...), "
                   "MedianStoppingPolicy(...), TruncationSelectionPolicy(...), 'median', "
                   "'bandit', 'truncation' or an optuna.pruners object")


def sampler_to_dict(sampler: Any, grid_ok: bool) -> dict[str, Any]:
    if isinstance(sampler, str):
        if sampler not in SAMPLERS:
            raise BadSpace(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)} or "
                           "an optuna.samplers object")
        if sampler == "grid" and not grid_ok:
            raise BadSpace("sampler='grid' needs a discrete space: every parameter a choice(), "
                           "randint() or quniform()")
        return {"name": sampler}
    if _is_optuna(sampler, "optuna.samplers"):
        return {"name": "optuna", "class": type(sampler).__name__, "pickle": _pickled(sampler)}
    raise BadSpace(f"sampler={sampler!r}: use 'random', 'grid', 'tpe' or an optuna.samplers "
                   "object")


def check_goal(goal: Any) -> str:
    if goal not in GOALS:
        raise BadSpace(f"goal={goal!r}: use 'maximize' or 'minimize'")
    return GOALS[goal]


def _is_optuna(obj: Any, module: str) -> bool:
    return any(c.__module__.startswith(module) for c in type(obj).__mro__)


def _pickled(obj: Any) -> str:
    """An Optuna object for the detached controller: cloudpickle, so a class defined in the
    notebook travels by value."""
    import base64
    import cloudpickle
    return base64.b64encode(cloudpickle.dumps(obj)).decode()
