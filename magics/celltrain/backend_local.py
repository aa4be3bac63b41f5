"""Running a run as a local process, without Docker: for fast iteration on the CPU.

Same contract as the Docker backend: the snapshot is copied to a work folder, the process gets
the telemetry folder, its output goes to output.log, ``./outputs`` and ``./logs`` are copied back.
The process runs in its own session and writes its exit code to a file, so it survives the
supervisor and a new supervisor can pick it up.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import copyback, safefiles
from .runfiles import OUTPUT_LOG, STDERR_LOG
from .telemetry import TELEMETRY_DIR
from .workspace import PACKAGE_PARENT

EXIT_FILE = "exit_code"
WRAPPER = '"$@"; echo $? > "$CELLTRAIN_EXIT_FILE"'


class LocalBackend:
    def __init__(self, store, run: dict, notify):
        self.store, self.run, self.notify = store, run, notify
        self.run_dir: Path = store.run_dir(run["id"])
        self.work = self.run_dir / "work"

    def prepare(self) -> dict:
        return {"image": f"local:{sys.executable}", "image_digest": None, "image_built": False}

    def start(self, image: str) -> str:
        run, opts = self.run, self.run["options"]
        if self.work.exists():
            shutil.rmtree(self.work)
        shutil.copytree(self.run_dir / "snapshot", self.work)
        telemetry = self.run_dir / TELEMETRY_DIR
        telemetry.mkdir(parents=True, exist_ok=True)
        telemetry.chmod(0o700)   # the process runs as us: nobody else writes there
        self.run_dir.chmod(0o750)
        env = {**os.environ, **(run["environment"].get("env") or {}),
               **(opts.get("env_vars") or {}),
               "CELLTRAIN_RUN_ID": run["id"], "CELLTRAIN_EXPERIMENT": run["experiment"],
               "CELLTRAIN_PARAMS": json.dumps(run["params"]),
               "CELLTRAIN_TELEMETRY_DIR": str(telemetry),
               "CELLTRAIN_EXIT_FILE": str(self.run_dir / EXIT_FILE),
               "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (PACKAGE_PARENT,
                                                         os.environ.get("PYTHONPATH")) if p)}
        # The process writes straight to the log file, so it needs nobody alive to drain a pipe.
        with open(self.run_dir / OUTPUT_LOG, "ab") as out:
            proc = subprocess.Popen(["sh", "-c", WRAPPER, "sh", sys.executable, "-u",
                                     run["script"], *run["args"]], cwd=self.work, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        self._proc = proc
        return f"pid:{proc.pid}"

    def launch(self, handle: str) -> None:
        pass  # started in start(): a process has no created-but-not-started state

    @staticmethod
    def _pid(handle: str) -> int:
        return int(handle.split(":", 1)[1])

    def exists(self, handle: str) -> bool:
        return self.is_running(handle) or (self.run_dir / EXIT_FILE).exists()

    def stream_output(self, handle: str, resumed: bool):
        return None  # the process writes output.log itself

    def is_running(self, handle: str) -> bool:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.pid == self._pid(handle):
            return proc.poll() is None
        try:
            os.kill(self._pid(handle), 0)
        except ProcessLookupError:
            return False
        stat = Path(f"/proc/{self._pid(handle)}/stat")
        return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")

    def stop(self, handle: str, grace: float) -> None:
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

    def _group_alive(self, handle: str) -> bool:
        """Whether any process of the run's group lives: the shell wrapper dies of SIGTERM
        at once, a script that ignores it does not (it must still get the SIGKILL)."""
        self.is_running(handle)            # reaps the wrapper if it is our child
        try:
            os.killpg(self._pid(handle), 0)
            return True
        except ProcessLookupError:
            return False

    def result(self, handle: str) -> tuple[int | None, bool]:
        proc = getattr(self, "_proc", None)
        code = None
        if proc is not None and proc.pid == self._pid(handle):
            code = proc.wait()
        exit_file = self.run_dir / EXIT_FILE
        if exit_file.exists() and exit_file.read_text().strip():
            code = int(exit_file.read_text().strip())
        elif code is not None and code < 0:
            code = 128 - code  # killed by a signal, as a shell reports it
        return code, False

    def collect(self, handle: str) -> None:
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

    def cleanup(self, handle: str) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
