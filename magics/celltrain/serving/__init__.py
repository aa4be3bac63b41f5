"""Serving registered model versions: a deployment is a long-running run of kind "deployment"
whose process is ``celltrain.runtime.serve`` (the Open Inference Protocol v2 over HTTP).

``deploy`` builds its spec and submits it; ``Deployment`` is the handle (url, state, predict,
logs, stop); ``list_deployments``/``get_deployment`` read them from the store.
"""
from .deploy import deploy
from .deployment import Deployment, DeploymentError, get_deployment, list_deployments

__all__ = ["deploy", "Deployment", "DeploymentError", "get_deployment", "list_deployments"]
