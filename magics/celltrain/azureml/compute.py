"""``azureml.core.compute`` and ``azureml.core.compute_target``: a v1 compute target is a
celltrain target saved by name (the local Docker host by default; a saved Ray target where
``CELLTRAIN_AZUREML_COMPUTE`` names one).  ``vm_size`` and ``max_nodes`` are recorded in the
workspace's ``azureml/compute.json``; GPU sizes (Azure's N series) give runs their GPUs."""
from __future__ import annotations

import json
import os
import re

from .uncovered import Uncovered, not_covered

KIND_ENV = "CELLTRAIN_AZUREML_COMPUTE"   # the kind or saved target new compute maps to


class ComputeTargetException(Exception):
    """v1's error for a compute target that does not exist or cannot be made."""


def is_gpu_size(vm_size: str | None) -> bool:
    """Azure's GPU sizes are the N series: Standard_NC6, Standard_ND40rs_v2, Standard_NV12."""
    return bool(vm_size) and re.match(r"(?i)^(standard_)?n[a-z]*\d", vm_size) is not None


def compute_records(ws) -> dict:
    path = ws.celltrain.path / "azureml" / "compute.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def save_compute_records(ws, records: dict) -> None:
    path = ws.celltrain.path / "azureml" / "compute.json"
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=1))
    os.replace(tmp, path)


class ComputeTarget(Uncovered):
    """A celltrain target saved in the workspace under the v1 name."""

    _v1_name = "ComputeTarget"

    def __init__(self, workspace, name: str):
        saved = workspace.celltrain.store.saved_target(name)
        if saved is None:
            known = [t["name"] for t in workspace.celltrain.targets() if t["saved"]]
            raise ComputeTargetException(
                f"ComputeTargetNotFound: compute target {name!r} is not in workspace "
                f"{workspace.name!r} (saved targets: {known or 'none'}); create it with "
                f"ComputeTarget.create(ws, {name!r}, AmlCompute.provisioning_configuration(...))")
        self.workspace, self.name = workspace, name
        self.kind = saved["kind"]
        record = compute_records(workspace).get(name, {})
        self.vm_size = record.get("vm_size")
        self.max_nodes = record.get("max_nodes", 1)
        self.provisioning_state = "Succeeded"

    @property
    def gpu(self) -> bool:
        return is_gpu_size(self.vm_size)

    @staticmethod
    def create(workspace, name: str, provisioning_configuration) -> "ComputeTarget":
        """Save ``name`` as a celltrain target like ``CELLTRAIN_AZUREML_COMPUTE`` (a kind or a
        saved target), else like the first saved Ray target, else the local Docker host;
        the configuration is recorded."""
        config = provisioning_configuration
        ray = [t["name"] for t in workspace.celltrain.targets()
               if t["saved"] and t["kind"] == "ray"]
        mapped = os.environ.get(KIND_ENV) or (ray[0] if ray else "docker")
        kind, settings = workspace.celltrain.resolve_target(mapped)
        workspace.celltrain.add_target(name, kind, **settings)
        records = compute_records(workspace)
        records[name] = {"vm_size": config.vm_size, "max_nodes": config.max_nodes,
                         "min_nodes": config.min_nodes, "kind": kind}
        save_compute_records(workspace, records)
        return ComputeTarget(workspace, name)

    def wait_for_completion(self, show_output: bool = False, min_node_count=None,
                            timeout_in_minutes: int = 20, is_delete_operation=False):
        if show_output:
            print(f"{self.name}: celltrain target ({self.kind}), vm_size {self.vm_size}, "
                  f"Succeeded")

    def get_status(self):
        return self.provisioning_state

    def delete(self) -> None:
        self.workspace.celltrain.remove_target(self.name)
        records = compute_records(self.workspace)
        records.pop(self.name, None)
        save_compute_records(self.workspace, records)

    def __repr__(self):
        return f"ComputeTarget(name={self.name!r}, kind={self.kind!r}, vm_size={self.vm_size!r})"


class ProvisioningConfiguration:
    def __init__(self, vm_size=None, vm_priority="dedicated", min_nodes=0, max_nodes=1,
                 idle_seconds_before_scaledown=None, **kwargs):
        self.vm_size, self.vm_priority = vm_size, vm_priority
        self.min_nodes, self.max_nodes = min_nodes, max_nodes


class AmlCompute(ComputeTarget):
    _v1_name = "AmlCompute"

    @staticmethod
    def provisioning_configuration(vm_size: str = "", vm_priority: str = "dedicated",
                                   min_nodes: int = 0, max_nodes: int = 4, **kwargs):
        return ProvisioningConfiguration(vm_size, vm_priority, min_nodes, max_nodes, **kwargs)

    @staticmethod
    def supported_vmsizes(workspace, location=None):
        return [{"name": "local", "vCPUs": os.cpu_count(), "gpus": 0}]


__getattr__ = not_covered("azureml.core.compute", {
    "AksCompute": "deploy with Model.deploy (celltrain serving) on the local host",
    "ComputeInstance": "a celltrain target saved by name: ComputeTarget.create(...)"})
