"""Run: a handle on one run in the workspace.  It holds an id, and reads everything else fresh.

Inside a training script, ``Run.get_context()`` gives the logging context instead (see
``celltrain.runtime.context``): the same name as Azure ML's, for the same two roles.
"""
from __future__ import annotations

import os
import shutil
import stat
import sys
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TextIO

from . import safefiles, states
from .errors import RunFailed
from .runfiles import BUILD_LOG, OUTPUT_LOG, STDERR_LOG
from .runtime.wire import events_rank

if TYPE_CHECKING:
    from .workspace import Workspace


class Run:
    """A run of the workspace: status, metrics, files, logs; wait, cancel, download."""

    def __init__(self, workspace: "Workspace", run_id: str):
        self.workspace, self.id = workspace, run_id

    @staticmethod
    def get_context():
        """In a training script: the run it is part of (an offline one outside celltrain)."""
        from .runtime.context import get_context
        return get_context()

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.status}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # -- what the store says ----------------------------------------------------------------
    @property
    def record(self) -> dict[str, Any]:
        """The run's row, fresh from the store."""
        return self.workspace.store.get_run(self.id)

    @property
    def status(self) -> str:
        return self.record["status"]

    @property
    def reason(self) -> str | None:
        return self.record["reason"]

    @property
    def exit_code(self) -> int | None:
        return self.record["exit_code"]

    @property
    def started_warm(self) -> bool:
        """Whether the run was forked from a warm worker (README "Warm starts"), not started
        in a fresh container or process."""
        handle = self.record.get("handle") or {}
        return bool((handle.get("ids") or {}).get("warm"))

    @property
    def number(self) -> int:
        return self.record["number"]

    @property
    def experiment(self) -> str:
        return self.record["experiment"]

    @property
    def params(self) -> dict:
        return self.record["params"]

    @property
    def tags(self) -> dict:
        return self.record["tags"]

    @property
    def folder(self) -> Path:
        return self.workspace.store.run_dir(self.id)

    @property
    def warnings(self) -> list[str]:
        """What the host could not take from the run (bad values, skipped bytes, output links),
        one line per kind with its count, and how it went otherwise than asked (on the offline
        base image).  The run went on despite them."""
        from .store.runs import format_warning   # not at the top: run.py loads in containers
        return [format_warning(w) for w in self.workspace.store.warnings(self.id)]

    def history(self) -> list[dict]:
        """Status changes with their times and details, oldest first."""
        return self.workspace.store.status_history(self.id)

    def metrics(self, rank: int = 0) -> dict[str, list[float]]:
        """Every logged value of every metric of process ``rank`` (0: the main one, and the
        only one of a single-process run), in the order logged."""
        out: dict[str, list[float]] = {}
        for _, name, _, value, _ in self.workspace.store.metric_series(self.id, rank=rank):
            out.setdefault(name, []).append(value)
        return out

    def metric(self, name: str, rank: int = 0) -> list[tuple[int, float, float]]:
        """One metric of process ``rank`` as (step, value, time) points."""
        return [(s, v, t) for _, _, s, v, t in
                self.workspace.store.metric_series(self.id, name, rank=rank)]

    def latest_metrics(self, rank: int = 0) -> dict[str, float]:
        return self.workspace.store.latest_metrics(self.id, rank)

    def system_metrics(self) -> dict[str, dict[str, list]]:
        """CPU, memory and GPU use sampled by the host while the run ran (``sys/cpu_percent``,
        ``sys/mem_bytes``, ...: README "System metrics"), each as {"t": seconds since the run
        started, "v": values}; apart from ``metrics()``, which holds only what the run logged."""
        return self.workspace.store.system_series(self.id, since=self.record["started"])

    @property
    def code(self) -> dict:
        """What ran: a ``%%train`` cell's source with its notebook and cell, or a script run's
        command line (``celltrain.runcode.run_code``)."""
        from .runcode import run_code       # not at the top: run.py loads in containers
        return run_code(self.record, self.folder)

    def logged_ranks(self) -> list[int]:
        """The ranks of the processes that logged (``RANK`` or ``OMPI_COMM_WORLD_RANK`` in
        their environment; [0] for a single-process run that logged, [] if nothing was)."""
        return self.workspace.store.run_ranks(self.id)

    def table(self, name: str, rank: int = 0) -> list[dict]:
        return self.workspace.store.table(self.id, name, rank)

    def files(self) -> list[str]:
        """Files of the run folder (outputs/, logs/, logged images, captured output).  A link
        is listed as itself (a link to a folder too), never followed."""
        root = self.folder
        # "work" is the local backend's working copy, removed right after the run ends.
        skip = {"snapshot", "supervisor.lock", "work"}
        out = []
        for dirpath, dirnames, filenames in os.walk(root):    # does not descend into links
            rel_dir = Path(dirpath).relative_to(root)
            if rel_dir == Path("."):
                dirnames[:] = [d for d in dirnames if d not in skip]
                filenames = [f for f in filenames if f not in skip]
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            out += [(rel_dir / f).as_posix() for f in filenames + links
                    if events_rank(f) is None]
        return sorted(out)

    def _text(self, name: str) -> str:
        """A log of the run folder, read without following a link ("" if missing or a link)."""
        size = safefiles.size_beneath(self.folder, name)
        if not size:
            return ""
        return safefiles.read_text(self.folder, name, size, default="")

    def logs(self, stderr_only: bool = False, rank: int | None = None) -> str:
        """The captured output; ``rank``: only that rank's lines of a distributed run."""
        text = self._text(STDERR_LOG if stderr_only else OUTPUT_LOG)
        if rank is None:
            return text
        from .ranks import lines_of
        return lines_of(text, rank)

    def ranks(self) -> list[dict]:
        """Per rank of a distributed run: rank, node, local_rank, state, exit_code, last_line,
        started, ended (from the rank wrapper's records); for a run without them, the ranks
        that logged, the rest unknown (None)."""
        from .ranks import FIELDS, read_ranks
        found = read_ranks(self.folder, self.status)
        return found or [{**dict.fromkeys(FIELDS), "rank": r} for r in self.logged_ranks()]

    def build_log(self) -> str:
        return self._text(BUILD_LOG)

    def download(self, name: str, dest: str = ".") -> Path:
        """Copy a run file (or folder, e.g. "outputs") into the folder ``dest``.  Links in
        the run folder are copied as links, never followed."""
        try:
            fd = safefiles.open_beneath(self.folder, name.strip("/") or ".")
        except (OSError, ValueError) as e:
            listing = ", ".join(self.files()[:20]) or "none yet"
            why = f" ({e.strerror})" if isinstance(e, safefiles.UnsafePath) else ""
            raise FileNotFoundError(f"run {self.id} has no file {name!r}{why}; its files: "
                                    f"{listing}") from None
        target = Path(dest)
        target.mkdir(parents=True, exist_ok=True)
        target = target / PurePosixPath(name.strip("/")).name
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            os.close(fd)
            shutil.copytree(self.folder / name.strip("/"), target, symlinks=True,
                            dirs_exist_ok=True)
        elif stat.S_ISREG(info.st_mode):
            os.set_blocking(fd, True)
            with os.fdopen(fd, "rb") as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            os.utime(target, (info.st_atime, info.st_mtime))
        else:
            os.close(fd)
            raise FileNotFoundError(f"{name!r} of run {self.id} is not a file or a folder")
        return target

    # -- acting on it --------------------------------------------------------------------------
    def wait(self, show_output: bool = False, timeout: float | None = None,
             raise_on_failure: bool = False, poll: float = 0.1,
             stream: TextIO | None = None) -> str:
        """Block until the run ends; returns its final status ("Completed", "Failed", ...).

        ``show_output`` streams the run's output as it comes.  ``timeout`` stops waiting (not
        the run) and raises TimeoutError.
        """
        stream = stream or sys.stdout
        deadline = None if timeout is None else time.monotonic() + timeout
        offset = 0
        log_path = self.folder / OUTPUT_LOG
        while True:
            status = self.status
            if show_output and log_path.exists():
                with open(log_path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                if chunk:
                    offset += len(chunk)
                    stream.write(chunk.decode(errors="replace"))
                    stream.flush()
            if states.is_terminal(status):
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} is still {status} after {timeout}s; "
                                   f"it goes on: wait again or cancel it")
            time.sleep(poll)
        if show_output:
            record = self.record
            stream.write(f"\nrun {self.id}: {status}"
                         + (f" - {record['reason']}" if record["reason"] else "") + "\n")
        if raise_on_failure and status != states.COMPLETED:
            record = self.record
            raise RunFailed(self.id, status, record["reason"], record["exit_code"])
        return status

    def cancel(self, grace: float = 10.0, wait: bool = True) -> str:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the run ends Canceled."""
        store = self.workspace.store
        record = self.record
        if states.is_terminal(record["status"]):
            return record["status"]
        options = dict(record["options"])
        options["cancel_grace"] = grace
        store.update_run(self.id, cancel_requested=1, options=options)
        self.workspace.reconcile()  # a supervisor must be there to act on it
        if not wait:
            return self.status
        return self.wait(timeout=grace + 60)

    def show(self):
        """Display the live run widget (progress, charts, logs, Cancel)."""
        from .views.widget import show_run
        return show_run(self)

    def register_model(self, name: str, path: str, **kwargs):
        """Register a file of this run as a new version of model ``name``."""
        from .registry.version import register_model
        return register_model(self, name, path, **kwargs)
