"""Warm starts: a worker container per environment that has imported torch, forking each run.

After a run of an environment ends, a worker container is started for its key (the image and
every container setting that is not the run's own: GPUs, mounts, limits, network, env vars,
user), running ``runtime/warmworker.py`` with ``<workspace>/warm/<key>/`` mounted.  The next
run of that key claims it (``claim``, created exclusively) and runs as a child forked from it;
a run that finds no idle worker (none yet, busy, gone) starts cold as before.  The worker leaves
by itself after ``RunSpec.warm_idle_s`` without a run, and its container is removed with it.
The handle of a warm run is the worker's container plus ``warm``: the key.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

from ... import safefiles
from ...states import is_terminal
from ...runfiles import OUTPUT_LOG, STDERR_LOG
from ...runtime.wire import FAILURE_FILE, RUN_ID_ENV, TELEMETRY_DIR, run_environ
from .engine import LABEL_WORKSPACE
from .users import container_user, let_write

LABEL_WARM = "celltrain.warm"
WARM_DIR = "warm"
IN_CONTAINER = "/celltrain-warm"
CELL_META = ".celltrain-cell/cell.json"
PUMP_S = 0.01
PER_RUN_ENV = set(run_environ("", "", {}, "", parent="-")) | {RUN_ID_ENV}


def eligible(spec) -> bool:
    """Whether a run may start warm: asked for, one process, nothing published, no boot module
    (the Azure layer's runs start cold), not a sweep's own record.  Limits are part of the key, so the worker's container has the run's own."""
    return (bool(getattr(spec, "warm", False)) and not spec.distribution.distributed
            and not spec.ports and not spec.boot and spec.kind in ("run", "trial"))


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


def folder(store, key: str) -> Path:
    return Path(store.root) / WARM_DIR / key


def imports_of(snapshot: Path, script: str) -> list[str]:
    """What a worker imports: torch, and the cell's imports (a %%train bundle), else the
    script's own top-level imports."""
    found = ["import torch"]
    try:
        found += json.loads((snapshot / CELL_META).read_text())["imports"]
        return found
    except (OSError, ValueError, KeyError):
        pass
    try:
        tree = ast.parse((snapshot / script).read_text())
    except (OSError, SyntaxError, ValueError):
        return found
    found += [ast.unparse(node) for node in tree.body   # the host's Python is 3.10+
              if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0)]
    return found


def workers(client, store, key: str | None = None) -> list:
    labels = [f"{LABEL_WORKSPACE}={store.root}", LABEL_WARM if key is None
              else f"{LABEL_WARM}={key}"]
    return client.containers.list(all=True, filters={"label": labels})


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
        if not _take(store, here / "claim", run_id):
            continue
        container.reload()
        if container.status != "running":
            _release(here, run_id)
            continue
        mine = here / run_id
        shutil.rmtree(mine, ignore_errors=True)
        shutil.copytree(target.run_dir / "snapshot", mine / "snapshot", symlinks=True)
        (mine / "telemetry").mkdir()
        user = container_user(container)
        let_write(mine, user)
        let_write(mine / "telemetry", user)
        return container, key
    return None


