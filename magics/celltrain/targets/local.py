"""Running a run as a local process, without Docker: for fast iteration on the CPU.

Same contract as the Docker backend: the snapshot is copied to a work folder, the process gets
the telemetry folder, its output goes to output.log, ``./outputs`` and ``./logs`` are copied back.
The process runs in its own session and writes its exit code to a file, so it survives the
supervisor and a new supervisor can pick it up.  Runs of an environment after the first start
warm: forked from a worker process that imported torch (``targets/localwarm.py``).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import copyback, distributed, safefiles
from ..paths import PACKAGE_PARENT
from . import localwarm
from .base import ComputeTarget, Handle, Prepared, Result
from .proctree import SessionSampler
from .warmhost import eligible
from ..runfiles import OUTPUT_LOG, STDERR_LOG
from ..runtime.wire import EXIT_FILE_ENV, TELEMETRY_DIR, ports_environ, run_environ

EXIT_FILE = "exit_code"
WRAPPER = f'"$@"; echo $? > "${EXIT_FILE_ENV}"'


class LocalTarget(ComputeTarget):
    """The run's script as a process of this machine, with this kernel's Python."""

    kind = "local"
    noun = "process"

    def __init__(self, store, run: dict, spec, notify, settings: dict | None = None):
        super().__init__(store, run, spec, notify, settings)
        self.work = self.run_dir / "work"
        self.warm_run = None

    @classmethod
    def validate(cls, spec, settings: dict | None = None):
        if spec.resources.gpus == "auto":   # a local process sees what this machine has
            spec = spec.replace(resources=dataclasses.replace(spec.resources, gpus="none"))
        if distributed.asked(spec.distribution):
            spec = _check_distribution(spec)
        return spec

    @classmethod
    def gpu_count(cls, settings: dict | None = None) -> int | None:
        from ..gpus import visible_gpu_count
        return visible_gpu_count()

    def prepare(self, should_stop=lambda: None) -> Prepared:
        return Prepared(f"local:{sys.executable}")

    def environ(self) -> tuple[dict, dict]:
        """The run's process environment: what its environment key covers, and its own part."""
        run, spec = self.run, self.spec
        base = {**os.environ, **spec.environment.env, **spec.env_vars, "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(p for p in (PACKAGE_PARENT,
                                                          os.environ.get("PYTHONPATH")) if p)}
        own = {**run_environ(run["id"], run["experiment"], spec.params,
                             str(self.run_dir / TELEMETRY_DIR), spec.parent),
               **ports_environ(spec.ports)}     # a process binds the host's port itself
        return base, own

    def start(self, prepared: Prepared) -> Handle:
        if self.work.exists():
            shutil.rmtree(self.work)
        telemetry = self.run_dir / TELEMETRY_DIR
        telemetry.mkdir(parents=True, exist_ok=True)
        telemetry.chmod(0o700)   # the process runs as us: nobody else writes there
        self.run_dir.chmod(0o750)
        if eligible(self.spec):
            borrowed = localwarm.claim(self, self.environ()[0])
            if borrowed:
                return Handle(self.kind, {"warm": borrowed[0], "worker": borrowed[1]})
        return self.start_cold()

    def start_cold(self) -> Handle:
        spec = self.spec
        if self.work.exists():
            shutil.rmtree(self.work)
        shutil.copytree(self.run_dir / "snapshot", self.work)
        base, own = self.environ()
        env = {**base, **own, EXIT_FILE_ENV: str(self.run_dir / EXIT_FILE)}
        # The process writes straight to the log file, so it needs nobody alive to drain a pipe.
        with open(self.run_dir / OUTPUT_LOG, "ab") as out:
            command = [sys.executable, "-u", *spec.command()]
            if spec.distribution.distributed:
                env.update(distributed.node_env(0, 1, None))
                command = [sys.executable, *distributed.torchrun_args(spec, 0, None,
                                                                      self.run["id"])]
            proc = subprocess.Popen(["sh", "-c", WRAPPER, "sh", *command], cwd=self.work, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        self._proc = proc
        return Handle(self.kind, {"pid": proc.pid})

    def launch(self, handle: Handle) -> Handle | None:
        """A cold run started in start() (a process has no created-but-not-started state); a
        warm one is handed to its worker, or started cold where the worker was lost."""
        if "warm" not in handle.ids:
            return None
        base, own = self.environ()
        if localwarm.hand(self, handle, {**base, **own}):
            return None
        self._warm(handle).cleanup()
        self.warm_run = None
        return self.start_cold()

    def _warm(self, handle: Handle):
        if "warm" not in handle.ids:
            return None
        if self.warm_run is None:
            self.warm_run = localwarm.follow(self, handle)
        return self.warm_run

    @staticmethod
    def _pid(handle: Handle) -> int:
        return int(handle.ids["pid"])

    def exists(self, handle: Handle) -> bool:
        if self._warm(handle):
            warm = self._warm(handle)
            return not warm.handed() or warm.exit_note() is not None or not warm.ended()
        return self.is_running(handle) or (self.run_dir / EXIT_FILE).exists()

    def stream_output(self, handle: Handle, resumed: bool):
        return None  # the process writes output.log itself

    def is_running(self, handle: Handle) -> bool:
        if self._warm(handle):
            return self._warm(handle).handed() and not self._warm(handle).ended()
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.pid == self._pid(handle):
            return proc.poll() is None
        try:
            os.kill(self._pid(handle), 0)
        except ProcessLookupError:
            return False
        stat = Path(f"/proc/{self._pid(handle)}/stat")
        return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")

    def sample_usage(self, handle: Handle) -> dict | None:
        """CPU and memory of the run's processes (its session; a warm run's forked child
        starts one of its own), from /proc."""
        sid = self._warm(handle).child_pid() if self._warm(handle) else self._pid(handle)
        if sid is None:
            return None
        sampler = getattr(self, "_usage", None)
        if sampler is None or sampler.sid != sid:
            sampler = self._usage = SessionSampler(sid, time.monotonic)
        return sampler.sample()

    def stop(self, handle: Handle, grace: float) -> None:
        if self._warm(handle):
            return self._warm(handle).stop(grace)
        pid = self._pid(handle)
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self._group_alive(handle):
            time.sleep(0.1)
        if self._group_alive(handle):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _group_alive(self, handle: Handle) -> bool:
        """Whether any process of the run's group lives: the shell wrapper dies of SIGTERM
        at once, a script that ignores it does not (it must still get the SIGKILL)."""
        self.is_running(handle)            # reaps the wrapper if it is our child
        try:
            os.killpg(self._pid(handle), 0)
            return True
        except ProcessLookupError:
            return False

    def result(self, handle: Handle) -> Result:
        if self._warm(handle):
            return self._warm(handle).result()
        proc = getattr(self, "_proc", None)
        code = None
        if proc is not None and proc.pid == self._pid(handle):
            code = proc.wait()
        exit_file = self.run_dir / EXIT_FILE
        if exit_file.exists() and exit_file.read_text().strip():
            code = int(exit_file.read_text().strip())
        elif code is not None and code < 0:
            code = 128 - code  # killed by a signal, as a shell reports it
        return Result(code, False)

    def collect(self, handle: Handle) -> None:
        skipped = []
        for folder in ("outputs", "logs"):
            source = self.work / folder
            if source.is_symlink():
                skipped.append(f"{folder} is a link to {os.readlink(source)}: skipped")
            elif source.is_dir():
                skipped += copyback.copy_tree(source, self.run_dir, folder)
        copyback.report(self.store, self.run["id"], skipped)
        # Tracebacks and other stderr are interleaved in output.log; keep its tail for reasons.
        try:
            tail = safefiles.read_bytes(self.run_dir, OUTPUT_LOG, 20000, tail=True)
        except (FileNotFoundError, safefiles.UnsafePath):
            tail = b""
        stderr = self.run_dir / STDERR_LOG
        if stderr.is_symlink():        # the process may have made it one: write no file of ours
            stderr.unlink()
        stderr.write_bytes(tail)

    def cleanup(self, handle: Handle) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        if self._warm(handle):
            self._warm(handle).cleanup()
        elif eligible(self.spec):   # the next run of this environment starts warm
            try:
                localwarm.ensure_worker(self, self.environ()[0])
            except OSError as e:     # the next run starts cold, as before
                print(f"no warm worker: {e}", file=sys.stderr)


def _check_distribution(spec):
    """One node of several processes runs ``torchrun --standalone`` here; several nodes need a
    target with several machines (or containers)."""
    dist = distributed.settle(spec).distribution      # bad values first, named
    if dist.nodes != 1:
        raise ValueError(f"target='local' runs one node, not nodes={dist.nodes!r}: use "
                         "target='docker' (one container per node) or nodes=1")
    if dist.launcher == "mpi":
        raise ValueError("launcher='mpi' is not supported by target='local': use "
                         "launcher='torchrun'")
    if not dist.distributed:
        return spec
    try:
        import torch.distributed.run  # noqa: F401
    except ImportError:
        raise ValueError(distributed.NO_TORCH.replace("the run's image", "this Python") +
                         " (target='local' uses this kernel's Python)") from None
    gpus = spec.resources.gpus
    count = 0
    if gpus not in ("none", None, 0):
        import torch
        count = distributed.gpu_count(gpus, 1, torch.cuda.device_count())
    return distributed.settle(spec, count)
