"""``azureml.core.model``: v1's ``Model`` over celltrain's registry, ``Model.deploy`` over
celltrain serving, and ``InferenceConfig``.  Stdlib at module level: ``Model.get_model_path``
runs inside a deployment, where ``AZUREML_MODEL_DIR`` holds the served version's files."""
import os

from .uncovered import Uncovered, not_covered


class InferenceConfig:
    def __init__(self, entry_script, runtime=None, conda_file=None, extra_docker_file_steps=None,
                 source_directory=None, enable_gpu=None, description=None, base_image=None,
                 base_image_registry=None, cuda_version=None, environment=None):
        if base_image:
            raise NotImplementedError("InferenceConfig(base_image=...): deployments use the "
                                      "celltrain base image; add packages with environment=")
        self.entry_script, self.source_directory = entry_script, source_directory
        self.environment = environment


def _served_path(folder):
    entries = sorted(os.listdir(folder))
    return os.path.join(folder, entries[0]) if len(entries) == 1 else folder


class Model(Uncovered):
    """A registered model version (the latest unless ``version=``)."""

    _v1_name = "Model"
    _v1_hints = {"package": "celltrain deploys a version directly: Model.deploy(...)",
                 "profile": "serve it (Model.deploy) and read the deployment's serve/* metrics"}

    def __init__(self, workspace, name=None, id=None, tags=None, properties=None, version=None,
                 run_id=None, **kwargs):
        if name is None and id is not None:
            name, _, v = str(id).partition(":")
            version = version or (int(v) if v else None)
        self.workspace = workspace
        self._version = workspace.celltrain.model(name, version)
        self.name, self.version = self._version.name, self._version.version
        self.id = f"{self.name}:{self.version}"
        self.tags = dict(self._version.tags)
        self.description = self._version.description
        self.run_id = self._version.run_id
        self.properties = dict(self._version.tags)

    @staticmethod
    def get_model_path(model_name, version=None, _workspace=None):
        served = os.environ.get("AZUREML_MODEL_DIR")
        if served and _workspace is None:
            return _served_path(served)
        if _workspace is None:
            raise NotImplementedError(
                f"Model.get_model_path({model_name!r}) outside a deployment: pass "
                f"_workspace=ws, or use celltrain: ws.model({model_name!r}).path")
        return str(Model(_workspace, model_name, version=version)._version.path)

    def download(self, target_dir=".", exist_ok=False, exists_ok=None):
        return str(self._version.download(target_dir, exist_ok=bool(exist_ok or exists_ok)))

    @staticmethod
    def register(workspace, model_path, model_name, tags=None, properties=None,
                 description=None, **kwargs):
        raise NotImplementedError(
            f"Model.register(ws, {model_path!r}, {model_name!r}): celltrain registers a file "
            "of a run: run.register_model(model_name, 'outputs/...')")

    @staticmethod
    def list(workspace, name=None, **kwargs):
        return [Model(workspace, v.name, version=v.version) for v in workspace.celltrain.models()
                if name is None or v.name == name]

    @staticmethod
    def deploy(workspace, name, models, inference_config=None, deployment_config=None,
               deployment_target=None, overwrite=False, show_output=False):
        from .webservice import deploy
        return deploy(workspace, name, models, inference_config, deployment_config, overwrite)

    def __repr__(self):
        return f"Model(workspace={self.workspace.name!r}, name={self.name!r}, " \
               f"version={self.version})"


def register_from_run(run, model_name, model_path, tags, properties, description):
    handle = run._submitted("register_model")
    if not model_path:
        raise ValueError(f"register_model({model_name!r}): pass model_path=, a file or folder "
                         f"of the run, e.g. 'outputs/model.pt'; its files: "
                         f"{handle.files()[:10]}")
    merged = {**(properties or {}), **(tags or {})}
    version = handle.register_model(model_name, model_path, tags=merged or None,
                                    description=description)
    return Model(run.experiment.workspace, version.name, version=version.version)


__getattr__ = not_covered("azureml.core.model")
