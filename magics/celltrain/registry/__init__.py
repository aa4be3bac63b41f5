"""The model registry: a run's file becomes version 1, 2, 3 ... of a named model.

Each version is a copy of the file (or folder) under ``<workspace>/models/<name>/<version>/``
and a row in the store's ``models`` table that records where it came from: the run, its
metrics at registration, its environment and image digest, tags, a description and a content
hash.  Aliases (``production``, ``staging``) point at one version each and can be moved;
``latest`` is implicit: the newest version that is not archived.

Registration is atomic: the files are copied into a temporary folder, which is renamed into
place inside the transaction that inserts the row.  A failure anywhere leaves no version behind.

    In [1]: m = run.register_model("pytorch-birds", path="outputs/model.pt")
    In [2]: m.set_alias("production")
    In [3]: ws.model("pytorch-birds", alias="production").load(model=Net())

Modules: ``names`` (what is allowed, errors, folder layout), ``register`` (copy and rename into
place), ``version`` (``ModelVersion``), ``loading`` (torch), ``artifacts`` and ``onnx_export``
(ONNX), ``catalog`` (finding versions, ``ModelList``), ``leftovers`` (the lock that keeps a live
process's temporary folders, and the removal of dead ones on open); the SQL is the store's
(``celltrain.store.models``), the cards and tables are views (``celltrain.views.model_cards``).
Names beyond ``names`` are imported on first use, so ``from celltrain.registry import load_hint``
(the widget) does not load the handle, which imports ``celltrain.run``.
"""
from __future__ import annotations

import importlib

from .names import (LATEST, ModelLoadError, ModelNotFound, ModelRegistrationError, check_alias,
                    check_name, load_hint)

_LAZY = {
    "ModelVersion": "version", "register_model": "version",
    "OnnxArtifact": "artifacts", "content_hash": "hashing",
    "ModelList": "catalog", "get_model": "catalog", "list_models": "catalog",
    "model_names": "catalog", "models_of_run": "catalog",
    "remove_leftovers": "leftovers",
}

__all__ = ["LATEST", "ModelLoadError", "ModelNotFound", "ModelRegistrationError", "check_alias",
           "check_name", "load_hint", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'celltrain.registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
