"""The sidebar's Deployments section: ``GET deployments`` (state, URL, model, stats).

Stopping one is ``POST runs/<run>/cancel``: a deployment is a run."""
from __future__ import annotations

from typing import Any


def deployments(manager) -> list[dict[str, Any]]:
    """The newest deployment of each name, as ``ws.deployments()`` has them."""
    if not manager.exists:
        return []
    from ..serving import list_deployments
    return [d.summary() for d in list_deployments(manager.workspace())]
