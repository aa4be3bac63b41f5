"""The run's image on every node of a Ray run.

Where the run is submitted has a Docker engine (the usual case), the image is made there once,
as the Docker target makes it, and each node whose engine lacks that image (by id) gets it
streamed through Ray: ``docker save`` here in pieces, gathered by the node's agent, ``docker
load`` there.  Every node then runs the same image, bit for bit.  Without an engine here, or
with the target's ``image_from="nodes"``, each node builds the image from the same environment.
"""
from __future__ import annotations

import time

from ...errors import DockerUnavailable
from ..base import Prepared, PrepareStopped
from .cluster import CALL_TIMEOUT_S

WINDOW = 4             # pieces in flight to one node (each up to remote.IMAGE_CHUNK bytes)
IMAGE_FROM = ("submitter", "nodes")


def on_every_node(target, should_stop) -> Prepared:
    """The run's image on every agent of ``target`` (a RayTarget with its agents started)."""
    made = None
    if target.settings.get("image_from", "submitter") == "submitter":
        made = made_here(target, should_stop)
    if made is None:
        return built_on_nodes(target)
    present = target.on_all("has_image", made.image_digest, made.image)
    for k, has in enumerate(present):
        if not has:
            send(target, k, made.image, should_stop)
    return made


def made_here(target, should_stop) -> Prepared | None:
    """The image made on the submitter's engine (pulled, built or cached), None without one."""
    from ..docker.target import DockerTarget
    here = DockerTarget(target.store, target.run, target.spec, target.notify)
    try:
        here.connect()
    except DockerUnavailable:
        target.notify("no Docker engine where the run was submitted: each node builds the "
                      "image")
        return None
    return here.prepare(should_stop)


def built_on_nodes(target) -> Prepared:
    images = target.on_all("prepare", target.spec.environment.to_dict(), timeout=None)
    tag, image_id, built = images[0]
    if any(b for _, _, b in images):
        target.notify("image built on " + ", ".join(
            f"node {k}" for k, (_, _, b) in enumerate(images) if b))
    return Prepared(tag, image_id, built)


def send(target, node: int, tag: str, should_stop) -> int:
    """``docker save`` of ``tag`` here into node ``node``'s engine through Ray; bytes sent."""
    from ..docker.remote import saved_image
    ray, agent = target.ray, target.agents[node]
    where = ray.get(agent.where.remote(), timeout=CALL_TIMEOUT_S)
    at = f"node {node} (Ray node {where['node_id'][:12]} at {where['ip']})"
    target.notify(f"image {tag} is not on {at}: sending it (docker save here, docker load "
                  "there)")
    began, sent, pending = time.monotonic(), 0, []
    for piece in saved_image(tag):
        if should_stop():
            raise PrepareStopped
        pending.append(agent.receive_image.remote(piece, sent == 0))
        sent += len(piece)
        if len(pending) >= WINDOW:
            ray.get(pending.pop(0), timeout=CALL_TIMEOUT_S)
    ray.get(pending, timeout=CALL_TIMEOUT_S)
    ray.get(agent.load_image.remote(), timeout=None)
    target.notify(f"image {tag} sent to {at}: {sent / 2**20:.0f} MiB in "
                  f"{time.monotonic() - began:.0f}s")
    return sent
