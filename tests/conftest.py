"""Shared fixtures: a fresh workspace per test, and a real Docker engine.

Under CI (CI=true) a missing Docker engine fails the tests that need it: a skip there would hide
a missing install step.  Locally they skip with the command that fixes it.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from celltrain import Workspace
from celltrain.targets.docker.engine import LABEL_WORKSPACE
from missing import unavailable

# Spare supervisors (see celltrain.spare) leave soon after each test's workspace idles.
os.environ.setdefault("CELLTRAIN_SPARE_IDLE", "15")
# Warm workers (README "Warm starts") only where a test asks for them: each one imports torch
# in a container that outlives the run, which the rest of the suite need not pay for.
os.environ.setdefault("CELLTRAIN_WARM", "0")
OFFLINE_BASE = "celltrain/base:offline"


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture(scope="session")
def docker_client():
    from celltrain.targets.docker import engine as dockerutil
    from celltrain.errors import DockerUnavailable
    try:
        client = dockerutil.client()
    except DockerUnavailable as e:
        unavailable(f"{e} (run `make docker`)")
    return client


@pytest.fixture(scope="session")
def offline_image(docker_client) -> str:
    """The offline base image (Debian + the kernel's torch); `make images` builds it."""
    import docker
    try:
        docker_client.images.get(OFFLINE_BASE)
    except docker.errors.ImageNotFound:
        message = f"{OFFLINE_BASE} is missing: run `make images` (celltrain base-image)"
        unavailable(message)
    return OFFLINE_BASE


@pytest.fixture
def nonroot_image(docker_client, offline_image):
    """The offline image with ``USER nobody``: users bring such images, and Docker makes the
    workdir root's.  Removed after the test."""
    tag = "celltrain-test/nonroot:latest"
    holder = docker_client.containers.create(offline_image, ["true"])
    try:
        holder.commit(*tag.split(":"), changes=["USER nobody"])
    finally:
        holder.remove(force=True)
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.fixture
def docker_workspace(workspace, docker_client, offline_image):
    """A workspace whose containers are removed after the test, whatever happened."""
    import docker
    yield workspace
    label = {"label": f"{LABEL_WORKSPACE}={workspace.path}"}
    for container_id in docker_client.api.containers(all=True, quiet=True, filters=label):
        try:
            docker_client.api.remove_container(container_id["Id"], force=True)
        except docker.errors.APIError:  # already gone, or its supervisor is removing it
            pass


@pytest.fixture(scope="session")
def ray_cluster(docker_client, offline_image):
    """A real Ray cluster of a head and two workers on this machine (tests/ray_cluster.py),
    started once per session and always stopped."""
    from ray_cluster import start_cluster
    cluster = start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def make_source(tmp_path):
    """Write a training script into a fresh source folder: make_source("print(1)")."""
    def make(code: str, name: str = "train.py", folder: str = "src") -> Path:
        src = tmp_path / folder
        src.mkdir(exist_ok=True)
        (src / name).write_text(textwrap.dedent(code))
        return src
    return make
