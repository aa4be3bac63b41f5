"""``azureml.train.dnn`` and ``azureml.train.estimator``: v1's estimators as celltrain jobs."""
from __future__ import annotations

from .environment import conda_to_pip
from .jobs import Job
from .uncovered import Uncovered, not_covered


def _script_args(script_params) -> list:
    """v1's ``script_params``: {"--lr": 0.01, "--flag": ""} or a list."""
    if script_params is None:
        return []
    if isinstance(script_params, dict):
        out = []
        for k, v in script_params.items():
            out.append(str(k))
            if v not in ("", None):
                out.append(str(v))
        return out
    return [str(a) for a in script_params]


class Estimator(Job, Uncovered):
    _v1_name = "Estimator"

    def __init__(self, source_directory, *, compute_target=None, vm_size=None,
                 vm_priority=None, entry_script=None, script_params=None, node_count=1,
                 process_count_per_node=None, distributed_backend=None,
                 distributed_training=None, use_gpu=False, use_docker=True,
                 custom_docker_base_image=None, custom_docker_image=None, image_registry_details=None,
                 user_managed=False, conda_packages=None, pip_packages=None,
                 conda_dependencies_file_path=None, pip_requirements_file_path=None,
                 conda_dependencies_file=None, pip_requirements_file=None,
                 environment_variables=None, environment_definition=None, inputs=None,
                 source_directory_data_store=None, shm_size=None, resume_from=None,
                 max_run_duration_seconds=None, framework_version=None, **kwargs):
        if custom_docker_image or custom_docker_base_image:
            raise NotImplementedError(
                "custom_docker_image=: runs use the celltrain base image; add packages with "
                "pip_packages= (or celltrain.Environment(base_image=...) with celltrain directly)")
        if inputs:
            raise NotImplementedError("inputs= (datasets): mount a host folder with celltrain "
                                      "directly: submit(..., mounts={host: inside})")
        self.source_directory, self.script = source_directory, entry_script
        self.arguments = _script_args(script_params)
        self.compute_target = compute_target
        self.node_count = node_count or 1
        self.process_count_per_node = process_count_per_node
        self.distributed = distributed_training
        if distributed_backend is not None and distributed_training is None:
            from .runconfig import MpiConfiguration, PyTorchConfiguration
            self.distributed = {"mpi": MpiConfiguration(process_count_per_node or 1, self.node_count),
                                "nccl": PyTorchConfiguration("nccl", None, self.node_count),
                                "gloo": PyTorchConfiguration("gloo", None, self.node_count)
                                }.get(str(distributed_backend).lower())
            if self.distributed is None:
                raise ValueError(f"distributed_backend={distributed_backend!r}: use 'mpi', "
                                 "'nccl' or 'gloo'")
        self.use_gpu = bool(use_gpu)
        self.pip_packages = [*(pip_packages or []), *conda_to_pip(conda_packages)]
        if pip_requirements_file_path or pip_requirements_file:
            from .environment import Environment
            env = Environment.from_pip_requirements("requirements",
                                                    pip_requirements_file_path or pip_requirements_file)
            self.pip_packages += env.python.conda_dependencies.pip()
        self.environment = environment_definition
        self.environment_variables = dict(environment_variables or {})
        self.shm_size = shm_size
        self.max_run_duration_seconds = max_run_duration_seconds
        self.framework_version = framework_version


class PyTorch(Estimator):
    """v1's PyTorch estimator: torch comes with the celltrain base image (``framework_version``
    is recorded, not installed)."""

    _v1_name = "PyTorch"


__getattr__ = not_covered("azureml.train.dnn", {
    "TensorFlow": "celltrain's base image has PyTorch: use Estimator(pip_packages="
                  "['tensorflow']) or ScriptRunConfig with such an Environment",
    "Chainer": "Chainer is not supported: port the script to PyTorch"})
