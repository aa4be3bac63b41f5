"""``azureml.train``: its covered parts are the submodules ``dnn``, ``estimator`` and
``hyperdrive``."""
from .uncovered import not_covered

__path__ = []   # a package to the import system: azureml.train.dnn and the rest are its parts

__getattr__ = not_covered("azureml.train", {
    "automl": "AutoML has no counterpart: run a sweep (Experiment.sweep, on Optuna)"})
