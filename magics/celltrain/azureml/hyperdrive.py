"""``azureml.train.hyperdrive``: v1's HyperDrive onto celltrain sweeps (Optuna).

Sampling maps to a sampler (Random → random, Grid → grid, Bayesian → TPE, Optuna's Bayesian
sampler), the policies to celltrain's, the space to its distributions; ``loguniform`` and
``qloguniform`` take exponents as in v1.  A HyperDrive run is celltrain's ``Sweep``.
"""
from __future__ import annotations

import math

from ..sweep import policies as _policies
from ..sweep import space as _space
from .core_run import Run
from .uncovered import Uncovered, not_covered


def uniform(min_value, max_value):
    return _space.uniform(min_value, max_value)


def loguniform(min_value, max_value):
    """v1: the *exponents*: a value in [e**min_value, e**max_value], log-uniform."""
    return _space.loguniform(math.exp(min_value), math.exp(max_value))


def quniform(min_value, max_value, q):
    return _space.quniform(min_value, max_value, q)


def choice(*options):
    values = options[0] if len(options) == 1 and isinstance(options[0], (list, tuple,
                                                                          range)) else options
    return _space.choice(list(values))


def randint(upper):
    return _space.randint(0, int(upper) - 1)


def normal(mu, sigma):
    raise NotImplementedError(
        f"normal({mu}, {sigma}): celltrain sweeps (Optuna distributions) have no normal "
        f"distribution: use uniform({mu - 2 * sigma}, {mu + 2 * sigma}) for about the same "
        "range, or loguniform for scales")


qnormal = lognormal = qlognormal = normal


class PrimaryMetricGoal:
    MAXIMIZE = "MAXIMIZE"
    MINIMIZE = "MINIMIZE"


class _Sampling:
    sampler = "random"

    def __init__(self, parameter_space, properties=None):
        if not isinstance(parameter_space, dict) or not parameter_space:
            raise ValueError(f"{type(self).__name__}({parameter_space!r}): pass the space as "
                             "{'--lr': uniform(0.001, 0.1), ...}")
        self.parameter_space = parameter_space

    def space(self) -> dict:
        return {name.lstrip("-"): dist for name, dist in self.parameter_space.items()}


class RandomParameterSampling(_Sampling):
    sampler = "random"


class GridParameterSampling(_Sampling):
    sampler = "grid"


class BayesianParameterSampling(_Sampling):
    sampler = "tpe"


def BanditPolicy(evaluation_interval=1, slack_factor=None, slack_amount=None,
                 delay_evaluation=0):
    return _policies.BanditPolicy(slack_factor=slack_factor, slack_amount=slack_amount,
                                  evaluation_interval=evaluation_interval,
                                  delay_evaluation=delay_evaluation)


def MedianStoppingPolicy(evaluation_interval=1, delay_evaluation=0):
    return _policies.MedianStoppingPolicy(evaluation_interval=evaluation_interval,
                                          delay_evaluation=delay_evaluation)


def TruncationSelectionPolicy(truncation_percentage, evaluation_interval=1,
                              delay_evaluation=0, exclude_finished_jobs=False):
    return _policies.TruncationSelectionPolicy(truncation_percentage=truncation_percentage,
                                               evaluation_interval=evaluation_interval,
                                               delay_evaluation=delay_evaluation)


class NoTerminationPolicy:
    """No early termination (celltrain: ``early_termination=None``)."""


