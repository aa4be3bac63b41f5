"""The host's side of warm starts, for every target that has them (README "Warm starts").

A warm worker (``runtime/warmworker.py``: its docstring has the protocol) lives in a folder of
the workspace, ``warm/<key>/``, one per environment key.  A run claims an idle worker
(``take_claim``), hands itself over (``hand_over``) and is then followed as a ``WarmRun``:
its output and telemetry are copied from the worker's folder into the run folder, its stop
goes through the worker.  What is the target's own (a container, a host process) comes in as
two callables: ``alive()`` and ``remove()``.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from .. import safefiles
from ..runfiles import OUTPUT_LOG, STDERR_LOG
from ..runtime.wire import FAILURE_FILE, TELEMETRY_DIR
from ..states import is_terminal
from .base import Result

WARM_DIR = "warm"
CELL_META = ".celltrain-cell/cell.json"
PUMP_S = 0.01
POLL_S = 0.005
TAKE_S = 10.0        # an idle worker takes a request within ms: one that does not is stuck


def eligible(spec) -> bool:
    """Whether a run may start warm: asked for, one process, nothing published, not a sweep's
    own record.  Limits are part of the key, so the worker's container has the run's own."""
    return (bool(getattr(spec, "warm", False)) and not spec.distribution.distributed
            and not spec.ports and spec.kind in ("run", "trial"))


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


def take_claim(store, path: Path, run_id: str) -> bool:
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


def release(here: Path, run_id: str) -> None:
    claim_file = here / "claim"
    if safefiles.read_text(here, "claim", 256, default="").strip() == run_id:
        claim_file.unlink(missing_ok=True)


def lend(here: Path, run_id: str, run_dir: Path) -> Path:
    """The run's folder in the worker's, for a claimed worker: the snapshot and telemetry/."""
    mine = here / run_id
    shutil.rmtree(mine, ignore_errors=True)
    shutil.copytree(run_dir / "snapshot", mine / "snapshot", symlinks=True)
    (mine / "telemetry").mkdir()
    return mine


def hand_over(here: Path, run_id: str, body: dict, alive: Callable[[], bool],
              remove: Callable[[], None], take_s: float = TAKE_S) -> bool:
    """Post the run to its claimed worker and wait until the worker has forked it; False when
    the run never reached it (the worker died or hung before taking it, or died having taken
    it but before forking), so the caller starts it cold.  Safe to call again (a supervisor
    that took over): a run already forked is not posted twice."""
    mine = here / run_id
    if not (mine / "started").exists() and not (mine / "request.json").exists():
        tmp = here / "request.tmp"
        tmp.write_text(json.dumps(body))
        os.rename(tmp, here / "request.json")
    start, taken = time.monotonic(), False
    next_check = start + 0.1       # the worker takes it within ms: ask Docker only after
    while not (mine / "started").exists():
        now = time.monotonic()
        if now > next_check:
            next_check = now + 0.25
            alive_now = alive()
            if not alive_now or now - start > take_s:
                if not taken and withdraw(here, mine):
                    return False          # it never reached the worker
                taken = True              # the fork follows at once, unless the worker is lost
                if (not alive_now or now - start > 2 * take_s) and not (mine / "started").exists():
                    remove()
                    return False
        time.sleep(POLL_S)
    return True


def withdraw(here: Path, mine: Path) -> bool:
    """Take the posted request back; False when the worker took it first."""
    try:
        os.rename(here / "request.json", mine / "withdrawn.json")
        return True
    except FileNotFoundError:
        return False


class WarmRun:
    """The host's side of one warm run: its files in the worker's folder, its state, its stop."""

    def __init__(self, run_dir: Path, here: Path, alive: Callable[[], bool],
                 remove: Callable[[], None], noun: str):
        """``here``: the run's folder in the worker's; ``alive()``: whether the worker lives;
        ``remove()``: end it (it does not answer); ``noun``: what it is, for a reason."""
        self.run_dir, self.here, self.alive, self.remove = run_dir, here, alive, remove
        self.run_id, self.noun = here.name, noun
        self.offsets: dict[str, int] = {}
        self.copied: dict[str, tuple] = {}
        self.lock = threading.Lock()

    def handed(self) -> bool:
        """Whether the worker has forked the run (``hand_over`` returned True)."""
        return (self.here / "started").exists()

    def child_pid(self) -> int | None:
        """The forked run's pid (its own session), once the worker wrote it."""
        text = safefiles.read_text(self.here, "started", 64, default="")
        return int(text) if text.strip().isdigit() else None

    def exit_note(self) -> dict | None:
        text = safefiles.read_text(self.here, "exit.json", 4096, default="")
        try:
            return json.loads(text) if text else None
        except ValueError:
            return None

    def ended(self) -> bool:
        return self.exit_note() is not None or not self.alive()

    def stop(self, grace: float) -> None:
        if self.ended():
            return
        (self.here / "stop").write_text(f"{max(grace, 0):g}")
        deadline = time.monotonic() + grace + 10
        while time.monotonic() < deadline and not self.ended():
            time.sleep(0.05)
        if not self.ended():   # the worker does not answer: it goes
            self.remove()

    def result(self):
        note = self.exit_note()
        if note is None:
            self.sync()
            failure = self.run_dir / TELEMETRY_DIR / FAILURE_FILE
            if not failure.exists():
                failure.write_text(f"the run's warm worker {self.noun} ended during the run "
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
                self.offsets[name] = size(self.here / name)

        def follow():
            next_check = 0.0
            while True:
                done = self.exit_note() is not None
                self.sync()
                if done:
                    return
                if time.monotonic() > next_check:
                    next_check = time.monotonic() + 1.0
                    if not self.alive():   # gone: the supervisor sees it
                        return
                time.sleep(PUMP_S)

        thread = threading.Thread(target=follow, daemon=True, name="celltrain-warm-output")
        thread.start()
        return thread

    def sync(self) -> None:
        with self.lock:
            run_dir = self.run_dir
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
            have = size(dest / name)
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
        release(self.here.parent, self.run_id)


def size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0
