"""Each compute target under test: a fixture that gives a workspace and submit() settings.

A new target joins the shared suite by adding its kind to TARGETS and a branch below that
sets up what it needs (an engine, a cluster) and cleans up after the test.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

TARGETS = ["local", "docker", "ray"]


@dataclass
class TargetUnderTest:
    kind: str
    workspace: object
    submit_kwargs: dict = field(default_factory=dict)
    name: str | None = None        # a saved target's name, where the kind needs settings

    def submit(self, src, script="train.py", **kwargs):
        return self.workspace.experiment(f"contract-{self.kind}").submit(
            script, src, target=self.name or self.kind, **{**self.submit_kwargs, **kwargs})


@pytest.fixture(params=TARGETS)
def target(request, workspace):
    if request.param == "docker":
        request.getfixturevalue("docker_workspace")      # engine, image, container cleanup
        return TargetUnderTest("docker", workspace, {"gpus": "none"})
    if request.param == "ray":
        cluster = request.getfixturevalue("ray_cluster")      # head + 2 workers, per session
        request.getfixturevalue("docker_workspace")          # the nodes' containers removed
        workspace.add_target("cluster", "ray", address=cluster.address)
        return TargetUnderTest("ray", workspace, {"gpus": "none"}, name="cluster")
    return TargetUnderTest(request.param, workspace)
