"""Each compute target under test: a fixture that gives a workspace and submit() settings.

A new target joins the shared suite by adding its kind to TARGETS and a branch below that
sets up what it needs (an engine, a cluster) and cleans up after the test.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

TARGETS = ["local", "docker"]


@dataclass
class TargetUnderTest:
    kind: str
    workspace: object
    submit_kwargs: dict = field(default_factory=dict)

    def submit(self, src, script="train.py", **kwargs):
        return self.workspace.experiment(f"contract-{self.kind}").submit(
            script, src, target=self.kind, **{**self.submit_kwargs, **kwargs})


@pytest.fixture(params=TARGETS)
def target(request, workspace):
    if request.param == "docker":
        request.getfixturevalue("docker_workspace")      # engine, image, container cleanup
        return TargetUnderTest("docker", workspace, {"gpus": "none"})
    return TargetUnderTest(request.param, workspace)
