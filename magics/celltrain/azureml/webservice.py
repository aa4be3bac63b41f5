"""``azureml.core.webservice``: ``LocalWebservice`` and ``AciWebservice`` are celltrain
deployments (Open Inference Protocol v2, plus Azure-style ``/score`` for the entry script)."""
from __future__ import annotations

import json
import os
import urllib.request

from .uncovered import Uncovered, not_covered


class DeploymentConfig:
    def __init__(self, port=None, cpus=None, memory=None, auth=False):
        self.port, self.cpus, self.memory, self.auth = port, cpus, memory, auth


class WebserviceException(Exception):
    """v1's error for a deployment that failed or does not exist."""


class Webservice(Uncovered):
    """A deployment: ``scoring_uri``, ``run``, ``get_logs``, ``delete``."""

    _v1_name = "Webservice"
    _v1_hints = {"update": "deploy again under another name, then delete the old one"}

    def __init__(self, workspace, name, _deployment=None):
        self.workspace, self.name = workspace, name
        self._deployment = _deployment or workspace.celltrain.deployment(name)

    @property
    def state(self):
        return self._deployment.state

    @property
    def scoring_uri(self):
        return self._deployment.scoring_uri

    def wait_for_deployment(self, show_output=False, timeout_sec=900):
        from ..serving.deployment import DeploymentError
        try:
            self._deployment.wait(timeout=timeout_sec)
        except DeploymentError as e:
            raise WebserviceException(f"{e}\n{self.get_logs()[-2000:]}") from None
        if show_output:
            print(f"{self.name}: {self.state} at {self.scoring_uri}")

    def run(self, input_data):
        """POST ``input_data`` (v1: a JSON string) to the entry script's ``run()``."""
        body = input_data.encode() if isinstance(input_data, str) else (
            input_data if isinstance(input_data, bytes) else json.dumps(input_data).encode())
        headers = {"Content-Type": "application/json"}
        if self._deployment.token:
            headers["Authorization"] = f"Bearer {self._deployment.token}"
        req = urllib.request.Request(self.scoring_uri, data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise WebserviceException(f"{self.name} answered {e.code}: "
                                      f"{e.read().decode(errors='replace')}") from None

    def get_logs(self, num_lines=5000, init=False):
        return self._deployment.logs()

    def get_keys(self):
        return (self._deployment.token, self._deployment.token)

    def delete(self):
        self._deployment.stop()

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, state={self.state!r})"


class LocalWebservice(Webservice):
    _v1_name = "LocalWebservice"

    @staticmethod
    def deploy_configuration(port=None):
        return DeploymentConfig(port=port)


class AciWebservice(Webservice):
    _v1_name = "AciWebservice"

    @staticmethod
    def deploy_configuration(cpu_cores=None, memory_gb=None, tags=None, properties=None,
                             description=None, location=None, auth_enabled=None, **kwargs):
        return DeploymentConfig(cpus=cpu_cores, memory=f"{memory_gb}g" if memory_gb else None,
                                auth=bool(auth_enabled))


def deploy(ws, name, models, inference_config, deployment_config, overwrite):
    from .compute import KIND_ENV
    from .environment import Environment
    from ..runtime.azureml_names import ENABLE_ENV
    models = list(models or [])
    if len(models) != 1:
        raise NotImplementedError(
            f"Model.deploy with {len(models)} models: a celltrain deployment serves one "
            "registered version; deploy each under its own name")
    if inference_config is None:
        raise ValueError("Model.deploy needs inference_config=InferenceConfig(entry_script=...)"
                         " (no-code deployment is celltrain's: ws.model(name).deploy(name))")
    config = deployment_config or DeploymentConfig()
    if overwrite:
        try:
            ws.celltrain.deployment(name).stop()
        except Exception:     # nothing of that name: nothing to overwrite
            pass
    env = (inference_config.environment or Environment()).to_celltrain(
        env_vars={ENABLE_ENV: "1"})
    options = {k: v for k, v in (("memory", config.memory), ("cpus", config.cpus)) if v}
    deployment = models[0]._version.deploy(
        name, entry_script=inference_config.entry_script,
        source_dir=inference_config.source_directory or ".", environment=env,
        port=config.port, auth=config.auth, target=os.environ.get(KIND_ENV) or "docker",
        wait=False, **options)
    service = (LocalWebservice if isinstance(config, DeploymentConfig) and not config.auth
               else AciWebservice)(ws, name, _deployment=deployment)
    return service


__getattr__ = not_covered("azureml.core.webservice", {
    "AksWebservice": "AKS has no counterpart: LocalWebservice/AciWebservice deploy here"})
