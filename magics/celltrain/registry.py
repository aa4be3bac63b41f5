"""The model registry: a run's file becomes version 1, 2, 3 ... of a named model.

Each version is a copy of the file (or folder) under ``<workspace>/models/<name>/<version>/``
and a row in the store's ``models`` table that records where it came from: the run, its
metrics at registration, its environment and image digest, tags, a description and a content
hash.  Aliases (``production``, ``staging``) point at one version each and can be moved;
``latest`` is implicit: the newest version that is not archived.

Registration is atomic: the files are copied into a temporary folder, which is renamed into
place inside the transaction that inserts the row.  A failure anywhere leaves no version behind.

    In [1]: m = run.register_model("pytorch-birds", path="outputs/model.pt")
    In [2]: m.set_alias("production")
    In [3]: ws.model("pytorch-birds", alias="production").load(model=Net())
"""
from __future__ import annotations

import difflib
import fcntl
import hashlib
import html
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from . import states
from .errors import CelltrainError

if TYPE_CHECKING:
    from .run import Run
    from .workspace import Workspace

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
LATEST = "latest"
FILES = "files"          # <version>/files/<the registered file or folder>
ARTIFACTS = "artifacts"  # <version>/artifacts/<format>/ (e.g. onnx/model.onnx)
TMP_PREFIX = ".tmp-"
WORK_LOCK = ".work.lock"  # in models/: shared while a process has temporary folders there
DELETED_RE = re.compile(rf"^{re.escape(TMP_PREFIX)}deleted-(.+)-(\d+)-[0-9a-f]{{8}}$")
NEXT_VERSION_KEY = "model_next_version:"  # meta row: version numbers are never reused
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")  # what load() picks in a folder
MODEL_SUFFIXES = TORCH_SUFFIXES + (".safetensors", ".onnx")
RUN_BOOKKEEPING = {"exit_code", "output.log", "stderr.log", "build.log", "supervisor.log"}


class ModelNotFound(CelltrainError, LookupError):
    """No model, version or alias by that name."""


class ModelRegistrationError(CelltrainError):
    """The run or the path cannot be registered; nothing was written."""


class ModelLoadError(CelltrainError):
    """The version's file cannot be loaded the way it was asked for."""


# -- validation ---------------------------------------------------------------------------------
def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"model name {name!r} is not allowed: use letters, digits, '.', '_' "
                         "and '-', starting with a letter or digit (e.g. 'pytorch-birds')")
    return name


def check_alias(alias: Any) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.match(alias):
        raise ValueError(f"alias {alias!r} is not allowed: use letters, digits, '.', '_' and "
                         "'-', starting with a letter (e.g. 'production', 'staging')")
    if alias == LATEST:
        raise ValueError("alias 'latest' is implicit (the newest version that is not "
                         "archived) and cannot be set: choose another name, e.g. 'production'")
    return alias


def _check_tags(tags: Mapping | None) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise TypeError(f"tags takes a dict of str to str, not {type(tags).__name__}")
    for key, value in tags.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"tag names are non-empty strings, not {key!r}")
        if not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"tag {key!r} has a {type(value).__name__} value; tags hold "
                             "strings and numbers")
    return {k: str(v) for k, v in tags.items()}


