"""Compute targets, found by kind: the built-ins, then the ``celltrain.targets`` entry points.

A plug-in package adds a target without editing celltrain::

    [options.entry_points]
    celltrain.targets =
        slurm = celltrain_slurm:SlurmTarget

``target=`` takes a kind ("docker", "local", "slurm") or the name of a target saved in the
workspace with ``Workspace.add_target(name, kind, **settings)``.
"""
from __future__ import annotations

import functools
import importlib
from importlib import metadata

from ..errors import CelltrainError
from .base import ComputeTarget, Handle, Prepared, PrepareStopped, Result

ENTRY_POINT_GROUP = "celltrain.targets"
BUILTIN = {
    "docker": "celltrain.targets.docker.target:DockerTarget",
    "local": "celltrain.targets.local:LocalTarget",
    "ray": "celltrain.targets.ray.target:RayTarget",     # needs celltrain[ray] to run
}

__all__ = ["ComputeTarget", "Handle", "Prepared", "PrepareStopped", "Result", "UnknownTarget",
           "kinds", "target_class", "ENTRY_POINT_GROUP"]


class UnknownTarget(CelltrainError, ValueError):
    """``target=`` names neither a known kind nor a target saved in the workspace."""


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, metadata.EntryPoint]:
    """Plug-ins, read once per process: scanning every installed distribution takes ~0.2 s."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def kinds() -> list[str]:
    """Every kind of target this installation knows: built-ins first, then plug-ins."""
    return [*BUILTIN, *sorted(set(_entry_points()) - set(BUILTIN))]


def target_class(kind: str) -> type[ComputeTarget]:
    """The class of target ``kind``; UnknownTarget says which kinds there are."""
    if kind in BUILTIN:
        module, _, name = BUILTIN[kind].partition(":")
        return getattr(importlib.import_module(module), name)
    found = _entry_points().get(kind)
    if found is None:
        raise UnknownTarget(f"target takes one of {', '.join(kinds())}, not {kind!r} (nor is "
                            "it a target saved in this workspace: `celltrain targets` lists "
                            "them, Workspace.add_target(name, kind, ...) saves one)")
    cls = found.load()
    if not (isinstance(cls, type) and issubclass(cls, ComputeTarget)):
        raise UnknownTarget(f"the entry point {found.value!r} for target {kind!r} is not a "
                            "ComputeTarget subclass")
    return cls
