"""v1's ``Workspace`` and ``Experiment`` over a local celltrain workspace.

An Azure ``config.json`` (in the folder given, ``./.azureml/`` or ``./`` and their parents)
maps to a local workspace named after it: ``<default workspace>-<workspace_name>`` beside the
default one (``$CELLTRAIN_WORKSPACE`` or ``./.celltrain``); without one, the default itself.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .uncovered import Uncovered

CONFIG_NAMES = ("config.json",)


def find_config(path=None, file_name=None) -> Path | None:
    names = (file_name,) if file_name else CONFIG_NAMES
    start = Path(path or ".").expanduser().resolve()
    if start.is_file():
        return start
    for folder in (start, *start.parents):
        for sub in (".azureml", "", "aml_config"):
            for name in names:
                candidate = folder / sub / name
                if candidate.is_file():
                    return candidate
    return None


def local_path(name: str | None) -> Path:
    from ..workspace import default_path
    base = default_path()
    if not name:
        return base
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return base.with_name(f"{base.name}-{slug}")


class Workspace(Uncovered):
    """A v1 workspace: a named local celltrain workspace (``.celltrain`` is the celltrain one)."""

    _v1_name = "Workspace"
    _v1_hints = {"get_default_datastore": "mount a host folder: submit(..., mounts={...})",
                 "write_config": "the local workspace needs no config.json"}

    def __init__(self, subscription_id=None, resource_group=None, workspace_name=None,
                 auth=None, _location=None, _disable_service_check=False, **kwargs):
        from ..workspace import Workspace as CelltrainWorkspace
        self.name = workspace_name or "default"
        self.subscription_id, self.resource_group = subscription_id, resource_group
        self.location = "local"
        self.celltrain = CelltrainWorkspace(local_path(workspace_name))

    @staticmethod
    def from_config(path=None, auth=None, _logger=None, _file_name=None) -> "Workspace":
        found = find_config(path, _file_name)
        if found is None:
            return Workspace()
        try:
            config = json.loads(found.read_text())
        except ValueError as e:
            raise ValueError(f"{found} is not a JSON config ({e}): give it "
                             '{"workspace_name": ...} or remove it to use the default') from None
        return Workspace(config.get("subscription_id"), config.get("resource_group"),
                         config.get("workspace_name"))

    @staticmethod
    def get(name, auth=None, subscription_id=None, resource_group=None, location=None,
            cloud="AzureCloud", id=None) -> "Workspace":
        return Workspace(subscription_id, resource_group, name)

    @property
    def compute_targets(self) -> dict:
        from .compute import ComputeTarget
        return {t["name"]: ComputeTarget(self, t["name"])
                for t in self.celltrain.targets() if t["saved"]}

    @property
    def experiments(self) -> dict:
        return {e["name"]: Experiment(self, e["name"]) for e in self.celltrain.experiments()}

    @property
    def models(self) -> dict:
        from .model import Model
        return {name: Model(self, name) for name in self.celltrain.models().names()} \
            if hasattr(self.celltrain.models(), "names") else {}

    def get_details(self) -> dict:
        return {"name": self.name, "location": "local", "folder": str(self.celltrain.path)}

    def __repr__(self):
        return f"Workspace.create(name={self.name!r}, folder={str(self.celltrain.path)!r})"


class Experiment(Uncovered):
    """v1's experiment: ``submit`` takes an estimator, a ScriptRunConfig or a HyperDriveConfig."""

    _v1_name = "Experiment"

    def __init__(self, workspace: Workspace, name: str, **kwargs):
        self.workspace, self.name = workspace, name
        self.celltrain = workspace.celltrain.experiment(name)

    def submit(self, config, tags=None, **kwargs):
        from .core_run import Run
        from .jobs import submit_job
        handle = submit_job(self, config, tags or {})
        if getattr(handle, "kind", None) == "sweep" or type(handle).__name__ == "Sweep":
            from .hyperdrive import HyperDriveRun
            return HyperDriveRun(self, _handle=handle)
        return Run(self, _handle=handle)

    def get_runs(self, type=None, tags=None, properties=None, include_children=False):
        from .core_run import Run
        for handle in self.celltrain.runs():
            if include_children or not handle.record.get("parent_id"):
                yield Run(self, _handle=handle)

    def __repr__(self):
        return f"Experiment(Name: {self.name}, Workspace: {self.workspace.name})"