# -- hashing ------------------------------------------------------------------------------------
def content_hash(path: Path) -> str:
    """sha256 of a file; for a folder, of every file's relative path and bytes, in order (links
    are neither followed nor hashed)."""
    digest = hashlib.sha256()
    if path.is_file():
        files = [(PurePosixPath(path.name), path)]
    else:
        files = sorted((PurePosixPath(p.relative_to(path).as_posix()), p)
                       for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    for rel, file in files:
        if path.is_dir():
            digest.update(str(rel).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# -- registering ----------------------------------------------------------------------------------
def _resolve_run_path(run: "Run", path: str | os.PathLike) -> Path:
    """The file or folder ``path`` names in the run's folder, or an error listing what exists."""
    text = str(path).strip()
    rel = PurePosixPath(text.replace("\\", "/"))
    root = run.folder.resolve()
    source = (root / rel).resolve() if text else root
    if rel.is_absolute() or not text or not source.is_relative_to(root) or source == root:
        # e.g. the container's /celltrain-run/src/outputs/model.pt: say what it is called here
        same = [f for f in run.files() if text.endswith("/" + f)] if text else []
        hint = f" Did you mean {same[-1]!r}?" if same else ""
        raise ModelRegistrationError(
            f"model path {text!r} must be relative to the run's folder, e.g. "
            f"'outputs/model.pt' (what the script saved in ./outputs).{hint}")
    if source.exists():
        return source
    files = run.files()
    # suggest the user's own files, not celltrain's bookkeeping
    own = [f for f in files if f not in RUN_BOOKKEEPING
           and not any(part.startswith(".") for part in PurePosixPath(f).parts)]
    hints = [f for f in own if PurePosixPath(f).name == rel.name]
    hints = hints or difflib.get_close_matches(str(rel), own, n=3, cutoff=0.6)
    hints = hints or [f for f in own if f.endswith(MODEL_SUFFIXES)]
    listing = "\n  ".join(files[:40]) or "(none: did the script save into ./outputs?)"
    more = f"\n  ... and {len(files) - 40} more" if len(files) > 40 else ""
    hint = f" Did you mean {' or '.join(repr(h) for h in hints[:3])}?" if hints else ""
    raise ModelRegistrationError(
        f"could not find {text!r} in run {run.id}'s files.{hint} Only ./outputs and ./logs "
        f"come back from a run; the files that exist:\n  {listing}{more}")


def register_model(run: "Run", name: str, path: str | os.PathLike, *,
                   tags: Mapping[str, Any] | None = None, description: str | None = None,
                   aliases: Iterable[str] = ()) -> "ModelVersion":
    """Register ``path`` (a file or folder of the run, e.g. "outputs/model.pt") as the next
    version of model ``name``; returns that version.

    In [1]: m = run.register_model("pytorch-birds", "outputs/model.pt", tags={"data": "fowl"})
    """
    check_name(name)
    tags = _check_tags(tags)
    if isinstance(aliases, str):
        aliases = [aliases]
    aliases = [check_alias(a) for a in aliases]
    if description is not None and not isinstance(description, str):
        raise TypeError(f"description takes a string, not {type(description).__name__}")
    record = run.record
    if record is None:
        raise ModelRegistrationError(f"run {run.id} is not in workspace {run.workspace.path}")
    if record["status"] != states.COMPLETED:
        why = f" ({record['reason']})" if record["reason"] else ""
        if not states.is_terminal(record["status"]):
            fix = "its ./outputs come back when it ends: run.wait(), then register"
        else:
            fix = ("only completed runs are registered; run.download(path) still copies its "
                   "files")
        raise ModelRegistrationError(f"run {run.id} is {record['status']}{why}: {fix}")
    source = _resolve_run_path(run, path)

    store = run.workspace.store
    models_dir = store.models_dir
    tmp = models_dir / f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
    final: Path | None = None
    work = _hold_work_lock(store)
    try:
        (tmp / FILES).mkdir(parents=True)
        target = tmp / FILES / source.name
        if source.is_dir():   # a link inside is copied as a link, never followed
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target)
        sha256 = content_hash(target)
        metrics = store.latest_metrics(run.id)
        with store.write() as conn:
            version = _next_version(conn, name)
            final = models_dir / name / str(version)
            conn.execute(
                "INSERT INTO models (name, version, run_id, created, path, sha256, description, "
                "tags, metrics, environment, image_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?)",
                (name, version, run.id, time.time(),
                 f"{name}/{version}/{FILES}/{source.name}", sha256, description,
                 json.dumps(tags), json.dumps(metrics), json.dumps(record["environment"]),
                 record["image_digest"]))
            for alias in aliases:
                _set_alias(conn, name, alias, version)
            if final.exists():  # left by a process that died before committing its version
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, final)  # last step: the row commits only with the files in place
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if final is not None and final.exists() and _row(store, name, version) is None:
            shutil.rmtree(final, ignore_errors=True)
        raise
    finally:
        work.close()
    return ModelVersion(run.workspace, name, version)


def _hold_work_lock(store):
    """A shared lock on models/.work.lock, held while this process has temporary folders
    there: remove_leftovers() removes them only when nobody holds it."""
    lock = open(store.models_dir / WORK_LOCK, "a")
    fcntl.flock(lock, fcntl.LOCK_SH)
    return lock


