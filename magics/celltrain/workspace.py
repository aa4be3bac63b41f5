"""Workspace and Experiment: where runs are recorded, and how they are submitted.

Opening a workspace reconciles it: every run that is not finished and has no live supervisor gets
a new one, which re-attaches to its container or finalizes it.  So a kernel restart, a closed
laptop lid or a killed supervisor loses nothing.
"""
from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from . import states
from .environment import Environment
from .paths import PACKAGE_PARENT
from .spec import Distribution, Resources, RunSpec
from .errors import RunNotFound
from .run import Run
from .snapshot import DEFAULT_LIMIT_MB, snapshot
from .store import Store

WORKSPACE_ENV = "CELLTRAIN_WORKSPACE"
DEFAULT_DIR = ".celltrain"
# A spare supervisor per workspace makes the next submission start ~0.5 s sooner.
SPARES = os.environ.get("CELLTRAIN_SPARE", "1") != "0"
DB_FILE = "celltrain.db"
SUPERVISOR_LOCK, SUPERVISOR_LOG = "supervisor.lock", "supervisor.log"
SNAPSHOT, PARTIAL_SNAPSHOT = "snapshot", "snapshot.partial"


def default_path() -> Path:
    return Path(os.environ.get(WORKSPACE_ENV) or DEFAULT_DIR)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "run"


def new_run_id(experiment: str, number: int) -> str:
    return f"{_slug(experiment)}-{number}-{secrets.token_hex(3)}"


