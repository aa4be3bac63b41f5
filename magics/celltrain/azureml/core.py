"""``azureml.core``: its names, resolved lazily so that ``from azureml.core.run import Run``
inside a container needs only the standard library."""
import importlib

from .uncovered import not_covered

__path__ = []   # a package to the import system: azureml.core.run and the rest are its parts

EXPORTS = {
    "Workspace": "workspace", "Experiment": "workspace", "Run": "core_run",
    "ScriptRunConfig": "jobs", "Environment": "environment", "Model": "model",
    "ComputeTarget": "compute", "RunConfiguration": "runconfig",
    "Webservice": "webservice",
}

_missing = not_covered("azureml.core", {
    "Dataset": "read files from the run's source folder or mount a host folder: "
               "celltrain.Workspace().experiment(name).submit(..., mounts={host: inside})",
    "Datastore": "mount a host folder read-only: submit(..., mounts={host: inside})",
    "ScriptRun": "use the Run that experiment.submit returns",
    "Keyvault": "pass values to the run with environment_variables=",
})


def __getattr__(name):
    module = EXPORTS.get(name)
    if module is None:
        return _missing(name)
    value = getattr(importlib.import_module("celltrain.azureml." + module), name)
    globals()[name] = value
    return value
