"""Exceptions raised by celltrain.

    CelltrainError
     +-- TargetUnavailable        a compute target's engine does not answer (now)
     |    +-- DockerUnavailable   the Docker engine is not installed, not running or not reachable
     +-- GPUUnavailable           GPUs were asked for but the engine has no GPU runtime
     +-- SourceTooLarge           the source folder is over the snapshot size limit
     +-- RunNotFound              no run has that id (or the prefix matches several)
     +-- ImageBuildError          an environment's image failed to build (carries the build log)
     +-- RunFailed                wait() on a run that ended Failed or Canceled
     +-- BundleError              a %%train cell cannot be packaged (celltrain.cell)

Each message says what happened, the value at fault and the fix.
"""
from __future__ import annotations


class CelltrainError(Exception):
    """Base class of celltrain's own errors."""


class TargetUnavailable(CelltrainError):
    """A compute target's engine (a daemon, a cluster) does not answer; it may come back."""


class DockerUnavailable(TargetUnavailable):
    pass


class GPUUnavailable(CelltrainError):
    pass


class SourceTooLarge(CelltrainError):
    pass


class RunNotFound(CelltrainError, LookupError):
    pass


class ImageBuildError(CelltrainError):
    def __init__(self, message: str, build_log: str = ""):
        super().__init__(message)
        self.build_log = build_log


class RunFailed(CelltrainError):
    """Like subprocess.CalledProcessError: carries what a person needs to see why."""

    def __init__(self, run_id: str, status: str, reason: str | None, exit_code: int | None):
        self.run_id, self.status, self.reason, self.exit_code = run_id, status, reason, exit_code
        super().__init__(f"run {run_id} ended {status}: {reason or 'no reason recorded'}")


class BundleError(CelltrainError):
    """The cell cannot be packaged (bad syntax, an unpicklable variable, too much data)."""