def remove_leftovers(store) -> list[Path]:
    """Remove the temporary folders of registrations, exports and deletes whose process died
    (a kill -9 mid-copy left hundreds of MB).  Done when no process is working there: one
    that is keeps its folders, and the next opening of the workspace cleans up."""
    models = store.models_dir
    with open(models / WORK_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []
        removed = []
        # Versions first: a version put back brings its artifacts' leftovers with it.
        for pattern in (f"{TMP_PREFIX}*", f"*/*/{ARTIFACTS}/{TMP_PREFIX}*"):
            for tmp in list(models.glob(pattern)):
                if tmp.is_symlink() or not tmp.is_dir() or _put_back(store, tmp):
                    continue
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
        return removed


def _put_back(store, tmp: Path) -> bool:
    """A folder moved aside inside a transaction that never committed goes back in place."""
    if tmp.name.startswith(f"{TMP_PREFIX}old-onnx-"):
        home = tmp.parent / "onnx"          # an export died between its two renames
    else:
        deleted = DELETED_RE.match(tmp.name)
        if deleted is None or _row(store, deleted[1], int(deleted[2])) is None:
            return False
        home = store.models_dir / deleted[1] / deleted[2]   # a delete that did not commit
    if home.exists():
        return False
    os.rename(tmp, home)
    return True


def _next_version(conn, name: str) -> int:
    """One more than any version this name ever had, deleted ones included."""
    key = NEXT_VERSION_KEY + name
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    highest = conn.execute("SELECT COALESCE(MAX(version), 0) FROM models WHERE name=?",
                           (name,)).fetchone()[0]
    version = max(int(row[0]) if row else 1, highest + 1)
    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(version + 1)))
    return version


def _keep_counter_past(conn, name: str, version: int) -> None:
    key = NEXT_VERSION_KEY + name
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                 (key, str(max(int(row[0]) if row else 1, version + 1))))


def _set_alias(conn, name: str, alias: str, version: int) -> None:
    conn.execute("INSERT INTO model_aliases (name, alias, version) VALUES (?, ?, ?) "
                 "ON CONFLICT (name, alias) DO UPDATE SET version=excluded.version",
                 (name, alias, version))


def _row(store, name: str, version: int) -> dict | None:
    row = store.conn.execute(
        "SELECT m.*, r.experiment_id, e.name AS experiment, r.number AS run_number, "
        "r.image AS image FROM models m LEFT JOIN runs r ON r.id = m.run_id "
        "LEFT JOIN experiments e ON e.id = r.experiment_id WHERE m.name=? AND m.version=?",
        (name, version)).fetchone()
    if row is None:
        return None
    out = dict(row)
    for key in ("tags", "metrics", "environment", "artifacts"):
        out[key] = json.loads(out[key]) if out[key] else {}
    out["archived"] = bool(out["archived"])
    out["aliases"] = _aliases_of(store, name, version)
    return out


def _aliases_of(store, name: str, version: int | None = None) -> list[str] | dict[str, int]:
    rows = store.conn.execute("SELECT alias, version FROM model_aliases WHERE name=? "
                              "ORDER BY alias", (name,)).fetchall()
    if version is None:
        return {r[0]: r[1] for r in rows}
    return [r[0] for r in rows if r[1] == version]


# -- finding --------------------------------------------------------------------------------------
def _versions(store, name: str) -> list[tuple[int, bool]]:
    rows = store.conn.execute("SELECT version, archived FROM models WHERE name=? "
                              "ORDER BY version", (name,)).fetchall()
    return [(r[0], bool(r[1])) for r in rows]


def load_hint(name: str, version: int) -> str:
    """The line of code that loads a version: one wording for cards, summaries and %%train."""
    return f"ws.model({name!r}, version={version}).load(model=...)"


def model_names(ws: "Workspace") -> list[str]:
    return [r[0] for r in ws.store.conn.execute(
        "SELECT DISTINCT name FROM models ORDER BY name").fetchall()]


