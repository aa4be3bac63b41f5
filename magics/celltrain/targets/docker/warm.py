"""Warm starts on Docker: a worker container per environment that has imported torch.

After a run of an environment ends, a worker container is started for its key (the image and
every container setting that is not the run's own: GPUs, mounts, limits, network, env vars,
user), running ``runtime/warmworker.py`` with ``<workspace>/warm/<key>/`` mounted.  The next
run of that key claims it (``claim``, created exclusively) and runs as a child forked from it
(``targets/warmhost.py``: the host's side, shared with the local target); a run that finds no
idle worker (none yet, busy, gone), or whose worker is lost before it reached it, starts cold.
The worker leaves by itself after ``RunSpec.warm_idle_s`` without a run, and its container is
removed with it.  The handle of a warm run is the worker's container plus ``warm``: the key.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from ...runtime.wire import RUN_ID_ENV, run_environ
from ..warmhost import (WARM_DIR, WarmRun, folder, hand_over, imports_of, lend, release,
                        take_claim)
from . import engine
from .engine import LABEL_WORKSPACE
from .users import container_user, let_write

LABEL_WARM = "celltrain.warm"
IN_CONTAINER = "/celltrain-warm"
PER_RUN_ENV = set(run_environ("", "", {}, "", parent="-")) | {RUN_ID_ENV}


def worker_kwargs(kwargs: dict) -> dict:
    """A run container's settings made a worker's: the run's own mounts and variables out."""
    out = dict(kwargs)
    out["environment"] = {k: v for k, v in kwargs["environment"].items()
                          if k not in PER_RUN_ENV}
    out["volumes"] = {host: bind for host, bind in kwargs["volumes"].items()
                      if not bind["bind"].startswith("/celltrain-run/")}
    for name in ("command", "name", "labels"):
        out.pop(name, None)
    return out


def pool_key(image_id: str, kwargs: dict) -> str:
    settings = worker_kwargs(kwargs)
    settings.pop("working_dir", None)
    text = json.dumps({"image": image_id, **settings}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def workers(client, store, key: str | None = None) -> list:
    labels = [f"{LABEL_WORKSPACE}={store.root}", LABEL_WARM if key is None
              else f"{LABEL_WARM}={key}"]
    return client.containers.list(all=True, filters={"label": labels})


def after_cold(target, image: str, kwargs: dict) -> None:
    """After a cold run: its environment's worker, for the next run (failing, it says why)."""
    try:
        ensure_worker(target, image, kwargs, imports_of(target.run_dir / "snapshot",
                                                        target.spec.script))
    except Exception as e:  # noqa: BLE001  (the next run starts cold, as before)
        print(f"no warm worker: {type(e).__name__}: {e}", file=sys.stderr)


def ensure_worker(target, image: str, kwargs: dict, imports: list[str]) -> None:
    """Start the worker of this key unless one is there already (idle or busy)."""
    client, store, spec = target.client, target.store, target.spec
    key = pool_key(image, kwargs)
    if any(c.status in ("created", "running") for c in workers(client, store, key)):
        return
    here = folder(store, key)
    shutil.rmtree(here, ignore_errors=True)
    here.mkdir(parents=True)
    (here / "imports.json").write_text(json.dumps(imports))
    settings = worker_kwargs(kwargs)
    settings["volumes"][str(here)] = {"bind": IN_CONTAINER, "mode": "rw"}
    settings["labels"] = {LABEL_WARM: key, LABEL_WORKSPACE: str(store.root)}
    settings["working_dir"] = "/celltrain-run"
    settings["auto_remove"] = True
    settings["name"] = f"celltrain-warm-{key}-{int(time.time() * 1000) % 10**8}"
    idle = float(getattr(spec, "warm_idle_s", 300.0))
    command = ["sh", "-c", 'exec "$(command -v python3 || command -v python)" -u -m '
               f'celltrain.runtime.warmworker {IN_CONTAINER} {idle:g}']
    container = client.containers.create(image, command=command, **settings)
    let_write(here, container_user(container))
    container.start()


def claim(target, image: str, kwargs: dict):
    """Borrow this key's idle worker for the run: its container, or None (start cold)."""
    store, run_id = target.store, target.run["id"]
    key = pool_key(image, kwargs)
    here = folder(store, key)
    for container in workers(target.client, store, key):
        # A worker still importing is not waited for: on a busy machine that can take longer
        # than a cold start.
        if container.status != "running" or not (here / "ready").exists():
            continue
        if not take_claim(store, here / "claim", run_id):
            continue
        container.reload()
        if container.status != "running":
            release(here, run_id)
            continue
        mine = lend(here, run_id, target.run_dir)
        user = container_user(container)
        let_write(mine, user)
        let_write(mine / "telemetry", user)
        return container, key
    return None


def running(container) -> bool:
    """Whether the worker container runs (an engine that does not answer raises)."""
    import docker
    try:
        container.reload()
    except docker.errors.NotFound:   # removed already, with the container's auto-remove
        return False
    return container.status == "running"


def remove(container) -> None:
    import docker
    try:
        container.remove(force=True)
    except docker.errors.APIError:   # gone already, or being removed
        pass


def follow(target, handle) -> WarmRun:
    """The host's side of the warm run ``handle`` names."""
    import docker
    try:
        container = target.client.containers.get(handle.ids["container"])
    except docker.errors.NotFound:
        container = None
    here = folder(target.store, handle.ids["warm"]) / target.run["id"]
    return WarmRun(target.run_dir, here, lambda: container is not None and running(container),
                   lambda: container is not None and remove(container), "container")


def launch(target, handle):
    """Hand the claimed run to its worker; where it never reached it (the worker died or hung
    after the claim), start it cold instead: a new handle, never a failed run."""
    import docker
    try:
        container = target.client.containers.get(handle.ids["container"])
    except docker.errors.NotFound:
        container = None
    if container is not None and hand(target, handle, container):
        return None
    follow(target, handle).cleanup()
    target.warm_run = None
    target.notify("the warm worker was lost before the run reached it: starting cold")
    record = target.store.get_run(target.run["id"])
    kwargs = target.container_kwargs(0, None)
    target.warm_setup = (record["image_digest"] or record["image"], kwargs)
    cold = target.create_container(record["image"], kwargs)
    target.container.start()
    return cold


def hand(target, handle, container) -> bool:
    """Hand the claimed run to its worker container (False: start it cold)."""
    run, spec = target.run, target.spec
    telemetry = f"{IN_CONTAINER}/{run['id']}/telemetry"
    body = {"run": run["id"], "argv": [spec.script, *spec.args], "boot": spec.boot,
            "env": run_environ(run["id"], run["experiment"], spec.params, telemetry,
                               spec.parent)}
    return hand_over(folder(target.store, handle.ids["warm"]), run["id"], body,
                     lambda: running(container), lambda: remove(container))


def tidy(store) -> None:
    """On workspace open: remove workers whose folder is gone and folders with no worker (the
    local target's workers, ``local-*``, leave by themselves)."""
    root = Path(store.root) / WARM_DIR
    if not root.is_dir():
        return
    try:
        client = engine.client(timeout=10)
    except Exception:  # noqa: BLE001  (no engine now: next time)
        return
    alive = set()
    for container in workers(client, store):
        key = container.labels.get(LABEL_WARM, "")
        if container.status != "running" or not (root / key / "imports.json").exists():
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001  (being removed already)
                pass
        else:
            alive.add(key)
    for path in root.iterdir():
        if path.name not in alive and not path.name.startswith("local-"):
            shutil.rmtree(path, ignore_errors=True)
