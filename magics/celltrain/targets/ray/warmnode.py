"""Warm starts on a Ray node: the Docker target's warm workers, kept on the node itself.

A one-process run on the Ray target starts warm as on Docker (README "Warm starts"): once a
cold run of an environment has ended on a node, the node's agent starts that environment's
worker container there (``docker.warm.ensure_worker``), and the next run of it placed on that
node claims the worker and is forked from it.  The workers' folders are the node's own
(``<node root>/ws-<workspace>/warm/<key>/``: there is no workspace on a node); a warm run's
output and telemetry are copied from the worker's folder into the agent's run folder, from
where they travel as a cold run's do.  The supervisor asks Ray to place the next run of an
environment on the node where its worker waits (``hint``); placed elsewhere, it starts cold.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

from ... import states
from ..docker import warm
from ..warmhost import WarmRun, folder, hand_over, release

HINTS = "ray-warm"     # in the workspace: environment key -> the node its worker waits on
TIDY_AGE_S = 30.0


class NodeStore:
    """What the warm helpers ask of a store, on a node: the root of this workspace's workers
    here, and whether a claim's holder has ended (no agent on this node holds it any more)."""

    def __init__(self, root: Path, holding):
        self.root, self.holding = root, holding

    def get_run(self, run_id: str) -> dict:
        return {"status": states.RUNNING if self.holding(run_id) else states.FAILED}


class NodeWarm:
    """One run's warm start on this node: claim a worker, hand the run over, follow it; or,
    after a cold run, start the worker for the next one."""

    def __init__(self, run_id: str, run_folder: Path, client, workspace: str, spec: dict,
                 holding):
        """``spec``: {"argv", "boot", "env", "idle_s", "imports"} from the submitter."""
        from .agent import node_root
        root = node_root() / folder_name(workspace)
        self.spec, self.key, self.container, self.run = spec, None, None, None
        self.like = SimpleNamespace(      # what docker.warm asks of a DockerTarget
            client=client, store=NodeStore(root, holding), run={"id": run_id},
            run_dir=run_folder, spec=SimpleNamespace(warm_idle_s=spec["idle_s"]))

    def claim(self, image: str, kwargs: dict):
        """This environment's idle worker here, lent to the run; None: start cold."""
        borrowed = warm.claim(self.like, image, kwargs)
        if borrowed:
            self.container, self.key = borrowed
        return self.container

    def hand(self) -> bool:
        """Post the run to the claimed worker; False when it never reached it (start cold)."""
        body = {"run": self.like.run["id"], "argv": self.spec["argv"],
                "boot": self.spec["boot"], "env": self.spec["env"]}
        here = folder(self.like.store, self.key)
        if hand_over(here, self.like.run["id"], body, self.alive,
                     lambda: warm.remove(self.container)):
            self.run = WarmRun(self.like.run_dir, here / self.like.run["id"], self.alive,
                               lambda: warm.remove(self.container), "container")
            return True
        shutil.rmtree(here / self.like.run["id"], ignore_errors=True)   # what it was lent
        release(here, self.like.run["id"])
        self.container = self.key = None
        return False

    def alive(self) -> bool:
        return self.container is not None and warm.running(self.container)

    def state(self) -> dict:
        """The warm run's state in ``NodeContainer.state``'s words."""
        note = self.run.exit_note()
        if note is None and self.run.alive():
            return {"status": "running", "exit_code": None, "oom": False, "finished": ""}
        result = self.run.result()
        return {"status": "exited", "exit_code": result.exit_code, "oom": result.oom,
                "finished": ""}

    def after_cold(self, image: str, kwargs: dict) -> bool:
        """After a cold run: this environment's worker here for the next (whether there is)."""
        try:
            warm.ensure_worker(self.like, image, kwargs, self.spec["imports"])
        except Exception:  # noqa: BLE001  (the next run starts cold, as before)
            return False
        return True


def tidy(client) -> None:
    """The folders of the node's warm workers that have left (idle, or removed), and of
    workspaces with none left: a node keeps nothing of a worker once it is gone.  A folder
    younger than TIDY_AGE_S is left alone (its worker may be starting)."""
    from .agent import node_root
    alive = {c.labels.get(warm.LABEL_WORKSPACE, "") + "/" + c.labels.get(warm.LABEL_WARM, "")
             for c in client.containers.list(all=True, filters={"label": warm.LABEL_WARM})}
    for root in node_root().glob("ws-*"):
        for key in (root / warm.WARM_DIR).glob("*"):
            if f"{root}/{key.name}" not in alive and _age(key) > TIDY_AGE_S:
                shutil.rmtree(key, ignore_errors=True)
        if not any((root / warm.WARM_DIR).glob("*")) and _age(root) > TIDY_AGE_S:
            shutil.rmtree(root, ignore_errors=True)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def folder_name(workspace: str) -> str:
    """The folder of a workspace's warm workers under a node's root."""
    return f"ws-{hashlib.sha256(str(workspace).encode()).hexdigest()[:12]}"


def environment_key(address: str, spec) -> str:
    """What makes two Ray runs share a worker, known before they are placed: the cluster,
    the environment and the container's resources (not the run's timeout: the worker's key
    does not hold it either)."""
    res = spec.resources
    text = json.dumps([address, spec.environment.to_dict(), res.gpus, res.memory, res.cpus,
                       res.shm_size], sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def hint(store, key: str) -> str | None:
    """The Ray node where this environment's worker was last started, if any."""
    try:
        return (Path(store.root) / HINTS / key).read_text().strip() or None
    except OSError:
        return None


def remember(store, key: str, node_id: str) -> None:
    folder_ = Path(store.root) / HINTS
    folder_.mkdir(exist_ok=True)
    (folder_ / key).write_text(node_id)


def spec_for(target) -> dict | None:
    """What node 0's agent needs to start the run warm (None: the run may not start warm)."""
    from ...runtime.wire import run_environ
    from ..warmhost import eligible, imports_of
    spec, run = target.spec, target.run
    if not eligible(spec):
        return None
    telemetry = f"{warm.IN_CONTAINER}/{run['id']}/telemetry"
    return {"argv": [spec.script, *spec.args], "boot": spec.boot, "image": target.image_id,
            "env": run_environ(run["id"], run["experiment"], spec.params, telemetry,
                               spec.parent),
            "idle_s": float(spec.warm_idle_s),
            "imports": imports_of(target.run_dir / "snapshot", spec.script)}
