"""The run spec: everything that says what a run is, as one typed value.

``Experiment.submit()``, ``%%train``, ``%train rerun``, sweeps and the Azure ML layer all build a
``RunSpec``; the store keeps it as versioned JSON in the run's row (``to_dict``/``from_dict``);
the supervisor hands it to the run's compute target, which reads the parts it understands.
Rows written before the spec existed (script, args, environment and an ``options`` dict in
their own columns) are read by ``RunSpec.from_record``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from .environment import Environment

SPEC_VERSION = 1
RUN_KINDS = ("run", "sweep", "trial", "deployment")
WARM_ENV, WARM_IDLE_ENV = "CELLTRAIN_WARM", "CELLTRAIN_WARM_IDLE"
DEFAULT_WARM_IDLE_S = 300.0


def warm_from_env() -> bool:
    """Warm starts unless the submitting process has ``CELLTRAIN_WARM=0`` (or off/false/no)."""
    return os.environ.get(WARM_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def warm_idle_from_env() -> float:
    """How long a warm worker waits for the next run: ``CELLTRAIN_WARM_IDLE`` seconds."""
    text = os.environ.get(WARM_IDLE_ENV, "")
    try:
        value = float(text) if text else DEFAULT_WARM_IDLE_S
    except ValueError:
        raise ValueError(f"{WARM_IDLE_ENV}={text!r}: give the idle time in seconds, "
                         "e.g. 300") from None
    if value <= 0:
        raise ValueError(f"{WARM_IDLE_ENV}={text!r}: give a positive number of seconds "
                         f"(turn warm starts off with {WARM_ENV}=0)")
    return value
DEFAULT_SHM = "2g"


@dataclass
class Resources:
    """What one node of the run may use.  ``gpus``: "auto", "all", "none", a count or ids."""
    gpus: Any = "auto"
    memory: str | int | None = None
    cpus: float | str | None = None
    shm_size: str | int | None = DEFAULT_SHM
    timeout: float | None = None


@dataclass
class Distribution:
    """How many processes run the script: ``nodes`` × ``procs_per_node``, started by ``launcher``.

    One node and one process (the default) needs no launcher.  ``procs_per_node=None`` means one
    per GPU where GPUs are given, else one.
    """
    nodes: int = 1
    procs_per_node: int | None = None
    launcher: str | None = None

    @property
    def distributed(self) -> bool:
        return self.nodes > 1 or (self.procs_per_node or 1) > 1 or self.launcher is not None


@dataclass
class RunSpec:
    """A run: the script and its arguments, where it runs and with what."""
    script: str
    source_dir: str = "."
    args: list[str] = field(default_factory=list)
    environment: Environment = field(default_factory=Environment)
    resources: Resources = field(default_factory=Resources)
    distribution: Distribution = field(default_factory=Distribution)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)
    network: str | None = None
    target: str = "docker"
    target_settings: dict[str, Any] = field(default_factory=dict)
    lib_packages: list[str] = field(default_factory=lambda: ["celltrain"])
    kind: str = "run"
    parent: str | None = None
    # kind "sweep": its space, sampler, policy, metric and goal (celltrain.sweep.config)
    sweep: dict[str, Any] = field(default_factory=dict)
    # {port inside: [host address, host port]}: published by the target (a deployment's);
    # the process reads where to listen from CELLTRAIN_PORTS ({port inside: [address, port]}).
    ports: dict[str, list] = field(default_factory=dict)
    # A module that runs the script: ``python -m BOOT SCRIPT ARGS`` (the Azure ML layer's
    # celltrain.runtime.azureml_boot).  ``script`` stays what the user ran, for every view.
    boot: str | None = None
    # Start warm where the target can (targets/docker/warm.py): read at submit from the
    # submitting process's CELLTRAIN_WARM and CELLTRAIN_WARM_IDLE, stored with the run.
    warm: bool = field(default_factory=warm_from_env)
    warm_idle_s: float = field(default_factory=warm_idle_from_env)

    def command(self) -> list[str]:
        """What follows ``python -u`` (or a rank wrapper): the script and its arguments, behind
        the boot module when there is one."""
        return [*(["-m", self.boot] if self.boot else []), self.script, *self.args]

    def replace(self, **changes: Any) -> "RunSpec":
        """A copy with some fields changed (``resources=`` etc. take whole values)."""
        return dataclasses.replace(self, **changes)

    def legacy_options(self) -> dict[str, Any]:
        """The ``options`` column as rows before the spec had it (read back by from_record)."""
        res = self.resources
        return {"gpus": res.gpus, "memory": res.memory, "cpus": res.cpus,
                "shm_size": res.shm_size, "timeout": res.timeout, "env_vars": dict(self.env_vars),
                "mounts": dict(self.mounts), "network": self.network,
                "source_dir": self.source_dir, "lib_packages": list(self.lib_packages)}

    # -- stored form ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["environment"] = self.environment.to_dict()
        out["version"] = SPEC_VERSION
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        version = d.get("version")
        if version != SPEC_VERSION:
            raise ValueError(f"run spec version {version!r} is not one this celltrain reads "
                             f"({SPEC_VERSION}): upgrade celltrain")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["environment"] = Environment.from_dict(d.get("environment") or {})
        values["resources"] = Resources(**(d.get("resources") or {}))
        values["distribution"] = Distribution(**(d.get("distribution") or {}))
        return cls(**values)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "RunSpec":
        """The spec of a stored run: its ``spec`` column, or, for rows older than the spec,
        the columns and ``options`` they were written with."""
        if record.get("spec"):
            return cls.from_dict(record["spec"])
        opts = record.get("options") or {}
        return cls(
            script=record["script"], source_dir=opts.get("source_dir", "."),
            args=list(record.get("args") or []),
            environment=Environment.from_dict(record.get("environment") or {}),
            resources=Resources(gpus=opts.get("gpus", "auto"), memory=opts.get("memory"),
                                cpus=opts.get("cpus"),
                                shm_size=opts.get("shm_size") or DEFAULT_SHM,
                                timeout=opts.get("timeout")),
            params=dict(record.get("params") or {}), tags=dict(record.get("tags") or {}),
            env_vars=dict(opts.get("env_vars") or {}), mounts=dict(opts.get("mounts") or {}),
            network=opts.get("network"), target=record.get("target") or "docker",
            lib_packages=list(opts.get("lib_packages") or ["celltrain"]))
