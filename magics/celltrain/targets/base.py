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
  ``Handle``; ``launch(handle)`` sets them going, and returns None, or a new handle where it
  had to start them another way (a warm worker gone before the run reached it: a cold
  container), which replaces the first.  The handle is stored with the run, so it must
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
- ``sample_usage(handle)`` gives the run's CPU and memory use now, as a dict with any of
  ``cpu_percent`` (100 is one core busy, since the previous call; absent on the first),
  ``mem_bytes`` and ``mem_limit_bytes`` (only when the run has a memory limit); None when the
  target cannot say (the Ray target).  The supervisor calls it every few seconds from a thread of
  its own (``celltrain.sysmetrics``), so it must be cheap; GPUs are sampled apart, by NVML.
- ``explain(error)`` turns an exception the target raised into a sentence for the run's reason
  (or None to let the supervisor describe it).
- ``reconcile(store, supervisor_alive)`` (a class method) runs when a workspace is opened: it
  tidies what runs of this target left behind while nobody supervised them.  It must cost
  nothing when the workspace has no such runs.
- A target whose engine can stop answering (a daemon, a cluster head) says so: ``connect()``
  raises ``TargetUnavailable`` while it is down, ``unreachable(error)`` tells such an error from
  a refusal, ``wait_until_reachable(seconds)`` waits for it to come back, and
  ``leave_for_reconcile()`` notes that what the run left could not be removed now (the next
  ``reconcile`` removes it) and returns the words for the reason.
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

    @classmethod
    def from_record(cls, run: dict) -> "Handle | None":
        """The handle stored with a run, or None before it started.  Rows from before handles
        were stored as JSON hold a container id, or "pid:N" for a local process."""
        if run.get("handle"):
            return cls.from_dict(run["handle"])
        legacy = run.get("container_id")
        if not legacy:
            return None
        if run.get("target") == "local" and legacy.startswith("pid:"):
            return cls("local", {"pid": int(legacy[4:])})
        return cls(run.get("target") or "docker", {"container": legacy})

    def legacy_id(self) -> str:
        """The ``container_id`` column's text: a container id, or "pid:N"."""
        if "container" in self.ids:
            return str(self.ids["container"])
        return ", ".join(f"{k}:{v}" for k, v in self.ids.items())

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
    noun: ClassVar[str] = "process"              # what a run is made of here, for reasons
    unreachable_name: ClassVar[str] = "the compute target"
    one_machine: ClassVar[bool] = True           # GPU ids name its GPUs (a sweep hands them out)

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
    def check_settings(cls, settings: dict) -> dict:
        """The settings a saved target of this kind keeps (``Workspace.add_target``), checked:
        unknown names are refused, naming them."""
        if settings:
            raise ValueError(f"a {cls.kind} target takes no settings, not "
                             f"{', '.join(sorted(settings))}")
        return settings

    @classmethod
    def reconcile(cls, store: "Store", supervisor_alive: Callable[[Path], bool]) -> None:
        return None

    @classmethod
    def describe_environment(cls, environment, cache_dir: Path) -> dict | None:
        """What Python and packages a run of ``environment`` will see, asked before it starts
        ({"image", "python", "packages"}, unknown values None), so ``%%train`` can pin the
        cell's packages and check the Python; None when the run uses this kernel's own Python."""
        return None

    @classmethod
    def gpu_count(cls, settings: dict | None = None) -> int | None:
        """GPUs the target can give runs at once (a sweep keeps its trials within them);
        None when it cannot say (no bound)."""
        return None

    @classmethod
    def overview(cls, settings: dict | None = None) -> list[str]:
        """Lines ``celltrain targets`` shows under a saved target of this kind (a cluster's
        nodes and free GPUs); none by default."""
        return []

    @classmethod
    def warm_up(cls, settings: dict | None = None) -> None:
        """Pay for imports and connections ahead of a run (the spare supervisor calls it):
        once per kind without settings, then once with each of the workspace's saved targets
        of this kind's settings."""
        return None

    @classmethod
    def cool_down(cls, kind: str | None, settings: dict) -> None:
        """In a spare that was warmed up with a saved target's settings and then handed a run
        of ``kind`` with ``settings``: let go of what the run does not use."""
        return None

    # -- an engine that can stop answering -----------------------------------------------------
    def connect(self) -> None:
        return None

    def unreachable(self, error: BaseException) -> bool:
        return False

    def reach_wait_s(self) -> float:
        return 0.0

    def wait_until_reachable(self, within_s: float) -> bool:
        return True

    def leave_for_reconcile(self) -> str:
        return ""

    def clean_prepare(self) -> None:
        """Remove what an interrupted ``prepare`` of this run left (a build container)."""
        return None

    # -- the supervisor's steps ----------------------------------------------------------------
    def prepare(self, should_stop: Callable[[], bool]) -> Prepared:
        raise NotImplementedError

    def start(self, prepared: Prepared) -> Handle:
        raise NotImplementedError

    def launch(self, handle: Handle) -> "Handle | None":
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

    def sample_usage(self, handle: Handle) -> dict | None:
        return None

    def explain(self, error: BaseException) -> str | None:
        return None
