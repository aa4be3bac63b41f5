"""The ``azureml.*`` names of Azure ML SDK v1 as celltrain's modules (stdlib only: it also
runs inside the container, where ``CELLTRAIN_AZUREML=1`` installs it before the script).

A meta-path finder, installed only on request: it answers the listed names with the modules
of ``celltrain.azureml`` and any other ``azureml.*`` name with an ``ImportError`` that is also
a ``NotImplementedError`` naming the celltrain way.  It refuses to install where the real
``azureml-core`` is importable, so it never shadows the SDK.
"""
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

from .wire import AZUREML_ENV as ENABLE_ENV

MODULES = {
    "azureml": "celltrain.azureml",
    "azureml.core": "celltrain.azureml.core",
    "azureml.core.run": "celltrain.azureml.core_run",
    "azureml.core.compute": "celltrain.azureml.compute",
    "azureml.core.compute_target": "celltrain.azureml.compute",
    "azureml.core.runconfig": "celltrain.azureml.runconfig",
    "azureml.core.environment": "celltrain.azureml.environment",
    "azureml.core.conda_dependencies": "celltrain.azureml.environment",
    "azureml.core.model": "celltrain.azureml.model",
    "azureml.core.webservice": "celltrain.azureml.webservice",
    "azureml.train": "celltrain.azureml.train",
    "azureml.train.dnn": "celltrain.azureml.estimators",
    "azureml.train.estimator": "celltrain.azureml.estimators",
    "azureml.train.hyperdrive": "celltrain.azureml.hyperdrive",
    "azureml.widgets": "celltrain.azureml.widgets",
}


class NotCovered(ImportError, NotImplementedError):
    """An ``azureml`` name the layer does not cover."""


class RealSdkPresent(RuntimeError):
    """The real Azure ML SDK is importable: the layer will not shadow it."""


def real_sdk_location():
    """Where the real ``azureml-core`` lives, or None (looked up without importing it)."""
    if any(isinstance(f, AzuremlFinder) for f in sys.meta_path):
        return None
    spec = importlib.machinery.PathFinder.find_spec("azureml")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if os.path.isdir(os.path.join(folder, "core")):
            return os.path.join(folder, "core")
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module):
        # The import system gave the module the alias's spec: give it back its own, so its
        # relative imports resolve within celltrain (and __package__ agrees with __spec__).
        module.__spec__ = self.own_spec


class AzuremlFinder(importlib.abc.MetaPathFinder):
    """Answers ``azureml`` and ``azureml.*``; nothing else."""

    def find_spec(self, name, path=None, target=None):
        if name != "azureml" and not name.startswith("azureml."):
            return None
        celltrain_name = MODULES.get(name)
        if celltrain_name is None:
            raise NotCovered(
                "%s is not covered by celltrain's Azure ML v1 layer: use celltrain directly "
                "(README, 'Migrating from Azure ML SDK v1', lists what maps to what)" % name)
        is_package = name in ("azureml", "azureml.core", "azureml.train")
        return importlib.util.spec_from_loader(name, _Alias(celltrain_name),
                                               is_package=is_package)


def install():
    """Map the ``azureml`` names onto celltrain's; refuses where the real SDK is importable."""
    if any(isinstance(f, AzuremlFinder) for f in sys.meta_path):
        return False
    where = real_sdk_location()
    if where is not None:
        raise RealSdkPresent(
            "the real azureml-core is importable (%s): celltrain's v1 layer will not shadow "
            "it. Uninstall azureml-core in this environment (pip uninstall azureml-core), or "
            "run the notebook where it is not installed" % where)
    sys.meta_path.insert(0, AzuremlFinder())
    return True


def uninstall():
    """Remove the finder and the aliased modules (for tests and for going back)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, AzuremlFinder)]
    for name in list(sys.modules):
        if name == "azureml" or name.startswith("azureml."):
            del sys.modules[name]


def install_if_asked(environ=None):
    """Inside a run: install when the layer submitted it (``CELLTRAIN_AZUREML=1``)."""
    if (environ if environ is not None else os.environ).get(ENABLE_ENV) == "1":
        return install()
    return False
