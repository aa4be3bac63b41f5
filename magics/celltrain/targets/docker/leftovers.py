"""Containers a run left behind, found by their labels and removed when the workspace is opened.

A supervisor killed during a build leaves its build container; one that gave up on an engine
that stopped answering leaves the run's container (and its exit code unread).  Every container
of a run carries ``celltrain.run`` and ``celltrain.workspace``.  Opening the workspace removes
the leftovers of runs nobody supervises, records the exit code a finished run lacks and copies
its outputs back.  Docker is asked only when there may be leftovers: a run of target docker
without a live supervisor, or a run its supervisor marked (``docker-leftovers/<run id>``) because
the engine was down when it ended.  A workspace used only with target="local" never connects.
"""
from __future__ import annotations

import os
from pathlib import Path

from ... import states
from ...errors import DockerUnavailable
from . import engine
from .engine import LABEL_BUILD, LABEL_RUN, LABEL_WORKSPACE

MARKS = "docker-leftovers"
PENDING = ("; its container is removed, and its exit code recorded, the next time the workspace "
           "is opened with the engine up")   # the supervisor's words, replaced once done
STOP_S = 2  # a finished run's container that still runs: nobody is watching it any more


def mark(store, run_id: str) -> None:
    """Note that the run may have left containers the engine could not remove just now."""
    folder = Path(store.root) / MARKS
    folder.mkdir(exist_ok=True)
    (folder / run_id).touch()


def marked(store) -> list[str]:
    try:
        return os.listdir(Path(store.root) / MARKS)
    except FileNotFoundError:
        return []


def clean(store, supervisor_alive) -> None:
    """Remove this workspace's leftover containers; a no-op without Docker to ask."""
    unsupervised = {r["id"] for r in store.list_runs(status=states.ACTIVE)
                    if r["target"] == "docker" and not supervisor_alive(store.run_dir(r["id"]))}
    marks = marked(store)
    if not unsupervised and not marks:
        return
    try:
        client = engine.client(timeout=10)
    except DockerUnavailable:
        return  # the marks stay: next time
    import docker
    try:
        containers = client.containers.list(
            all=True, filters={"label": f"{LABEL_WORKSPACE}={store.root}"})
    except Exception:  # the engine is going away: opening the workspace must not fail for it
        return
    done = True
    for container in containers:
        run = store.get_run(container.labels.get(LABEL_RUN, ""))
        if run is None:
            continue
        terminal = states.is_terminal(run["status"])
        try:
            # A build container; a run's own container (named after the run) inherits the
            # build label from the image its build committed, and is not one.
            if LABEL_BUILD in container.labels and container.name != f"celltrain-{run['id']}":
                if terminal or run["id"] in unsupervised:  # its new supervisor builds anew
                    container.remove(force=True)
            elif terminal:
                _finish(store, run, container, client)
            # a run container of an unsupervised active run: its new supervisor re-attaches
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            done = False
    done = _networks(store, client) and done
    if done:
        for run_id in marks:
            try:
                os.remove(Path(store.root) / MARKS / run_id)
            except FileNotFoundError:
                pass


def _finish(store, run: dict, container, client) -> None:
    """A finished run's container: stop it, record its exit code, keep its outputs, remove it."""
    if container.status in ("created", "running", "restarting", "paused"):
        container.stop(timeout=STOP_S)
    container.reload()
    code = container.attrs["State"].get("ExitCode")
    if run["exit_code"] is None and code is not None:
        from ...spec import RunSpec
        from ..base import Handle
        from .target import DockerTarget
        target = DockerTarget(store, run, RunSpec.from_record(run), notify=lambda message: None)
        target.client = client
        target.resumed = True  # nobody followed the output to its end: take Docker's log
        handle = Handle.from_record(run)   # a run of several nodes: all of them, once
        if handle is None or container.id not in handle.ids.get("containers", ()):
            handle = Handle(DockerTarget.kind, {"container": container.id})
        try:
            target.collect(handle)
            kept = "its outputs were copied back"
        except Exception as e:
            kept = f"its outputs could not be copied back ({type(e).__name__}: {e})"
        before = (run["reason"] or run["status"]).replace(PENDING, "")
        store.update_run(run["id"], exit_code=code, reason=(
            f"{before}; its container exited with code {code} (seen when the workspace was "
            f"next opened): {kept} and the container removed"))
    container.remove(force=True)


def _networks(store, client) -> bool:
    """Remove the private networks of finished runs of several nodes (their containers are
    gone by now); whether all could be."""
    import docker
    try:
        networks = client.networks.list(filters={"label": f"{LABEL_WORKSPACE}={store.root}"})
    except Exception:  # the engine is going away: next time
        return False
    done = True
    for network in networks:
        run = store.get_run((network.attrs.get("Labels") or {}).get(LABEL_RUN, ""))
        if run is None or not states.is_terminal(run["status"]):
            continue
        try:
            network.remove()
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            done = False
    return done