class Workspace:
    """A folder holding ``celltrain.db`` and ``runs/``: ``./.celltrain`` unless told otherwise."""

    def __init__(self, path: str | os.PathLike | None = None, *, reconcile: bool = True,
                 create: bool = True):
        """``create=False``: open only a workspace that exists (views must not make one)."""
        self.path = Path(path) if path is not None else default_path()
        self.path = self.path.expanduser().resolve()
        if not create and not (self.path / DB_FILE).is_file():
            raise FileNotFoundError(
                f"no workspace at {self.path}: it has no {DB_FILE} (a workspace is created by "
                f"the first submit, or pass -w with an existing one)")
        self.store = Store(self.path)
        if reconcile:
            self.reconcile()
            from .registry.leftovers import remove_leftovers
            remove_leftovers(self.store)

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    # -- experiments and runs -------------------------------------------------------------
    def experiment(self, name: str) -> "Experiment":
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"an experiment needs a non-empty name, not {name!r}")
        self.store.experiment_id(name)
        return Experiment(self, name)

    def experiments(self) -> list[dict[str, Any]]:
        return self.store.experiments()

    def run(self, run_id: str) -> Run:
        """The run with this id, or the one run whose id starts with it."""
        matches = self.store.find_runs(str(run_id))
        if len(matches) == 1:
            return Run(self, matches[0])
        if not matches:
            raise RunNotFound(f"no run {run_id!r} in workspace {self.path}: "
                              f"`celltrain runs` lists the runs there")
        raise RunNotFound(f"run id {run_id!r} is ambiguous in {self.path}: it starts "
                          f"{', '.join(matches[:5])}; give more of it")

    def sweep(self, sweep_id: str):
        """The sweep with this id (or id prefix), from any process: a ``Sweep`` handle."""
        from .sweep.handle import Sweep
        return Sweep.of(self.run(sweep_id))

    def runs(self, experiment: str | None = None, status: Iterable[str] | None = None,
             limit: int | None = None) -> list[Run]:
        rows = self.store.list_runs(experiment=experiment, status=status, limit=limit)
        return [Run(self, r["id"]) for r in rows]

    # -- runs outlive their starter ---------------------------------------------------------
    def reconcile(self) -> list[str]:
        """Give every unfinished run without a live supervisor a new one; returns their ids."""
        from .targets import UnknownTarget, target_class
        for kind in self.store.target_kinds_used():   # first: a new supervisor may build anew
            try:
                cls = target_class(kind)
            except UnknownTarget:   # a plug-in since uninstalled: its supervisor will say so
                continue
            cls.reconcile(self.store, supervisor_alive)
        adopted = []
        for row in self.store.list_runs(status=states.ACTIVE):
            run_dir = self.store.run_dir(row["id"])
            if supervisor_alive(run_dir):
                continue
            if row["status"] == states.QUEUED and not (run_dir / SNAPSHOT).is_dir():
                self._fail_unsubmitted(row["id"])
                continue
            self.spawn_supervisor(row["id"])
            adopted.append(row["id"])
        return adopted

    def _fail_unsubmitted(self, run_id: str) -> None:
        """A Queued run without its snapshot and without the submitter's lock: the submitting
        process died (or was interrupted) while copying the code.  Never run half a snapshot."""
        shutil.rmtree(self.store.run_dir(run_id) / PARTIAL_SNAPSHOT, ignore_errors=True)
        self.store.set_status(run_id, states.FAILED, "submission incomplete", ended=time.time(),
                              reason="the process that submitted this run ended before its code "
                                     "snapshot was complete (killed or interrupted during "
                                     "submit); nothing ran: submit it again")

    def spawn_supervisor(self, run_id: str) -> None:
        """Give the run a supervisor: the waiting spare if there is one, else a new process."""
        from .spare import hand_to_spare
        run_dir = self.store.run_dir(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        if (self.store.get_run(run_id) or {}).get("kind") == "sweep":   # carried by a controller
            self._spawn(["celltrain.sweep.controller", str(self.path), run_id],
                        run_dir / "controller.log")
            return
        taken = False
        if hand_to_spare(self.path, run_id):
            deadline = time.monotonic() + 2.0
            while not taken and time.monotonic() < deadline:
                taken = supervisor_alive(run_dir)
                time.sleep(0 if taken else 0.01)
        if not taken:
            self._spawn(["celltrain.supervisor", str(self.path), run_id],
                        run_dir / SUPERVISOR_LOG)
        if SPARES:
            self._spawn(["celltrain.spare", str(self.path)], os.devnull)

    def _spawn(self, args: list[str], stderr_path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH"))
                                            if p)
        with open(stderr_path, "a") as err:
            subprocess.Popen([sys.executable, "-m", *args], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err, env=env,
                             start_new_session=True, close_fds=True, cwd=str(self.path))

    # -- compute targets ---------------------------------------------------------------------
    def add_target(self, name: str, kind: str, **settings: Any) -> dict[str, Any]:
        """Save a compute target by name: ``ws.add_target("gpu-box", "docker")``; then
        ``submit(target="gpu-box")``.  Its settings are checked by the kind's ``check_settings``."""
        from .targets import kinds, target_class
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"a target name takes letters, digits, '.', '_' and '-', not "
                             f"{name!r}")
        if name in kinds():
            raise ValueError(f"{name!r} is a kind of compute target: give the saved target "
                             "another name")
        cls = target_class(kind)
        self.store.save_target(name, kind, cls.check_settings(dict(settings)))
        return self.store.saved_target(name)

    def targets(self) -> list[dict[str, Any]]:
        """Every target ``target=`` takes: the kinds, then the targets saved here."""
        from .targets import kinds
        return ([{"name": k, "kind": k, "settings": {}, "saved": False} for k in kinds()]
                + [{**t, "saved": True} for t in self.store.saved_targets()])

    def remove_target(self, name: str) -> None:
        if not self.store.remove_target(name):
            raise ValueError(f"no target {name!r} is saved in {self.path}: "
                             "`celltrain targets` lists them")

    def resolve_target(self, target: str) -> tuple[str, dict[str, Any]]:
        """A kind or a saved name as (kind, settings); UnknownTarget says what there is."""
        from .targets import BUILTIN, target_class
        if target in BUILTIN:                 # the usual case: no query, no plug-in scan
            return target, {}
        saved = self.store.saved_target(target) if isinstance(target, str) else None
        if saved is not None:
            return saved["kind"], saved["settings"]
        target_class(target)        # a plug-in's kind, or UnknownTarget naming the kinds
        return target, {}

    def target_kind(self, target: str) -> str:
        return self.resolve_target(target)[0]

    # -- views -------------------------------------------------------------------------------
    def runs_table(self, **kwargs):
        """A sortable table of runs with status, params and key metrics (a widget)."""
        from .views.runs_table import runs_table
        return runs_table(self, **kwargs)

    def models(self):
        """Registered models: names, versions, aliases."""
        from .registry.catalog import list_models
        return list_models(self)

    def model(self, name: str, version: int | None = None, alias: str | None = None):
        """One registered model version (the latest unless a version or alias is given)."""
        from .registry.catalog import get_model
        return get_model(self, name, version=version, alias=alias)

    def deployments(self, all_versions: bool = False):
        """Deployments (``ModelVersion.deploy``), the newest of each name: state, URL, stats."""
        from .serving import list_deployments
        return list_deployments(self, all_versions)

    def deployment(self, name: str):
        """The newest deployment called ``name``."""
        from .serving import get_deployment
        return get_deployment(self, name)


