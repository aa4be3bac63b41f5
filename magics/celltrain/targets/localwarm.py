"""Warm starts on the local target: a worker process per environment that has imported torch.

The same worker as in a container (``runtime/warmworker.py``, run with ``--host``) and the same
host side (``targets/warmhost.py``): after a local run ends, a worker process is started for
its key (this Python, the environment's and the run's variables, the GPUs), detached from the
supervisor, in ``<workspace>/warm/<key>/``; the next run of that key claims it and is a child
forked from it.  Being on the host, the child gets the run's own folders straight away (the
working folder ``<run>/work``, ``telemetry/``, ``output.log``) and the supervisor's whole
environment, as a cold local run does.  The handle of a warm run: ``warm`` (the key) and
``worker`` (the worker's pid).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from ..runfiles import OUTPUT_LOG
from .warmhost import WarmRun, folder, hand_over, imports_of, release, take_claim

STARTING = "worker.pid"


def pool_key(spec, env: dict) -> str:
    """What the worker's imports depend on: this Python and the variables set for the run."""
    text = json.dumps({"python": sys.executable, "gpus": spec.resources.gpus,
                       "env": {**spec.environment.env, **spec.env_vars},
                       "path": env.get("PYTHONPATH", "")}, sort_keys=True, default=repr)
    return "local-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def worker_pid(here: Path) -> int | None:
    """The pid of this key's worker if it is alive (and is that worker), else None."""
    for name in ("ready", STARTING):
        try:
            pid = int((here / name).read_text().strip())
        except (OSError, ValueError):
            continue
        if alive(pid, here):
            return pid
    return None


def alive(pid: int, here: Path) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z" and b"celltrain.runtime.warmworker" in cmdline and \
        str(here).encode() in cmdline


def ensure_worker(target, env: dict) -> None:
    """Start this key's worker unless one is there already (starting, idle or busy)."""
    store, spec = target.store, target.spec
    key = pool_key(spec, env)
    here = folder(store, key)
    here.mkdir(parents=True, exist_ok=True)
    if worker_pid(here) is not None:
        return
    for name in ("ready", "claim", "request.json"):
        (here / name).unlink(missing_ok=True)
    (here / "imports.json").write_text(json.dumps(imports_of(target.run_dir / "snapshot",
                                                             spec.script)))
    with open(here / "worker.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "celltrain.runtime.warmworker", str(here),
             f"{float(spec.warm_idle_s):g}", "--host"],
            cwd=here, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)
    (here / STARTING).write_text(str(proc.pid))


def claim(target, env: dict) -> tuple[str, int] | None:
    """Borrow this key's idle worker for the run: (key, pid), or None (start cold)."""
    store, run_id = target.store, target.run["id"]
    key = pool_key(target.spec, env)
    here = folder(store, key)
    try:
        pid = int((here / "ready").read_text().strip())
    except (OSError, ValueError):
        return None       # none yet, or still importing: not waited for
    if not alive(pid, here) or not take_claim(store, here / "claim", run_id):
        return None
    if not alive(pid, here):
        release(here, run_id)
        return None
    (here / run_id).mkdir(exist_ok=True)
    return key, pid


def hand(target, handle, env: dict) -> bool:
    """Hand the claimed run to its worker (False: start it cold)."""
    run_dir, key, pid = target.run_dir, handle.ids["warm"], int(handle.ids["worker"])
    here = folder(target.store, key)
    body = {"run": target.run["id"], "argv": [target.spec.script, *target.spec.args],
            "boot": target.spec.boot, "env": env, "env_only": True,
            "snapshot": str(run_dir / "snapshot"), "workdir": str(target.work),
            "stdout": str(run_dir / OUTPUT_LOG), "stderr": str(run_dir / OUTPUT_LOG)}
    return hand_over(here, target.run["id"], body, lambda: alive(pid, here),
                     lambda: kill(pid, here))


def kill(pid: int, here: Path) -> None:
    import signal
    if alive(pid, here):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def follow(target, handle) -> WarmRun:
    key, pid = handle.ids["warm"], int(handle.ids["worker"])
    here = folder(target.store, key)
    return WarmRun(target.run_dir, here / target.run["id"], lambda: alive(pid, here),
                   lambda: kill(pid, here), "process")