def get_model(ws: "Workspace", name: str, version: int | str | None = None,
              alias: str | None = None) -> "ModelVersion":
    """Version ``version``, or the one ``alias`` points at, or the latest (not archived)."""
    if version is not None and alias is not None:
        raise ValueError(f"pass version= or alias=, not both (got version={version!r}, "
                         f"alias={alias!r})")
    if not isinstance(name, str) or not name:
        raise ValueError(f"a model name is a non-empty string, not {name!r}")
    store = ws.store
    versions = _versions(store, name)
    if not versions:
        names = model_names(ws)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ModelNotFound(f"no model named {name!r} in workspace {ws.path}.{hint} "
                            f"Registered: {', '.join(names) or 'none yet'} "
                            "(run.register_model(name, path) registers one)")
    if isinstance(version, str) and version.isdigit():
        version = int(version)
    if alias == LATEST or version == LATEST:
        alias = version = None
    if alias is not None:
        aliases = _aliases_of(store, name)
        if alias not in aliases:
            known = ", ".join(f"{a} -> v{v}" for a, v in aliases.items()) or "none set"
            raise ModelNotFound(f"model {name!r} has no alias {alias!r} (its aliases: {known}; "
                                f"'latest' is v{_latest(versions)}). Set one with "
                                f"ws.model({name!r}, version=N).set_alias({alias!r})")
        return ModelVersion(ws, name, aliases[alias])
    if version is None:
        latest = _latest(versions)
        if latest is None:
            raise ModelNotFound(f"every version of model {name!r} is archived "
                                f"({', '.join(str(v) for v, _ in versions)}): ask for one "
                                "with version=N")
        return ModelVersion(ws, name, latest)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"version takes a number (1, 2, ...), not {version!r}; "
                         "for a name like 'production' use alias=")
    if version not in [v for v, _ in versions]:
        raise ModelNotFound(f"model {name!r} has no version {version}; its versions: "
                            f"{', '.join(str(v) for v, _ in versions)}")
    return ModelVersion(ws, name, version)


def _latest(versions: list[tuple[int, bool]]) -> int | None:
    live = [v for v, archived in versions if not archived]
    return max(live) if live else None


def list_models(ws: "Workspace") -> "ModelList":
    """One entry per model name: its versions, the latest, its aliases, archived versions."""
    out = ModelList()
    for name in model_names(ws):
        versions = _versions(ws.store, name)
        out.append({"name": name, "latest": _latest(versions),
                    "versions": [v for v, a in versions if not a],
                    "archived": [v for v, a in versions if a],
                    "aliases": _aliases_of(ws.store, name)})
    return out


def models_of_run(ws: "Workspace", run_id: str) -> list["ModelVersion"]:
    """The versions registered from one run, oldest first (for the run widget's summary)."""
    rows = ws.store.conn.execute("SELECT name, version FROM models WHERE run_id=? "
                                 "ORDER BY created", (run_id,)).fetchall()
    return [ModelVersion(ws, r[0], r[1]) for r in rows]


class ModelList(list):
    """``ws.models()``: a list of dicts that shows itself as a table in a notebook."""

    def __repr__(self) -> str:
        return _table(self)

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{h}</th>"
                       for h in ("model", "latest", "versions", "aliases", "archived"))
        rows = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(c))}</td>"
                             for c in _cells(m)) + "</tr>" for m in self)
        return (f"<table class='celltrain-models'><thead><tr>{head}</tr></thead>"
                f"<tbody>{rows}</tbody></table>" if self else "<i>no models registered</i>")


def _cells(m: dict) -> list[str]:
    return [m["name"], f"v{m['latest']}" if m["latest"] else "-",
            ", ".join(str(v) for v in m["versions"]) or "-",
            ", ".join(f"{a}->v{v}" for a, v in m["aliases"].items()) or "-",
            ", ".join(str(v) for v in m["archived"]) or "-"]


def _table(models: list[dict]) -> str:
    from .cli import format_table
    if not models:
        return "no models registered"
    return format_table([_cells(m) for m in models],
                        ["MODEL", "LATEST", "VERSIONS", "ALIASES", "ARCHIVED"])


def format_models(ws: "Workspace") -> str:
    """``celltrain models``: every version of every model with its lineage."""
    rows = []
    for name in model_names(ws):
        latest = _latest(_versions(ws.store, name))
        for version, _ in reversed(_versions(ws.store, name)):
            r = _row(ws.store, name, version)
            marks = r["aliases"] + ([LATEST] if version == latest else [])
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in list(r["metrics"].items())[:3]
                                if v is not None)
            rows.append([name, version, ",".join(marks) or "-",
                         "archived" if r["archived"] else "",
                         r["run_id"] or "-", time.strftime("%Y-%m-%d %H:%M",
                                                           time.localtime(r["created"])),
                         r["sha256"][:12], ",".join(r["artifacts"]) or "-", metrics])
    if not rows:
        return (f"no models registered in {ws.path} "
                "(run.register_model(name, 'outputs/model.pt') registers one)")
    from .cli import format_table
    return format_table(rows, ["MODEL", "VERSION", "ALIASES", "STATE", "RUN", "REGISTERED",
                               "SHA256", "ARTIFACTS", "METRICS"])


