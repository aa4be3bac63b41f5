"""v1 job configurations (``ScriptRunConfig``, the estimators) onto a celltrain ``RunSpec``.

The spec runs ``python -m celltrain.runtime.azureml_boot SCRIPT ARGS`` (``RunSpec.boot``: the
stored script is still the user's) with ``CELLTRAIN_AZUREML=1``, so the unchanged script's
``azureml`` imports resolve in the container.
"""
from __future__ import annotations

from ..runtime.azureml_names import ENABLE_ENV
from .uncovered import Uncovered

BOOT = "celltrain.runtime.azureml_boot"


class Job:
    """What every v1 configuration comes down to (fields filled by the subclasses)."""

    source_directory = "."
    script = None
    arguments: list = []
    compute_target = None
    environment = None
    pip_packages: list = []
    use_gpu = None
    node_count = 1
    process_count_per_node = None
    distributed = None
    environment_variables: dict = {}
    shm_size = None
    max_run_duration_seconds = None

    def target_name(self, ws) -> str:
        target = self.compute_target
        if target is None or target == "local":
            return "local" if target == "local" else "docker"
        return target if isinstance(target, str) else target.name

    def gpus(self, ws, target: str):
        if self.use_gpu is not None:
            return "all" if self.use_gpu else "none"
        from .compute import compute_records, is_gpu_size
        return "all" if is_gpu_size(compute_records(ws).get(target, {}).get("vm_size")) else "none"

    def to_spec(self, experiment, tags: dict):
        from .environment import Environment
        from .runconfig import distribution
        if not self.script:
            raise ValueError(f"{type(self).__name__} needs the script to run: pass "
                             "entry_script= (estimators) or script= (ScriptRunConfig)")
        ws = experiment.workspace
        target = self.target_name(ws)
        env = self.environment or Environment()
        environment = env.to_celltrain(self.pip_packages, None)
        env_vars = {**(self.environment_variables or {}), ENABLE_ENV: "1"}
        spec = experiment.celltrain.make_spec(
            self.script, self.source_directory, [str(a) for a in self.arguments],
            environment, self.gpus(ws, target), tags={k: str(v) for k, v in tags.items()},
            shm_size=self.shm_size or "2g", env_vars=env_vars,
            timeout=self.max_run_duration_seconds, target=target)
        return spec.replace(
            boot=BOOT,
            distribution=distribution(self.distributed, self.node_count,
                                      self.process_count_per_node))


class ScriptRunConfig(Job, Uncovered):
    _v1_name = "ScriptRunConfig"

    def __init__(self, source_directory=".", script=None, arguments=None, run_config=None,
                 _telemetry_values=None, compute_target=None, environment=None,
                 distributed_job_config=None, resume_from=None, max_run_duration_seconds=None,
                 command=None, docker_runtime_config=None):
        if command is not None:
            raise NotImplementedError("ScriptRunConfig(command=...): celltrain runs a Python "
                                      "script: pass script= and arguments=")
        self.source_directory, self.script = source_directory, script
        self.arguments = list(arguments or [])
        self.run_config = run_config
        self.compute_target = compute_target or getattr(run_config, "target", None)
        self.environment = environment or getattr(run_config, "environment", None)
        self.distributed = distributed_job_config
        dist = distributed_job_config
        self.node_count = getattr(dist, "node_count", None) or getattr(
            run_config, "node_count", 1) or 1
        self.environment_variables = dict(getattr(run_config, "environment_variables", {})
                                          or {})
        docker = docker_runtime_config or getattr(run_config, "docker", None)
        self.shm_size = getattr(docker, "shm_size", None)
        self.max_run_duration_seconds = max_run_duration_seconds


def submit_job(experiment, config, tags: dict):
    from .hyperdrive import HyperDriveConfig, submit_hyperdrive
    if isinstance(config, HyperDriveConfig):
        return submit_hyperdrive(experiment, config, tags)
    if not isinstance(config, Job):
        raise TypeError(f"experiment.submit({config!r}): pass a ScriptRunConfig, an "
                        "estimator (PyTorch, Estimator) or a HyperDriveConfig")
    return experiment.celltrain.submit_spec(config.to_spec(experiment, tags))
