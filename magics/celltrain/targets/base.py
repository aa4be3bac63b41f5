"""The compute-target interface: the steps a supervisor walks to carry one run.

A target is where a run's processes execute: a Docker engine, this machine's processes, later a
Ray cluster or Slurm.  The supervisor (``celltrain.supervisor``) knows only this interface; a
target knows nothing of states, reasons or the store's tables beyond the run folder it is given.

The contract, which ``tests/targets`` checks for every registered target:

- ``validate(spec)`` runs in the submitting process before the run exists; it refuses what the
  target cannot do with a ``ValueError``/``CelltrainError`` naming the value and the fix, and may
  settle "auto" values (``gpus="auto"``).  It must be cheap when nothing needs checking.
- ``prepare(should_stop)`` makes what the run needs (an image, an environment) and returns a
  ``Prepared``; it polls ``should_stop()`` at least once a second and raises ``PrepareStopped``
  when it says so, leaving nothing half-made behind.
- ``start(prepared)`` creates the run's processes or containers, not yet running, and returns a
  ``Handle``; ``launch(handle)`` sets them going.  The handle is stored with the run, so it must
  survive ``to_dict``/``from_dict``: a supervisor in another process re-attaches with it.
- ``stream_output(handle, resumed)`` writes the run's output into ``output.log`` and
  ``stderr.log`` (a thread it returns, or None when the processes write those files themselves);
  ``ship_telemetry(handle)`` brings telemetry files into the run folder where they are not
  written there directly (a remote node); both may be called again after a re-attach.
- ``is_running(handle)`` and ``exists(handle)`` are cheap enough to call twice a second.
- ``stop(handle, grace)``: SIGTERM, then SIGKILL after ``grace`` seconds, for every process.
- ``result(handle)`` gives the exit code (128 + signal when killed) and whether memory ran out;
  ``collect(handle)`` copies ``./outputs`` and ``./logs`` back into the run folder, also after a
  failure, never following a link out of it; ``cleanup(handle)`` removes whatever is left.  Each
  may be called on a handle whose processes are already gone, and more than once.
- ``explain(error)`` turns an exception the target raised into a sentence for the run's reason
  (or None to let the supervisor describe it).
- ``reconcile(store)`` (a class method) runs when a workspace is opened: it tidies what runs of
  this target left behind while nobody supervised them.  It must cost nothing when the workspace
  has no such runs.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

if TYPE_CHECKING:
    from ..spec import RunSpec
    from ..store import Store


class PrepareStopped(Exception):
    """``prepare`` gave up because ``should_stop()`` said so (the run was canceled)."""


@dataclass
class Handle:
    """What identifies a started run on its target: container ids, process ids, a job id."""
    target: str
    ids: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "ids": dict(self.ids)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Handle":
        return cls(target=d["target"], ids=dict(d.get("ids") or {}))

    def short(self) -> str:
        """A few characters a person can match against ``docker ps`` or ``ps``."""
        return ", ".join(f"{k} {str(v)[:12]}" for k, v in self.ids.items())


@dataclass
class Prepared:
    """What ``prepare`` made: the image (or interpreter) the run uses, and whether it was new."""
    image: str
    image_digest: str | None = None
    built: bool = False


@dataclass
class Result:
    exit_code: int | None
    oom: bool = False


class ComputeTarget:
    """Base of every compute target; see the module docstring for the contract."""

    kind: ClassVar[str] = ""

    def __init__(self, store: "Store", run: dict, spec: "RunSpec",
                 notify: Callable[[str], None], settings: dict | None = None):
        self.store, self.run, self.spec, self.notify = store, run, spec, notify
        self.settings = dict(settings or {})
        self.run_dir: Path = store.run_dir(run["id"])

    # -- in the submitting process -------------------------------------------------------------
    @classmethod
    def validate(cls, spec: "RunSpec", settings: dict | None = None) -> "RunSpec":
        return spec

    @classmethod
    def reconcile(cls, store: "Store") -> None:
        return None

    # -- the supervisor's steps ----------------------------------------------------------------
    def prepare(self, should_stop: Callable[[], bool]) -> Prepared:
        raise NotImplementedError

    def start(self, prepared: Prepared) -> Handle:
        raise NotImplementedError

    def launch(self, handle: Handle) -> None:
        raise NotImplementedError

    def exists(self, handle: Handle) -> bool:
        raise NotImplementedError

    def is_running(self, handle: Handle) -> bool:
        raise NotImplementedError

    def stream_output(self, handle: Handle, resumed: bool) -> threading.Thread | None:
        return None

    def ship_telemetry(self, handle: Handle) -> None:
        return None

    def stop(self, handle: Handle, grace: float) -> None:
        raise NotImplementedError

    def result(self, handle: Handle) -> Result:
        raise NotImplementedError

    def collect(self, handle: Handle) -> None:
        raise NotImplementedError

    def cleanup(self, handle: Handle) -> None:
        raise NotImplementedError

    def explain(self, error: BaseException) -> str | None:
        return None
