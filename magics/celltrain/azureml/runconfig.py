"""``azureml.core.runconfig``: v1's distributed-job configurations as celltrain's
``Distribution`` (torchrun for PyTorchConfiguration, Open MPI for MpiConfiguration)."""
from __future__ import annotations

from .uncovered import Uncovered, not_covered


class MpiConfiguration:
    launcher = "mpi"

    def __init__(self, process_count_per_node: int = 1, node_count: int = 1):
        self.process_count_per_node, self.node_count = process_count_per_node, node_count


class PyTorchConfiguration:
    launcher = "torchrun"

    def __init__(self, communication_backend: str = "nccl", process_count: int | None = None,
                 node_count: int = 1):
        self.communication_backend = communication_backend
        self.process_count, self.node_count = process_count, node_count


class TensorflowConfiguration:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            "TensorflowConfiguration: celltrain launches distributed runs with torchrun or "
            "Open MPI: use MpiConfiguration(process_count_per_node=, node_count=) for "
            "Horovod-style jobs")


class DockerConfiguration:
    def __init__(self, use_docker: bool = True, shm_size: str | None = None, **kwargs):
        self.use_docker, self.shm_size = use_docker, shm_size


class RunConfiguration(Uncovered):
    _v1_name = "RunConfiguration"

    def __init__(self, script=None, arguments=None, framework=None, communicator=None,
                 conda_dependencies=None, **kwargs):
        self.target = None
        self.environment = None
        self.node_count = 1
        self.environment_variables: dict[str, str] = {}
        self.docker = DockerConfiguration()


def distribution(config, node_count: int = 1, process_count_per_node: int | None = None):
    """(nodes, processes per node, launcher) of a v1 job; checked by celltrain's spec."""
    from ..spec import Distribution
    if config is None:
        nodes, per_node = node_count or 1, process_count_per_node
        launcher = "torchrun" if nodes > 1 or (per_node or 1) > 1 else None
        return Distribution(nodes=nodes, procs_per_node=per_node, launcher=launcher)
    if isinstance(config, MpiConfiguration):
        return Distribution(nodes=config.node_count or node_count,
                            procs_per_node=config.process_count_per_node, launcher="mpi")
    if isinstance(config, PyTorchConfiguration):
        nodes = config.node_count or node_count or 1
        per_node = (config.process_count // nodes if config.process_count
                    else process_count_per_node)
        if config.process_count and config.process_count % nodes:
            raise ValueError(f"PyTorchConfiguration(process_count={config.process_count}, "
                             f"node_count={nodes}): the processes must split evenly over "
                             "the nodes")
        return Distribution(nodes=nodes, procs_per_node=per_node, launcher="torchrun")
    raise ValueError(f"distributed_training={config!r}: pass MpiConfiguration() or "
                     "PyTorchConfiguration() from azureml.core.runconfig")


__getattr__ = not_covered("azureml.core.runconfig")
