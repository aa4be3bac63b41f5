"""``ModelVersion``: one registered version, its record, files, aliases and lifecycle."""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .artifacts import OnnxExporting
from .hashing import content_hash
from .leftovers import hold_work_lock
from .loading import TorchLoading
from .names import (FILES, TMP_PREFIX, ModelLoadError, ModelNotFound, ModelRegistrationError,
                    check_alias, load_hint)
from .register import register_version

if TYPE_CHECKING:
    from ..run import Run
    from ..workspace import Workspace


def register_model(run: "Run", name: str, path: str | os.PathLike, *,
                   tags: Mapping[str, Any] | None = None, description: str | None = None,
                   aliases: Iterable[str] = ()) -> "ModelVersion":
    """Register ``path`` (a file or folder of the run, e.g. "outputs/model.pt") as the next
    version of model ``name``; returns that version.

    In [1]: m = run.register_model("pytorch-birds", "outputs/model.pt", tags={"data": "fowl"})
    """
    return ModelVersion(run.workspace, name, register_version(
        run, name, path, tags=tags, description=description, aliases=aliases))


class ModelVersion(TorchLoading, OnnxExporting):
    """One registered version: where it came from, its files, load, export, aliases.

    It holds only (workspace, name, version) and reads the rest fresh from the store.
    """

    def __init__(self, workspace: "Workspace", name: str, version: int):
        self.workspace, self.name, self.version = workspace, name, int(version)

    def __repr__(self) -> str:
        r = self._record(missing_ok=True)
        if r is None:
            return f"<ModelVersion {self.name}:{self.version} (deleted)>"
        aliases = f" aliases={','.join(r['aliases'])}" if r["aliases"] else ""
        archived = " archived" if r["archived"] else ""
        return f"<ModelVersion {self.name}:{self.version}{aliases} run={r['run_id']}{archived}>"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ModelVersion) and other.workspace.path == self.workspace.path
                and (other.name, other.version) == (self.name, self.version))

    def __hash__(self) -> int:
        return hash((str(self.workspace.path), self.name, self.version))

    # -- what the store says ----------------------------------------------------------------
    def _record(self, missing_ok: bool = False) -> dict | None:
        r = self.workspace.store.model_version(self.name, self.version)
        if r is None and not missing_ok:
            raise ModelNotFound(f"model {self.name!r} version {self.version} no longer exists "
                                "(deleted)")
        return r

    @property
    def record(self) -> dict[str, Any]:
        """The version's row with its aliases, experiment and image, fresh from the store."""
        return self._record()

    @property
    def run_id(self) -> str | None:
        return self.record["run_id"]

    @property
    def run(self):
        """The run that produced this version (a handle from the workspace, so the registry
        does not import ``celltrain.run``, which imports it)."""
        return self.workspace.run(self.run_id)

    @property
    def experiment(self) -> str | None:
        return self.record["experiment"]

    @property
    def aliases(self) -> list[str]:
        return self.record["aliases"]

    @property
    def tags(self) -> dict[str, str]:
        return self.record["tags"]

    @property
    def description(self) -> str | None:
        return self.record["description"]

    @property
    def metrics(self) -> dict[str, float]:
        """The run's last value of each metric when this version was registered."""
        return self.record["metrics"]

    @property
    def environment(self) -> dict:
        return self.record["environment"]

    @property
    def image_digest(self) -> str | None:
        return self.record["image_digest"]

    @property
    def sha256(self) -> str:
        return self.record["sha256"]

    @property
    def archived(self) -> bool:
        return self.record["archived"]

    @property
    def artifacts(self) -> dict[str, dict]:
        """Linked artifacts by format, e.g. {"onnx": {"path": ..., "opset": 18, ...}}."""
        return self.record["artifacts"]

    @property
    def folder(self) -> Path:
        return self.workspace.store.models_dir / self.name / str(self.version)

    @property
    def path(self) -> Path:
        """The registered file (or folder) in the registry."""
        return self.workspace.store.models_dir / self.record["path"]

    def files(self) -> list[str]:
        """The registered files, relative to the version's files folder."""
        root = self.folder / FILES
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def verify(self) -> bool:
        """Recompute the content hash: True when the files are what was registered."""
        return content_hash(self.path) == self.sha256

    # -- using it -----------------------------------------------------------------------------
    def download(self, dest: str | os.PathLike = ".", exist_ok: bool = False) -> Path:
        """Copy the registered file (or folder) into the folder ``dest``; returns its path.

        The copy is checked against the recorded content hash.
        """
        source = self.path
        if not source.exists():
            raise ModelNotFound(f"the files of model {self.name!r} version {self.version} are "
                                f"missing from {source.parent} (removed by hand?)")
        dest = Path(dest).expanduser()
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / source.name
        if target.exists() and not exist_ok:
            raise FileExistsError(f"{target} already exists: pass exist_ok=True to overwrite "
                                  "it, or another folder")
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
        if content_hash(target) != self.sha256:
            raise ModelLoadError(f"the copy at {target} does not match the sha256 recorded "
                                 f"for {self.name}:{self.version} ({self.sha256[:12]}...): the "
                                 "registry's files were changed after registration")
        return target

    def deploy(self, name: str, entry_script: str | None = None,
               source_dir: str | os.PathLike | None = None, environment=None,
               port: int | None = None, auth: bool = False, target: str = "docker",
               max_batch_size: int = 16, max_latency_ms: float = 2.0, **options: Any):
        """Serve this version over the Open Inference Protocol v2 as deployment ``name``: its
        ONNX artifact with ONNX Runtime, else its torch file; with ``entry_script`` (found in
        ``source_dir``) also Azure-style ``POST /score`` (``init()`` once, ``run(raw)`` per
        request).  Waits until Healthy (``wait=False`` does not) and returns the Deployment.

        Concurrent requests are batched up to ``max_batch_size`` rows, waiting at most
        ``max_latency_ms`` for more while others are in flight.  ``options``: ``host`` (the
        bind address, "127.0.0.1"), ``memory``, ``cpus``, ``network`` ("host": the Docker
        container binds ``host:port`` itself, without Docker's port proxy), ``wait``,
        ``timeout``.

        In [1]: svc = ws.model("pt-dnn", alias="production").deploy("birds")
        In [2]: svc.url, svc.state, svc.predict(x)
        """
        from ..serving import deploy
        return deploy(self, name, entry_script=entry_script, source_dir=source_dir,
                      environment=environment, port=port, auth=auth, target=target,
                      max_batch_size=max_batch_size, max_latency_ms=max_latency_ms, **options)

    # -- aliases, archive, delete ---------------------------------------------------------------
    def set_alias(self, alias: str) -> "ModelVersion":
        """Point ``alias`` at this version (moving it from whichever version had it)."""
        check_alias(alias)
        store = self.workspace.store
        with store.write() as conn:
            if not store.model_exists(self.name, self.version, conn):
                raise ModelNotFound(f"model {self.name!r} version {self.version} no longer "
                                    "exists (deleted)")
            store.set_model_alias(self.name, alias, self.version, conn)
        return self

    def remove_alias(self, alias: str) -> "ModelVersion":
        """Remove ``alias`` if it points at this version."""
        gone = self.workspace.store.remove_model_alias(self.name, alias, self.version)
        if not gone:
            raise ModelNotFound(f"alias {alias!r} does not point at {self.name}:{self.version} "
                                f"(its aliases: {', '.join(self.aliases) or 'none'})")
        return self

    def archive(self) -> "ModelVersion":
        """Hide this version from 'latest' and the version lists; it stays loadable by number."""
        self._set_archived(True)
        return self

    def restore(self) -> "ModelVersion":
        """Undo archive()."""
        self._set_archived(False)
        return self

    def _set_archived(self, archived: bool) -> None:
        n = self.workspace.store.set_model_archived(self.name, self.version, archived)
        if not n:
            raise ModelNotFound(f"model {self.name!r} version {self.version} no longer exists")

    def delete(self) -> None:
        """Remove this version and its files.  Its number is never given out again.

        A version an alias points at is kept: move or remove the alias first.
        """
        store = self.workspace.store
        trash = store.models_dir / f"{TMP_PREFIX}deleted-{self.name}-{self.version}-" \
                                   f"{secrets.token_hex(4)}"
        with hold_work_lock(store):
            with store.write() as conn:
                aliases = store.aliases_pointing_at(self.name, self.version, conn)
                if aliases:
                    raise ModelRegistrationError(
                        f"{self.name}:{self.version} is what {', '.join(map(repr, aliases))} "
                        f"point{'s' if len(aliases) == 1 else ''} at: set the alias on another "
                        "version (or remove_alias) before deleting it")
                if not store.delete_model_version(self.name, self.version, conn):
                    raise ModelNotFound(f"model {self.name!r} version {self.version} does not "
                                        "exist (already deleted?)")
                if self.folder.exists():
                    os.rename(self.folder, trash)
            shutil.rmtree(trash, ignore_errors=True)

    # -- display ----------------------------------------------------------------------------------
    def load_hint(self) -> str:
        """The line of code that loads this version (shown in cards and run summaries)."""
        return load_hint(self.name, self.version)

    def _repr_html_(self) -> str:
        from ..views.model_cards import version_card_html
        return version_card_html(self, self._record(missing_ok=True))
