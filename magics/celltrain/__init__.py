"""celltrain: send a notebook's training cell to a GPU container, and watch it live.

Imports are lazy (PEP 562) so that ``from celltrain import Run, log`` inside a container needs
nothing but the standard library: the package is mounted into images that may lack the host's
dependencies.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Workspace": "celltrain.workspace",
    "Experiment": "celltrain.workspace",
    "Environment": "celltrain.environment",
    "RunSpec": "celltrain.spec",
    "Resources": "celltrain.spec",
    "Distribution": "celltrain.spec",
    "ComputeTarget": "celltrain.targets.base",
    "UnknownTarget": "celltrain.targets",
    "Run": "celltrain.run",
    "log": "celltrain.runtime.context",
    "progress": "celltrain.runtime.context",
    "get_context": "celltrain.runtime.context",
    "CelltrainError": "celltrain.errors",
    "DockerUnavailable": "celltrain.errors",
    "GPUUnavailable": "celltrain.errors",
    "SourceTooLarge": "celltrain.errors",
    "RunNotFound": "celltrain.errors",
    "ImageBuildError": "celltrain.errors",
    "RunFailed": "celltrain.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'celltrain' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


def _jupyter_labextension_paths():
    """The prebuilt JupyterLab sidebar shipped in the package (no build step for users)."""
    return [{"src": "labextension", "dest": "celltrain"}]


def _jupyter_server_extension_points():
    """The REST API for the sidebar; ``celltrain.server`` is imported only by Jupyter Server."""
    return [{"module": "celltrain.server"}]


def load_ipython_extension(ipython):
    """``%load_ext celltrain``: the ``%%train`` and ``%train`` magics."""
    from .magics import load_ipython_extension as load
    load(ipython)
