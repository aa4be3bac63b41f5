"""What a finished Ray run may leave on the cluster, removed when the workspace is opened.

A supervisor that dies between its run's end and its clean-up leaves the run's placement group
and its agents in the nodes' hosts; a node lost mid-run leaves its container (stopped by its own watchdog, see
``docker.remote.WATCHDOG``) and its folder on that node, where no agent is left to remove them.
The run is marked (``ray-leftovers/<run id>``: the cluster's address, the lost nodes'
addresses) from its Preparing phase until its clean-up is done.  Opening the workspace connects
to the cluster only for marked runs that have ended: it removes their group and agents, and on
every live node their containers and folders.  A mark stays while a lost node's machine has no
live Ray node (it has not come back).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ... import states
from . import cluster

MARKS = "ray-leftovers"
ASK_S = 120.0          # a node's host may have to start first


def mark(store, run_id: str, address: str, lost_ips=()) -> None:
    folder = Path(store.root) / MARKS
    folder.mkdir(exist_ok=True)
    tmp = folder / f".{run_id}.part"
    tmp.write_text(json.dumps({"address": address, "lost": sorted(set(lost_ips))}))
    os.replace(tmp, folder / run_id)


def unmark(store, run_id: str) -> None:
    (Path(store.root) / MARKS / run_id).unlink(missing_ok=True)


def marked(store, run_id: str = "*") -> dict[str, dict]:
    """{run id: its mark} of every marked run (or of ``run_id`` only)."""
    folder = Path(store.root) / MARKS
    out = {}
    for path in sorted(folder.glob(run_id)) if folder.is_dir() else []:
        if path.name.startswith("."):
            continue
        try:
            out[path.name] = json.loads(path.read_text())
        except (OSError, ValueError):   # half-written by a killed supervisor: the run's id will do
            out[path.name] = {}
    return out


def clean(store, supervisor_alive) -> None:
    """The leftovers of this workspace's ended Ray runs; a mark stays while some may remain."""
    for run_id, note in marked(store).items():
        run = store.get_run(run_id)
        if run is None:
            unmark(store, run_id)
            continue
        if not states.is_terminal(run["status"]) or supervisor_alive(store.run_dir(run_id)):
            continue             # its supervisor (or the one reconcile gives it) cleans up
        try:
            address = note.get("address") or (run.get("spec") or {}).get(
                "target_settings", {}).get("address", "auto")
            if tidy(cluster.connect(address), run_id, str(store.root),
                    note.get("lost", [])):
                unmark(store, run_id)
        except Exception:  # noqa: BLE001  (no cluster now: opening the workspace goes on;
            pass           # the mark stays for next time)


def tidy(ray, run_id: str, workspace: str, lost_ips) -> bool:
    """The run's group gone, its agents, containers and folders removed on every live node
    (by each node's host); whether nothing of it can be left."""
    from .host import host
    cluster.release(ray, run_id)
    alive = [n for n in ray.nodes() if n.get("Alive")]
    refs = [host(ray, n["NodeID"]).tidy.remote(run_id, workspace) for n in alive]
    ray.get(refs, timeout=ASK_S)
    return set(lost_ips) <= {n.get("NodeManagerAddress") for n in alive}