def _hold_supervisor_lock(run_dir: Path):
    """The run's supervisor lock, held (as a supervisor would) until the file is closed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(run_dir / SUPERVISOR_LOCK, "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def supervisor_alive(run_dir: Path) -> bool:
    """A supervisor holds an exclusive lock on ``supervisor.lock`` for as long as it lives."""
    lock = run_dir / SUPERVISOR_LOCK
    if not lock.exists():
        return False
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


class Experiment:
    """A named group of runs; runs are numbered 1, 2, ... within it."""

    def __init__(self, workspace: Workspace, name: str):
        self.workspace, self.name = workspace, name

    def __repr__(self) -> str:
        return f"Experiment({self.name!r})"

    def runs(self, status: Iterable[str] | None = None) -> list[Run]:
        return self.workspace.runs(experiment=self.name, status=status)

    def submit(self, script: str, source_dir: str | os.PathLike = ".", args: Sequence = (),
               environment: Environment | None = None, gpus: Any = "auto", *,
               params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
               memory: str | None = None, cpus: float | None = None, shm_size: str = "2g",
               env_vars: Mapping[str, str] | None = None,
               mounts: Mapping[str, str] | None = None, timeout: float | None = None,
               target: str = "docker", network: str | None = None,
               snapshot_limit_mb: float = DEFAULT_LIMIT_MB,
               lib_packages: Sequence[str] = (), nodes: int = 1,
               procs_per_node: int | None = None, launcher: str | None = None,
               warm: bool | None = None) -> Run:
        """Start ``script`` from ``source_dir`` in a container; returns at once with the run.

        ``gpus``: "auto" (all GPUs when the engine has a GPU runtime), "all", "none", a count or
        a list of device ids.  ``mounts``: {host path: container path}, read-only.  ``memory``
        and ``shm_size`` take Docker sizes ("8g"); ``timeout`` is in seconds.
        ``lib_packages``: extra pure-Python host packages mounted for the run (celltrain always).
        ``nodes`` × ``procs_per_node`` processes started by ``launcher`` ("torchrun"): see the
        README's "Distributed runs"; ``procs_per_node`` defaults to each node's GPU count.
        ``warm``: False starts the run cold (default: unless ``CELLTRAIN_WARM=0``).

        In [1]: run = ws.experiment("birds").submit("train.py", "./src", args=["--epochs", 3])
        In [2]: run.wait(show_output=True)
        """
        spec = self.make_spec(script, source_dir, args, environment, gpus, params=params,
                              tags=tags, memory=memory, cpus=cpus, shm_size=shm_size,
                              env_vars=env_vars, mounts=mounts, timeout=timeout, target=target,
                              network=network, lib_packages=lib_packages, nodes=nodes,
                              procs_per_node=procs_per_node, launcher=launcher)
        if warm is not None:
            spec = spec.replace(warm=bool(warm))
        return self.submit_spec(spec, snapshot_limit_mb=snapshot_limit_mb)

    def make_spec(self, script: str, source_dir: str | os.PathLike = ".", args: Sequence = (),
                  environment: Environment | None = None, gpus: Any = "auto", *,
                  params: Mapping[str, Any] | None = None,
                  tags: Mapping[str, str] | None = None, memory: str | None = None,
                  cpus: float | None = None, shm_size: str = "2g",
                  env_vars: Mapping[str, str] | None = None,
                  mounts: Mapping[str, str] | None = None, timeout: float | None = None,
                  target: str = "docker", network: str | None = None,
                  lib_packages: Sequence[str] = (), nodes: int = 1,
                  procs_per_node: int | None = None, launcher: str | None = None) -> RunSpec:
        """``submit()``'s arguments checked and made a spec its target validated (sweeps
        build their base spec with it)."""
        from .options import check_options, check_script, parse_gpus
        from .targets import target_class
        source = Path(source_dir).expanduser().resolve()
        if not source.is_dir():
            raise FileNotFoundError(f"source folder {source} does not exist: pass source_dir= "
                                    f"the folder that holds {script}")
        script = check_script(source, script)
        kind, settings = self.workspace.resolve_target(target)
        target_cls = target_class(kind)
        checked = check_options(memory=memory, cpus=cpus, shm_size=shm_size, env_vars=env_vars,
                                mounts=mounts, timeout=timeout, network=network)
        for name in lib_packages:
            __import__(name)   # fails now, with the package's name, not in the container
        spec = RunSpec(
            script=script, source_dir=str(source), args=[str(a) for a in args],
            environment=environment or Environment(),
            resources=Resources(gpus=gpus if gpus == "auto" else parse_gpus(gpus),
                                memory=checked["memory"], cpus=checked["cpus"],
                                shm_size=checked["shm_size"], timeout=checked["timeout"]),
            params=dict(params or {}), tags=dict(tags or {}), env_vars=checked["env_vars"],
            mounts=checked["mounts"], network=checked["network"], target=target,
            target_settings=settings,
            distribution=Distribution(nodes=nodes, procs_per_node=procs_per_node,
                                      launcher=launcher),
            lib_packages=["celltrain", *lib_packages])
        return target_cls.validate(spec, settings)

    def sweep(self, script: str, source_dir: str | os.PathLike = ".", args: Sequence = (),
              environment: Environment | None = None, gpus: Any = "auto", **kwargs: Any):
        """Start a hyperparameter sweep on Optuna: one child run per trial
        (``celltrain.sweep.submit.submit_sweep`` has the arguments); returns its ``Sweep``."""
        from .sweep.submit import submit_sweep
        return submit_sweep(self, script, source_dir, args, environment, gpus, **kwargs)

    def submit_spec(self, spec: RunSpec, *, snapshot_limit_mb: float = DEFAULT_LIMIT_MB,
                    validated: bool = True) -> Run:
        """Start the run ``spec`` describes; ``submit()``, ``%train rerun`` and sweeps end here.

        ``validated=False`` checks the spec against its target first (a spec read back from
        a stored run, say).
        """
        from .targets import target_class
        kind, settings = self.workspace.resolve_target(spec.target)
        if not validated:
            spec = target_class(kind).validate(spec.replace(target_settings=settings), settings)
        source, target = Path(spec.source_dir), kind
        store = self.workspace.store
        # Check the snapshot size before the run exists: a refused submission leaves nothing.
        from .snapshot import check_size, collect
        files = collect(source)
        check_size(source, files, snapshot_limit_mb)
        # The run's supervisor lock is taken inside the transaction that creates the row, and
        # held while the code is copied: no reconcile elsewhere ever sees the run without it,
        # and if this process dies here the lock goes with it (reconcile then fails the run).
        held: list = []

        def locked_run_id(experiment: str, number: int) -> str:
            run_id = new_run_id(experiment, number)
            held.append(_hold_supervisor_lock(store.run_dir(run_id)))
            return run_id

        try:
            record = store.create_run(
                self.name, run_id_for=locked_run_id, status=states.QUEUED, target=target,
                script=spec.script, args=list(spec.args), params=dict(spec.params),
                tags=dict(spec.tags), environment=spec.environment.to_dict(),
                options=spec.legacy_options(), spec=spec.to_dict(), kind=spec.kind,
                parent_id=spec.parent)
        except BaseException:
            for lock in held:
                lock.close()
                shutil.rmtree(Path(lock.name).parent, ignore_errors=True)
            raise
        run_id = record["id"]
        run_dir = store.run_dir(run_id)
        with held[-1]:
            try:
                snapshot(source, run_dir / PARTIAL_SNAPSHOT, snapshot_limit_mb, files)
                os.rename(run_dir / PARTIAL_SNAPSHOT, run_dir / SNAPSHOT)
            except BaseException as e:
                store.set_status(run_id, states.FAILED, reason=(
                    f"could not snapshot {source}: {e}" if isinstance(e, Exception) else
                    "submit was interrupted while copying the code; nothing ran: submit it "
                    "again"))
                raise
        self.workspace.spawn_supervisor(run_id)
        return Run(self.workspace, run_id)
