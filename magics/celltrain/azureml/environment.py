"""``azureml.core.environment`` and ``azureml.core.conda_dependencies``: v1's Environment and
CondaDependencies as a celltrain ``Environment`` (pip and apt packages on the base image)."""
from __future__ import annotations

from .uncovered import Uncovered, not_covered

# conda names whose PyPI name is obvious; anything else is refused, naming the fix.
CONDA_TO_PIP = {"pytorch": "torch", "torchvision": "torchvision", "numpy": "numpy",
                "pandas": "pandas", "scikit-learn": "scikit-learn", "scipy": "scipy",
                "matplotlib": "matplotlib", "pillow": "pillow", "pip": None, "python": None,
                "cudatoolkit": None, "tqdm": "tqdm", "onnx": "onnx"}


def conda_to_pip(packages) -> list[str]:
    out = []
    for spec in packages or []:
        name, _, version = str(spec).partition("=")
        name = name.strip().lower()
        if name not in CONDA_TO_PIP:
            raise ValueError(
                f"conda package {spec!r} has no obvious PyPI name: celltrain builds with pip "
                f"and apt, not conda; pass it as pip_packages=[...] (its PyPI name) or "
                f"Environment(apt=[...]) for a system library")
        pip_name = CONDA_TO_PIP[name]
        if pip_name:       # python, pip and cudatoolkit come with the base image
            out.append(pip_name + (f"=={version.strip('=')}" if version else ""))
    return out


class CondaDependencies(Uncovered):
    _v1_name = "CondaDependencies"

    def __init__(self, conda_dependencies_file_path=None, _underlying_structure=None):
        self.pip_packages: list[str] = []
        self.conda_packages: list[str] = []

    @classmethod
    def create(cls, pip_packages=None, conda_packages=None, python_version=None, **kwargs):
        deps = cls()
        for p in pip_packages or []:
            deps.add_pip_package(p)
        for p in conda_packages or []:
            deps.add_conda_package(p)
        return deps

    def add_pip_package(self, pip_package: str) -> None:
        self.pip_packages.append(str(pip_package))

    def add_conda_package(self, conda_package: str) -> None:
        conda_to_pip([conda_package])      # refused now, not at submit
        self.conda_packages.append(str(conda_package))

    def pip(self) -> list[str]:
        return [*self.pip_packages, *conda_to_pip(self.conda_packages)]


class PythonSection:
    def __init__(self):
        self.conda_dependencies = CondaDependencies()
        self.user_managed_dependencies = False
        self.interpreter_path = "python"


class DockerSection:
    def __init__(self):
        self.enabled = True
        self.base_image = None
        self.shm_size = None


class Environment(Uncovered):
    """v1's Environment: its pip (and obvious conda) packages and variables are kept."""

    _v1_name = "Environment"
    _v1_hints = {"register": "environments are values in celltrain: keep it in a variable",
                 "build": "celltrain builds the image at submit, cached by content"}

    def __init__(self, name: str = "celltrain"):
        self.name = name
        self.python = PythonSection()
        self.docker = DockerSection()
        self.environment_variables: dict[str, str] = {}
        self.apt_packages: list[str] = []

    @classmethod
    def get(cls, workspace, name, version=None, label=None):
        raise NotImplementedError(
            f"Environment.get(ws, {name!r}): curated Azure environments do not exist here; "
            "make one: Environment(name) with python.conda_dependencies = "
            "CondaDependencies.create(pip_packages=[...]), or celltrain.Environment(pip=[...])")

    @classmethod
    def from_pip_requirements(cls, name, file_path, pip_version=None):
        env = cls(name)
        with open(file_path) as f:
            for line in f:
                line = line.split("#")[0].strip()
                if line and not line.startswith("-"):
                    env.python.conda_dependencies.add_pip_package(line)
        return env

    @classmethod
    def from_conda_specification(cls, name, file_path):
        raise NotImplementedError(
            f"Environment.from_conda_specification({name!r}, {file_path!r}): celltrain builds "
            "with pip and apt: use Environment.from_pip_requirements or "
            "celltrain.Environment(pip=[...], apt=[...])")

    def to_celltrain(self, extra_pip=(), env_vars=None):
        from ..environment import Environment as CelltrainEnvironment
        pip = [*self.python.conda_dependencies.pip(), *extra_pip]
        return CelltrainEnvironment(pip=list(dict.fromkeys(pip)), apt=list(self.apt_packages),
                                    env={**self.environment_variables, **(env_vars or {})})


__getattr__ = not_covered("azureml.core.environment")
