"""Each compute target under test: a fixture that gives a workspace and submit() settings.

A new target joins the shared suite by adding its kind to TARGETS and a branch below that
sets up what it needs (an engine, a cluster) and cleans up after the test.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import time

import pytest

from procs import stop_local_workers
from ray_cluster import remove_node_workers

# "docker-warm", "local-warm": the Docker and local targets with the environment's warm worker
# up, so every run of the suite is forked from it (README "Warm starts"); "ray": a real local
# Ray cluster (head + 2 workers); "ray-warm": its runs forked from the worker on the node where
# the warm-up run ended (the supervisor asks Ray to place them there).
TARGETS = ["local", "local-warm", "docker", "docker-warm", "ray", "ray-warm"]


@dataclass
class TargetUnderTest:
    kind: str
    workspace: object
    submit_kwargs: dict = field(default_factory=dict)
    name: str | None = None        # a saved target's name, where the kind needs settings
    submitted: list = field(default_factory=list)

    def submit(self, src, script="train.py", **kwargs):
        run = self.workspace.experiment(f"contract-{self.kind}").submit(
            script, src, target=self.name or self.kind, **{**self.submit_kwargs, **kwargs})
        self.submitted.append(run)
        return run


@pytest.fixture(params=TARGETS)
def target(request, workspace, tmp_path, monkeypatch):
    if request.param == "docker":
        request.getfixturevalue("docker_workspace")      # engine, image, container cleanup
        yield TargetUnderTest("docker", workspace, {"gpus": "none"})
        return
    if request.param in ("docker-warm", "local-warm", "ray-warm"):
        kind = request.param.split("-")[0]
        name = None
        if kind in ("docker", "ray"):
            request.getfixturevalue("docker_workspace")
        if kind == "ray":
            cluster = request.getfixturevalue("ray_cluster")
            workspace.add_target("cluster", "ray", address=cluster.address)
            name = "cluster"
        monkeypatch.setenv("CELLTRAIN_WARM", "1")
        monkeypatch.setenv("CELLTRAIN_WARM_IDLE", "120")
        # The suite's runs are a workspace's first, each started by its own supervisor
        # process (which one test kills): no spare one from the warm-up run.
        monkeypatch.setattr("celltrain.workspace.SPARES", False)
        warm = TargetUnderTest(kind, workspace,
                               {"gpus": "none", "env_vars": {"GREETING": "hello"}}, name=name)
        try:
            start_worker(warm, tmp_path / "warm-up", request)
            yield warm
        finally:
            stop_local_workers(workspace)
            if kind == "ray":
                remove_node_workers(workspace, request.getfixturevalue("docker_client"),
                                    request.getfixturevalue("ray_cluster"))
        started = [run for run in warm.submitted[1:] if run.record.get("handle")]
        assert all(run.started_warm for run in started), f"a run of {request.param} started cold"
        return
    if request.param == "ray":
        cluster = request.getfixturevalue("ray_cluster")      # head + 2 workers, per session
        request.getfixturevalue("docker_workspace")          # the nodes' containers removed
        workspace.add_target("cluster", "ray", address=cluster.address)
        yield TargetUnderTest("ray", workspace, {"gpus": "none"}, name="cluster")
        return
    yield TargetUnderTest(request.param, workspace)


def start_worker(target: TargetUnderTest, src, request) -> None:
    """One cold run, then wait for the warm worker it leaves to be ready (on a Ray run's
    node: in that node's folder)."""
    from celltrain.targets.docker.warm import WARM_DIR
    src.mkdir()
    (src / "train.py").write_text("print('warm-up')\n")
    assert target.submit(src).wait(timeout=300) == "Completed"
    folders = [target.workspace.path / WARM_DIR]
    if target.kind == "ray":
        from celltrain.targets.ray.warmnode import folder_name
        folders = [node.folder / folder_name(target.workspace.path) / WARM_DIR
                   for node in request.getfixturevalue("ray_cluster").workers]
    deadline = time.monotonic() + 180
    while not any(list(folder.glob("*/ready")) for folder in folders):
        assert time.monotonic() < deadline, "the warm worker did not come up"
        time.sleep(0.1)

