"""Hyperparameter sweeps on Optuna: a parent run of kind "sweep" and one child run per trial.

``space`` (distributions), ``policies`` (early termination), ``submit`` (``Experiment.sweep``),
``controller`` (the detached process that runs the study), ``handle`` (``Sweep``).  Only the
controller imports Optuna at the top: submitting and viewing a sweep need it only for Optuna
objects the user passes.
"""
from .policies import BanditPolicy, MedianStoppingPolicy, TruncationSelectionPolicy
from .space import BadSpace, choice, loguniform, quniform, randint, uniform

__all__ = ["BadSpace", "BanditPolicy", "MedianStoppingPolicy", "TruncationSelectionPolicy",
           "choice", "loguniform", "quniform", "randint", "uniform"]
