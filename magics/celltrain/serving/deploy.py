"""``ModelVersion.deploy``: a registered version as a deployment run on a compute target.

The run's code snapshot is a folder made here: the version's files under ``model/``, the entry
script's ``source_dir`` under ``src/``, ``serve.json`` (what to serve, how to batch) and a
two-line launcher.  So the snapshot records exactly what was served, and no target needs to
know about models: it runs a script, publishes a port (``RunSpec.ports``) and passes env vars.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..environment import Environment
from ..runtime.wire import SERVE_TOKEN_ENV
from ..spec import Resources, RunSpec
from ..snapshot import DEFAULT_LIMIT_MB
from .deployment import EXPERIMENT, Deployment, DeploymentError, active_deployment

if TYPE_CHECKING:
    from ..registry.version import ModelVersion

PORT_INSIDE = "8080"
LAUNCHER = "serve_main.py"
LAUNCHER_CODE = ("import sys\nfrom celltrain.runtime.serve import main\n"
                 "sys.exit(main())\n")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
TOKEN_ENV = SERVE_TOKEN_ENV


def free_port(host: str) -> int:
    """A port nobody listens on now (the engine or the process binds it a moment later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _check(name: Any, port: Any, max_batch_size: Any, max_latency_ms: Any) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"a deployment name takes lower-case letters, digits and '-' (at most "
                         f"63, as Azure's service names), not {name!r}")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool)
                             or not 1 <= port <= 65535):
        raise ValueError(f"port takes a number from 1 to 65535 (or None: a free one), not "
                         f"{port!r}")
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ValueError(f"max_batch_size takes a whole number >= 1 (1: no batching), not "
                         f"{max_batch_size!r}")
    if not isinstance(max_latency_ms, (int, float)) or not 0 <= max_latency_ms <= 10_000:
        raise ValueError(f"max_latency_ms takes milliseconds from 0 to 10000, not "
                         f"{max_latency_ms!r}")


def _torch_file(version: "ModelVersion") -> str | None:
    from ..registry.names import FILES, TORCH_SUFFIXES
    files = [f for f in version.files() if f.endswith(TORCH_SUFFIXES)]
    return f"model/{FILES}/{files[0]}" if len(files) == 1 else None


def _environment(version: "ModelVersion", environment, target_cls, onnx: bool,
                 cache_dir: Path, notify) -> Environment:
    """The model's environment (or the one given), with onnxruntime added where the image
    lacks it and the model is served by it."""
    env = environment or Environment.from_dict(version.environment or {})
    if not onnx or any(p.lower().startswith("onnxruntime") for p in env.pip):
        return env
    try:
        facts = target_cls.describe_environment(env, cache_dir)
    except Exception:  # noqa: BLE001  (no engine now: the run will say so)
        facts = {"packages": None}
    if facts is None:                        # this kernel's own Python: it has onnxruntime
        return env
    packages = {k.lower() for k in (facts.get("packages") or {})}
    if "onnxruntime" in packages:
        return env
    notify("the deployment's image has no onnxruntime: adding pip=['onnxruntime'] to its "
           "environment (installed from PyPI once, then cached)")
    return Environment.from_dict({**env.to_dict(), "pip": [*env.pip, "onnxruntime"]})


def _stage(version: "ModelVersion", folder: Path, entry_script, source_dir, config) -> None:
    shutil.copytree(version.folder, folder / "model",
                    ignore=shutil.ignore_patterns(".tmp-*"))
    if entry_script is not None:
        src = Path(source_dir or ".").expanduser().resolve()
        if not (src / entry_script).is_file():
            raise FileNotFoundError(f"entry_script {entry_script!r} is not in source_dir "
                                    f"{src}: pass source_dir= the folder that holds it")
        shutil.copytree(src, folder / "src", ignore=shutil.ignore_patterns(
            ".git", "__pycache__", ".celltrain", ".ipynb_checkpoints"))
        config["entry_script"] = f"src/{entry_script}"
    (folder / "serve.json").write_text(json.dumps(config, indent=1))
    (folder / LAUNCHER).write_text(LAUNCHER_CODE)


def deploy(version: "ModelVersion", name: str, entry_script: str | None = None,
           source_dir: str | os.PathLike | None = None, environment: Environment | None = None,
           port: int | None = None, auth: bool = False, target: str = "docker",
           host: str = "127.0.0.1", max_batch_size: int = 16, max_latency_ms: float = 2.0,
           memory: str | None = None, cpus: float | None = None, network: str | None = None,
           wait: bool = True,
           timeout: float = 900.0, notify=print) -> Deployment:
    """Serve ``version`` as deployment ``name``; see ``ModelVersion.deploy``."""
    from ..options import check_options
    from ..targets import target_class
    _check(name, port, max_batch_size, max_latency_ms)
    ws = version.workspace
    running = active_deployment(ws, name)
    if running is not None:
        raise DeploymentError(f"deployment {name!r} is already {running.state} at "
                              f"{running.url}: stop it first (ws.deployment({name!r}).stop()) "
                              "or give the new one another name")
    kind, settings = ws.resolve_target(target)
    target_cls = target_class(kind)
    onnx = version.onnx
    if onnx is None and entry_script is None and _torch_file(version) is None:
        raise DeploymentError(f"{version.name}:{version.version} has neither an ONNX artifact "
                              "nor one torch file to serve: export it (m.export_onnx(...)) or "
                              "pass entry_script=")
    port = free_port(host) if port is None else port
    config = {"name": version.name, "version": version.version, "model_dir": "model/files",
              "onnx": f"model/{onnx.info['path']}" if onnx else None,
              "torch": _torch_file(version), "max_batch_size": max_batch_size,
              "max_latency_ms": float(max_latency_ms)}
    env = _environment(version, environment, target_cls, onnx is not None,
                       ws.path / "image-facts", notify)
    checked = check_options(memory=memory, cpus=cpus, shm_size="256m", env_vars=None,
                            mounts=None, timeout=None, network=network)
    token = secrets.token_urlsafe(24) if auth else None
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    staging = ws.path / "deployments" / f".staging-{name}-{secrets.token_hex(4)}"
    staging.mkdir(parents=True)
    try:
        _stage(version, staging, entry_script, source_dir, config)
        size_mb = sum(f.stat().st_size for f in staging.rglob("*") if f.is_file()) / 2**20
        spec = RunSpec(
            script=LAUNCHER, source_dir=str(staging), environment=env,
            resources=Resources(gpus="none", memory=checked["memory"], cpus=checked["cpus"],
                                shm_size=checked["shm_size"]),
            tags={"deployment": name, "model": f"{version.name}:{version.version}",
                  "url": url, "auth": "bearer" if auth else "none"},
            params={"max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms},
            env_vars={TOKEN_ENV: token} if token else {}, target=target,
            network=checked["network"], target_settings=settings, kind="deployment",
            ports={PORT_INSIDE: [host, port]})
        run = ws.experiment(EXPERIMENT).submit_spec(
            target_cls.validate(spec, settings),
            snapshot_limit_mb=max(DEFAULT_LIMIT_MB, size_mb + 16))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    deployment = Deployment(ws, run.id)
    if wait:
        deployment.wait(timeout=timeout)
    return deployment