class HyperDriveConfig(Uncovered):
    _v1_name = "HyperDriveConfig"

    def __init__(self, hyperparameter_sampling, primary_metric_name, primary_metric_goal,
                 max_total_runs, max_concurrent_runs=None, max_duration_minutes=10080,
                 policy=None, estimator=None, run_config=None, resume_from=None,
                 resume_child_runs=None, pipeline=None, debug_flag=None,
                 custom_run_id=None):
        if (estimator is None) == (run_config is None):
            raise ValueError("HyperDriveConfig needs exactly one of estimator= or "
                             "run_config= (a ScriptRunConfig)")
        if not isinstance(hyperparameter_sampling, _Sampling):
            raise ValueError(f"hyperparameter_sampling={hyperparameter_sampling!r}: pass "
                             "RandomParameterSampling, GridParameterSampling or "
                             "BayesianParameterSampling")
        self.job = estimator or run_config
        self.sampling = hyperparameter_sampling
        self.primary_metric_name = primary_metric_name
        self.goal = str(primary_metric_goal).lower() if primary_metric_goal else "maximize"
        if self.goal not in ("maximize", "minimize"):
            raise ValueError(f"primary_metric_goal={primary_metric_goal!r}: use "
                             "PrimaryMetricGoal.MAXIMIZE or PrimaryMetricGoal.MINIMIZE")
        self.max_total_runs = max_total_runs
        self.max_concurrent_runs = max_concurrent_runs or max_total_runs
        self.max_duration_minutes = max_duration_minutes
        if max_duration_minutes is not None and (
                isinstance(max_duration_minutes, bool)
                or not isinstance(max_duration_minutes, (int, float))
                or not max_duration_minutes > 0):
            raise ValueError(f"max_duration_minutes={max_duration_minutes!r}: give the "
                             "sweep's limit in minutes, above 0 (v1's default is 10080)")
        self.policy = None if isinstance(policy, NoTerminationPolicy) else policy

    @property
    def max_duration_s(self):
        """The limit as celltrain's sweeps take it (``max_duration_s``)."""
        minutes = self.max_duration_minutes
        return None if minutes is None else float(minutes) * 60


def submit_hyperdrive(experiment, config: HyperDriveConfig, tags: dict):
    from ..sweep.handle import Sweep
    from ..sweep.submit import sweep_settings
    settings = sweep_settings(config.sampling.space(), config.primary_metric_name, config.goal,
                              config.sampling.sampler, config.policy, config.max_total_runs,
                              config.max_concurrent_runs, None,
                              max_duration_s=config.max_duration_s)
    settings["snapshot_limit_mb"] = None
    base = config.job.to_spec(experiment, tags)
    run = experiment.celltrain.submit_spec(base.replace(kind="sweep", sweep=settings))
    return Sweep(run.workspace, run.id)


class HyperDriveRun(Run):
    """v1's HyperDrive run: the sweep, its children, the best by the primary metric."""

    _v1_name = "HyperDriveRun"

    @property
    def _sweep(self):
        from ..sweep.handle import Sweep
        return Sweep.of(self._handle)

    def get_children(self, recursive=False, tags=None, properties=None, type=None,
                     status=None, _rehydrate_runs=True):
        return [Run(self._experiment, _handle=r) for r in self._sweep.runs()]

    def get_best_run_by_primary_metric(self, include_failed=True, include_canceled=True,
                                       include_resume_from_runs=True):
        best = self._sweep.best_run()
        return Run(self._experiment, _handle=best) if best is not None else None

    def get_children_sorted_by_primary_metric(self, top=0, reverse=False,
                                              discard_no_metric=False):
        sweep = self._sweep
        maximize = sweep.settings["goal"] == "maximize"
        rows = [{"run_id": t["run"], "hyperparameters": t["params"],
                 "best_primary_metric": t["best"], "status": t["status"]}
                for t in sweep.trials() if not (discard_no_metric and t["best"] is None)]
        rows.sort(key=lambda r: (r["best_primary_metric"] is None,
                                 -(r["best_primary_metric"] or 0) if maximize
                                 else (r["best_primary_metric"] or 0)), reverse=reverse)
        return rows[:top] if top else rows

    def get_metrics(self, name=None, recursive=False):
        if not recursive:
            return super().get_metrics(name)
        return {c.id: c.get_metrics(name) for c in self.get_children()}


__getattr__ = not_covered("azureml.train.hyperdrive")