# -- one version ----------------------------------------------------------------------------------
class ModelVersion:
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
        r = _row(self.workspace.store, self.name, self.version)
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
        """The run that produced this version."""
        from .run import Run
        return Run(self.workspace, self.run_id)

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

    def _weights_file(self, file: str | None) -> Path:
        path = self.path
        if path.is_file():
            return path
        candidates = [f for f in self.files() if f.endswith(TORCH_SUFFIXES)]
        if file is not None:
            chosen = self.folder / FILES / file
            if not chosen.is_file():
                raise ModelNotFound(f"{self.name}:{self.version} has no file {file!r}; its "
                                    f"files: {', '.join(self.files())}")
            return chosen
        if len(candidates) != 1:
            raise ModelLoadError(f"{self.name}:{self.version} is a folder with "
                                 f"{len(candidates)} weight files "
                                 f"({', '.join(candidates) or 'none'}): pass file=")
        return self.folder / FILES / candidates[0]

    def load(self, model=None, weights_only: bool = True, map_location: Any = "cpu",
             file: str | None = None):
        """Load the registered weights.

        With ``model`` (an ``nn.Module``), the state dict is loaded into it and the module
        returned in eval mode; without, the loaded object itself (a state dict, usually).
        A file holding a whole pickled module loads only with ``weights_only=False``:
        unpickling can run any code, so it is an explicit choice (torch >= 2.6 agrees).
        ``file`` picks the file when a folder was registered.
        """
        import pickle

        import torch
        path = self._weights_file(file)
        try:
            obj = torch.load(path, map_location=map_location, weights_only=weights_only)
        except (AttributeError, ModuleNotFoundError) as e:
            if weights_only:
                raise
            raise ModelLoadError(
                f"{self.name}:{self.version} ({path.name}) is a pickled object whose class "
                f"cannot be found here ({e}): a pickle stores the class's module and name, not "
                "its code. Import or define that class (a class from the training script "
                "lives in '__main__') before load(), or register a state dict instead") from e
        except pickle.UnpicklingError as e:
            if not weights_only:
                raise
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            what = f" (it references {found.group(1)})" if found else ""
            raise ModelLoadError(
                f"{self.name}:{self.version} ({path.name}) is not a plain state dict but a "
                f"pickled object{what}, and loading pickles can run any code, so it needs "
                "your explicit consent: load(weights_only=False) if you trust the run "
                f"{self.run_id} that saved it. Saving model.state_dict() avoids this.") from e
        if model is None:
            return obj
        state = obj.state_dict() if isinstance(obj, torch.nn.Module) else obj
        if not isinstance(state, Mapping):
            raise ModelLoadError(f"{self.name}:{self.version} holds a {type(obj).__name__}, "
                                 "not a state dict to load into the model: call load() "
                                 "without model=")
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            keys = ", ".join(list(state)[:8])
            raise ModelLoadError(
                f"the weights of {self.name}:{self.version} do not fit "
                f"{type(model).__name__}: {str(e).splitlines()[0]} {_first_mismatch(e)} "
                f"(the file's first keys: {keys})") from e
        return model.eval()

    def module(self, model=None, weights_only: bool = True):
        """An ``nn.Module`` to run: ``model`` with these weights, or the pickled module."""
        import torch
        obj = self.load(model=model, weights_only=weights_only)
        if not isinstance(obj, torch.nn.Module):
            raise ModelLoadError(
                f"{self.name}:{self.version} holds a {type(obj).__name__} (a state dict), "
                "not a module: pass model=YourNet() so the weights have somewhere to go")
        return obj

    # -- ONNX -----------------------------------------------------------------------------------
    def export_onnx(self, example_input, opset: int | None = None, model=None,
                    tolerance: float | None = None, weights_only: bool = True,
                    exporter: str = "auto") -> "OnnxArtifact":
        """Export to ONNX with a dynamic batch axis, check it with ONNX Runtime against
        PyTorch on ``example_input``, and store it with this version (format ``onnx``).

        ``model``: the module to load the registered state dict into (not needed when a whole
        module was registered and ``weights_only=False``).  A failed export or parity check
        raises and leaves the version as it was.

        In [1]: onnx_model = m.export_onnx(torch.randn(1, 3, 224, 224), model=resnet18())
        In [2]: onnx_model.max_abs_diff, onnx_model.run(x)
        """
        from . import onnx_export
        opset = onnx_export.DEFAULT_OPSET if opset is None else opset
        tolerance = onnx_export.DEFAULT_TOLERANCE if tolerance is None else tolerance
        module = self.module(model=model, weights_only=weights_only)
        self._record()
        store = self.workspace.store
        final = self.folder / ARTIFACTS / "onnx"
        tmp = self.folder / ARTIFACTS / f"{TMP_PREFIX}onnx-{secrets.token_hex(4)}"
        old = self.folder / ARTIFACTS / f"{TMP_PREFIX}old-onnx-{secrets.token_hex(4)}"
        work = _hold_work_lock(store)
        try:
            info = onnx_export.export_module(module, example_input, tmp, opset=opset,
                                             tolerance=tolerance, exporter=exporter)
            info["path"] = f"{ARTIFACTS}/onnx/{info.pop('file')}"
            info["sha256"] = content_hash(tmp)  # model.onnx and its external data
            info["created"] = time.time()
            with store.write() as conn:
                row = conn.execute("SELECT artifacts FROM models WHERE name=? AND version=?",
                                   (self.name, self.version)).fetchone()
                if row is None:
                    raise ModelNotFound(f"model {self.name!r} version {self.version} was "
                                        "deleted during the export")
                artifacts = json.loads(row[0] or "{}")
                artifacts["onnx"] = info
                conn.execute("UPDATE models SET artifacts=? WHERE name=? AND version=?",
                             (json.dumps(artifacts), self.name, self.version))
                if final.exists():
                    os.rename(final, old)
                os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if old.exists():  # put the previous export back
                shutil.rmtree(final, ignore_errors=True)
                os.rename(old, final)
            raise
        else:
            shutil.rmtree(old, ignore_errors=True)
        finally:
            work.close()
        return OnnxArtifact(self, info)

    @property
    def onnx(self) -> "OnnxArtifact | None":
        """The stored ONNX export of this version, if one was made."""
        info = self.artifacts.get("onnx")
        return OnnxArtifact(self, info) if info else None

    # -- aliases, archive, delete ---------------------------------------------------------------
    def set_alias(self, alias: str) -> "ModelVersion":
        """Point ``alias`` at this version (moving it from whichever version had it)."""
        check_alias(alias)
        with self.workspace.store.write() as conn:
            if conn.execute("SELECT 1 FROM models WHERE name=? AND version=?",
                            (self.name, self.version)).fetchone() is None:
                raise ModelNotFound(f"model {self.name!r} version {self.version} no longer "
                                    "exists (deleted)")
            _set_alias(conn, self.name, alias, self.version)
        return self

    def remove_alias(self, alias: str) -> "ModelVersion":
        """Remove ``alias`` if it points at this version."""
        with self.workspace.store.write() as conn:
            gone = conn.execute("DELETE FROM model_aliases WHERE name=? AND alias=? AND "
                                "version=?", (self.name, alias, self.version)).rowcount
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
        with self.workspace.store.write() as conn:
            n = conn.execute("UPDATE models SET archived=? WHERE name=? AND version=?",
                             (int(archived), self.name, self.version)).rowcount
        if not n:
            raise ModelNotFound(f"model {self.name!r} version {self.version} no longer exists")

    def delete(self) -> None:
        """Remove this version and its files.  Its number is never given out again.

        A version an alias points at is kept: move or remove the alias first.
        """
        store = self.workspace.store
        trash = store.models_dir / f"{TMP_PREFIX}deleted-{self.name}-{self.version}-" \
                                   f"{secrets.token_hex(4)}"
        with _hold_work_lock(store):
            with store.write() as conn:
                aliases = [r[0] for r in conn.execute(
                    "SELECT alias FROM model_aliases WHERE name=? AND version=?",
                    (self.name, self.version)).fetchall()]
                if aliases:
                    raise ModelRegistrationError(
                        f"{self.name}:{self.version} is what {', '.join(map(repr, aliases))} "
                        f"point{'s' if len(aliases) == 1 else ''} at: set the alias on another "
                        "version (or remove_alias) before deleting it")
                if not conn.execute("DELETE FROM models WHERE name=? AND version=?",
                                    (self.name, self.version)).rowcount:
                    raise ModelNotFound(f"model {self.name!r} version {self.version} does not "
                                        "exist (already deleted?)")
                _keep_counter_past(conn, self.name, self.version)
                if self.folder.exists():
                    os.rename(self.folder, trash)
            shutil.rmtree(trash, ignore_errors=True)

    # -- display ----------------------------------------------------------------------------------
    def load_hint(self) -> str:
        """The line of code that loads this version (shown in cards and run summaries)."""
        return load_hint(self.name, self.version)

    def _repr_html_(self) -> str:
        r = self._record(missing_ok=True)
        if r is None:
            return f"<i>{html.escape(self.name)}:{self.version} was deleted</i>"
        e = html.escape
        chips = "".join(
            f"<span style='border:1px solid #888;border-radius:8px;padding:0 6px;"
            f"margin-left:4px;font-size:85%'>{e(a)}</span>" for a in r["aliases"])
        if r["archived"]:
            chips += "<span style='color:#a60;margin-left:6px'>archived</span>"
        metrics = ", ".join(f"{e(k)} = {v:.4g}" for k, v in r["metrics"].items()
                            if v is not None) or "-"
        tags = ", ".join(f"{e(k)}={e(v)}" for k, v in r["tags"].items()) or "-"
        files = self.files()
        shown = ", ".join(e(f) for f in files[:6]) + (" ..." if len(files) > 6 else "")
        arts = ", ".join(
            f"{e(fmt)} ({e(a.get('path', ''))}"
            + (f", opset {a['opset']}, max |diff| {a['max_abs_diff']:.2g}" if fmt == "onnx"
               else "") + ")" for fmt, a in r["artifacts"].items()) or "-"
        run = (f"{e(r['run_id'])} ({e(r['experiment'] or '?')} #{r['run_number']})"
               if r["run_id"] else "-")
        rows = [("run", run), ("metrics", metrics), ("tags", tags),
                ("description", e(r["description"] or "-")), ("files", shown or "-"),
                ("artifacts", arts), ("image", e((r["image_digest"] or "-")[:19])),
                ("sha256", e(r["sha256"][:16]) + "..."),
                ("registered", time.strftime("%Y-%m-%d %H:%M:%S",
                                             time.localtime(r["created"]))),
                ("load", f"<code>{e(self.load_hint())}</code>")]
        body = "".join(f"<tr><td style='text-align:left;color:#666;padding-right:12px'>{k}</td>"
                       f"<td style='text-align:left'>{v}</td></tr>" for k, v in rows)
        return (f"<div class='celltrain-model' style='border:1px solid #ccc;border-radius:6px;"
                f"padding:8px 12px;display:inline-block'><div style='font-weight:bold'>"
                f"{e(self.name)} <span style='color:#666'>v{self.version}</span>{chips}</div>"
                f"<table style='margin-top:4px'>{body}</table></div>")