def _take(store, path: Path, run_id: str) -> bool:
    """Create the claim; one left by a run that has ended (its supervisor died) is taken over."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = safefiles.read_text(path.parent, path.name, 256, default="").strip()
            run = store.get_run(holder) if holder and holder != "closing" else None
            if run is None or not is_terminal(run["status"]):
                return False
            path.unlink(missing_ok=True)
            continue
        os.write(fd, run_id.encode())
        os.close(fd)
        return True
    return False


def _release(here: Path, run_id: str) -> None:
    claim_file = here / "claim"
    if safefiles.read_text(here, "claim", 256, default="").strip() == run_id:
        claim_file.unlink(missing_ok=True)


def request(target, key: str) -> None:
    """Set the claimed worker going on this run."""
    run, spec = target.run, target.spec
    telemetry = f"{IN_CONTAINER}/{run['id']}/telemetry"
    body = {"run": run["id"], "argv": [spec.script, *spec.args],
            "env": run_environ(run["id"], run["experiment"], spec.params, telemetry,
                               spec.parent)}
    path = folder(target.store, key) / "request.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    os.rename(tmp, path)


class WarmRun:
    """The host's side of one warm run: its files in the worker's folder, its state, its stop."""

    def __init__(self, target, handle):
        self.target, self.key = target, handle.ids["warm"]
        self.container_id = handle.ids["container"]
        self.run_id = target.run["id"]
        self.here = folder(target.store, self.key) / self.run_id
        self.offsets: dict[str, int] = {}
        self.copied: dict[str, tuple] = {}
        self.lock = threading.Lock()

    def exit_note(self) -> dict | None:
        text = safefiles.read_text(self.here, "exit.json", 4096, default="")
        try:
            return json.loads(text) if text else None
        except ValueError:
            return None

    def ended(self, container) -> bool:
        if self.exit_note() is not None:
            return True
        container.reload()
        return container.status != "running"

    def stop(self, container, grace: float) -> None:
        if self.ended(container):
            return
        (self.here / "stop").write_text(f"{max(grace, 0):g}")
        deadline = time.monotonic() + grace + 10
        while time.monotonic() < deadline and not self.ended(container):
            time.sleep(0.05)
        if not self.ended(container):   # the worker does not answer: the container goes
            container.remove(force=True)

    def result(self):
        from ..base import Result
        note = self.exit_note()
        if note is None:
            self.sync()
            failure = self.target.run_dir / TELEMETRY_DIR / FAILURE_FILE
            if not failure.exists():
                failure.write_text("the run's warm worker container ended during the run "
                                   "(killed or removed from outside); run it again\n")
            return Result(None, False)
        return Result(int(note["code"]), bool(note.get("oom")))

    def present(self, folders) -> list:
        """Which of ``folders`` the run left in its working folder, as the worker saw them at
        its exit (all of them when it could not say)."""
        note = self.exit_note() or {}
        seen = note.get("present")
        return list(folders) if not isinstance(seen, list) else [f for f in folders if f in seen]

    # -- output and telemetry, copied from the worker's folder into the run folder -----------
    def pump(self, resumed: bool) -> threading.Thread:
        if resumed:   # as Docker's `since`: only what is new from now on
            for name in ("stdout", "stderr"):
                self.offsets[name] = _size(self.here / name)

        def follow():
            container = self.target.client.containers.get(self.container_id)
            next_check = 0.0
            while True:
                done = self.exit_note() is not None
                self.sync()
                if done:
                    return
                if time.monotonic() > next_check:
                    next_check = time.monotonic() + 1.0
                    try:
                        container.reload()
                        if container.status != "running":
                            return
                    except Exception:  # noqa: BLE001  (gone: the supervisor sees it)
                        return
                time.sleep(PUMP_S)

        thread = threading.Thread(target=follow, daemon=True, name="celltrain-warm-output")
        thread.start()
        return thread

    def sync(self) -> None:
        with self.lock:
            run_dir = self.target.run_dir
            out = self._new("stdout")
            err = self._new("stderr")
            if out or err:
                with open(run_dir / OUTPUT_LOG, "ab") as f:
                    f.write(out + err)
                if err:
                    with open(run_dir / STDERR_LOG, "ab") as f:
                        f.write(err)
            self._ship(self.here / "telemetry", run_dir / TELEMETRY_DIR, "")

    def _new(self, name: str) -> bytes:
        offset = self.offsets.get(name, 0)
        try:
            data = safefiles.read_bytes(self.here, name, 1 << 24, offset=offset)
        except (FileNotFoundError, OSError):
            return b""
        self.offsets[name] = offset + len(data)
        return data

    def _ship(self, src: Path, dest: Path, rel: str) -> None:
        """Copy the telemetry folder's new bytes: events files grow, other files are copied
        whole when they change.  Links and anything not a plain file are left behind."""
        try:
            entries = list(os.scandir(src / rel if rel else src))
        except OSError:
            return
        for entry in entries:
            name = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                (dest / name).mkdir(exist_ok=True)
                self._ship(src, dest, name)
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
            mark = (stat.st_size, stat.st_mtime_ns)
            if self.copied.get(name) == mark:
                continue
            have = _size(dest / name)
            appending = entry.name.startswith("events") and stat.st_size >= have
            try:
                data = safefiles.read_bytes(src, name, 1 << 28, offset=have if appending else 0)
            except (FileNotFoundError, OSError):
                continue
            with open(dest / name, "ab" if appending else "wb") as f:
                f.write(data)
            self.copied[name] = mark

    def cleanup(self) -> None:
        shutil.rmtree(self.here, ignore_errors=True)
        _release(self.here.parent, self.run_id)


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def tidy(store, client) -> None:
    """On workspace open: remove workers whose folder is gone and folders with no worker."""
    root = Path(store.root) / WARM_DIR
    if not root.is_dir():
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
        if path.name not in alive:
            shutil.rmtree(path, ignore_errors=True)