def _first_mismatch(error: BaseException) -> str:
    lines = [ln.strip() for ln in str(error).splitlines()[1:] if ln.strip()]
    return lines[0] if lines else ""


class OnnxArtifact:
    """A version's stored ONNX export: its file, how it was made, and a way to run it."""

    def __init__(self, version: ModelVersion, info: dict):
        self.version, self.info = version, info

    def __repr__(self) -> str:
        return (f"<OnnxArtifact {self.version.name}:{self.version.version} opset "
                f"{self.opset} max_abs_diff={self.max_abs_diff:.3g} {self.path}>")

    @property
    def path(self) -> Path:
        return self.version.folder / self.info["path"]

    @property
    def opset(self) -> int:
        return self.info["opset"]

    @property
    def max_abs_diff(self) -> float:
        return self.info["max_abs_diff"]

    def load(self):
        """The ONNX model as an ``onnx.ModelProto``."""
        import onnx
        return onnx.load(str(self.path))

    def session(self):
        """An ONNX Runtime inference session on the CPU."""
        from .onnx_export import _session
        return _session(self.path)

    def run(self, *inputs):
        """Run the exported model on tensors or arrays; returns a list of numpy arrays."""
        import numpy as np
        session = self.session()
        names = [i.name for i in session.get_inputs()]
        feed = {n: (x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x))
                for n, x in zip(names, inputs)}
        return session.run(None, feed)
