"""Packaging a notebook cell for a run: what it reads, how it travels, what it needs installed.

``build_bundle`` turns a cell and the notebook's namespace into a source folder for
``Experiment.submit``: the entry script (``cellrunner``), the cell's meta data, the variables it
reads pickled by value with cloudpickle (notebook functions and classes included, also those that
call other notebook functions), and the notebook folder's own ``.py`` modules.  Modules the cell
reads become import statements with the same aliases.  Everything that cannot travel is refused
here, before anything starts, with the variable's name, the reason and the fix.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import sys
import tempfile
import types
from collections import ChainMap
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Mapping

from ..runtime import cellrunner
from ..errors import BundleError
from .analysis import analyse, split_last_expression
from .modules import import_statement, is_user_module, module_file, shippable_path, system_roots
from .pins import distributions_for

RUNNER_SCRIPT = "celltrain_cell.py"
DEFAULT_MAX_MB = 300
MAX_LOCAL_FILE_MB = 2
INJECTED = ("log", "progress", "Run")
NOT_SHIPPED = {"In", "Out", "get_ipython", "exit", "quit", "_", "__", "___"}


# -- pickling ---------------------------------------------------------------------------------
class _RecordingPickler:
    """A cloudpickle pickler that notes the modules and code files of what it pickles."""

    def __new__(cls, file):
        import cloudpickle

        class Recorder(cloudpickle.Pickler):
            # Keep code's own file names (cloudpickle blanks them to "<dynamic-code>"), so a
            # notebook function's frames in the run's traceback name the cell it came from.
            dispatch_table = ChainMap({types.CodeType: _code_reduce_keeping_filename},
                                      cloudpickle.Pickler.dispatch_table)

            def reducer_override(self, obj):
                if isinstance(obj, io.IOBase):  # cloudpickle would send a file's content
                    raise pickle.PicklingError(
                        f"cannot pickle an open file ({getattr(obj, 'name', type(obj).__name__)})")
                try:
                    if isinstance(obj, types.ModuleType):
                        self.modules.add(obj.__name__)
                    elif isinstance(obj, type):
                        self.modules.add(obj.__module__)
                        if not _by_reference(obj):
                            self.code_by_value = True
                    elif isinstance(obj, types.FunctionType):
                        self.modules.add(obj.__module__)
                        if not _by_reference(obj):
                            self.code_by_value = True
                            self.filenames.add(obj.__code__.co_filename)
                    else:
                        self.modules.add(type(obj).__module__)
                except Exception:
                    pass
                return super().reducer_override(obj)

        pickler = Recorder(file, protocol=5)
        pickler.modules, pickler.filenames, pickler.code_by_value = set(), set(), False
        return pickler


def _code_reduce_keeping_filename(code: types.CodeType):
    from cloudpickle.cloudpickle import _code_reduce
    constructor, args = _code_reduce(code)
    args = tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)
    return constructor, args


def _by_reference(obj) -> bool:
    try:
        from cloudpickle.cloudpickle import _should_pickle_by_reference
        return _should_pickle_by_reference(obj)
    except Exception:  # a private helper: if it moves, assume the code travels
        return False


WHY_NOT = [
    (io.IOBase, "it is an open file: open it inside the cell (and --mount its folder)"),
    (types.GeneratorType, "it is a generator, which holds a running frame: make it inside the "
                          "cell, or turn it into a list first"),
]


def why_unpicklable(value: Any, error: BaseException) -> str:
    import socket
    import threading
    for kind, why in WHY_NOT + [
            (socket.socket, "it is a socket: connect inside the cell"),
            (type(threading.Lock()), "it is a lock: create it inside the cell"),
            (type(threading.RLock()), "it is a lock: create it inside the cell")]:
        if isinstance(value, kind):
            return why
    text = f"{type(error).__name__}: {error}"
    if "lock" in text:
        return f"it holds a lock ({text}): create it inside the cell"
    if "generator" in text:
        return f"it holds a generator ({text}): make it inside the cell"
    if "TextIOWrapper" in text or "BufferedReader" in text or "BufferedWriter" in text:
        return f"it holds an open file ({text}): open it inside the cell"
    return f"it cannot be pickled ({text}): create it inside the cell"


def _estimate_size(value: Any) -> int:
    """A cheap lower bound for big data: numpy arrays, tensors, data frames."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if hasattr(value, "memory_usage") and hasattr(value, "columns"):
        try:
            return int(value.memory_usage(deep=False).sum())
        except Exception:
            return 0
    return 0


def _too_big(sizes: Mapping[str, int], max_mb: float) -> BundleError:
    total = sum(sizes.values())
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    listing = ", ".join(f"{name} {size / 2**20:.1f} MB" for name, size in top)
    return BundleError(
        f"the variables the cell reads come to {total / 2**20:.1f} MB ({listing}), over the "
        f"{max_mb:g} MB limit for what travels with a cell. Save the data to a folder and mount "
        f"it read-only instead, e.g. np.save('data/x.npy', x) in the notebook, then "
        f"`%%train --mount data:/data ...` and np.load('/data/x.npy') in the cell; or raise the "
        f"limit with --max-bundle-mb.")


# -- the bundle ------------------------------------------------------------------------------
@dataclass
class Bundle:
    """A source folder holding the runner, the cell, its variables and local modules."""
    folder: Path
    meta: dict
    size: int
    distributions: dict[str, str] = field(default_factory=dict)  # dist -> kernel version
    local_files: list[str] = field(default_factory=list)
    script: str = RUNNER_SCRIPT

    @property
    def variables(self) -> list[str]:
        return list(self.meta["variables"])

    @property
    def imports(self) -> list[str]:
        return list(self.meta["imports"])

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def build_bundle(source: str, namespace: Mapping[str, Any], *, out: Iterable[str] = (),
                 params: Mapping[str, Any] | None = None, first_line: int = 1,
                 cell_text: str | None = None, label: str = "Cell", hidden: Iterable[str] = (),
                 folder: str | os.PathLike | None = None, max_mb: float = DEFAULT_MAX_MB,
                 labels: Mapping[str, str] | None = None,
                 sources: Mapping[str, Any] | None = None,
                 dest: str | os.PathLike | None = None) -> Bundle:
    """Package ``source`` (a cell's body) with what it reads from ``namespace``.

    ``first_line``: the body's first line number in the cell (2 under a ``%%train`` line), so
    tracebacks count as the notebook does.  ``label``: how tracebacks name the cell
    ("Cell In[5]").  ``labels``/``sources``: names and texts of earlier cells, by code filename
    (IPython's ``compile._filename_map`` and ``linecache``), for notebook functions' frames.
    ``folder``: the notebook's folder, whose ``.py`` modules travel (default: the working
    directory).  ``dest``: where to write (default: a new temporary folder).
    """
    params = dict(params or {})
    out = list(out)
    analysis = analyse(source, first_line)
    for name in out:
        if not name.isidentifier():
            raise BundleError(f"--out {name!r} is not a variable name: write --out model acc")
        if name not in analysis.assigned and name not in namespace and name not in params:
            raise BundleError(f"--out {name}: the cell never assigns {name!r} and the notebook "
                              f"has no {name!r}, so nothing could come back; assign it in the "
                              f"cell or drop it from --out. Nothing was started.")
    skip = set(hidden) | NOT_SHIPPED | set(params)
    folder = os.path.realpath(folder or os.getcwd())
    roots = system_roots()

    imports: list[str] = []
    to_pickle: dict[str, Any] = {}
    shipped: set[str] = set()   # relative paths of the notebook's modules that travel
    modules: set[str] = set(analysis.imported_modules)
    for name in analysis.reads:
        if name in skip or name not in namespace:
            continue
        value = namespace[name]
        if name in INJECTED and getattr(value, "__module__", "") in ("celltrain.runtime.context",
                                                                      "celltrain.run",
                                                                      "celltrain"):
            continue
        if isinstance(value, types.ModuleType):
            top = sys.modules.get(value.__name__.split(".")[0])
            rel = shippable_path(top, folder) if top is not None and \
                is_user_module(top, roots) else None
            if rel is not None:
                shipped.add(rel)
            elif is_user_module(value, roots) or module_file(value) is None and \
                    value.__name__ not in sys.modules:
                to_pickle[name] = value  # code from elsewhere: its module travels by value
                continue
            imports.append(import_statement(name, value))
            modules.add(value.__name__)
            continue
        statement = import_statement(name, value)
        owner = sys.modules.get(getattr(value, "__module__", None) or "")
        if statement is not None and owner is not None and not is_user_module(owner, roots):
            imports.append(statement)
            modules.add(owner.__name__)
            continue
        to_pickle[name] = value

    sizes = {name: _estimate_size(v) for name, v in to_pickle.items()}
    if sum(sizes.values()) > max_mb * 2**20:
        raise _too_big(sizes, max_mb)

    target = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="celltrain-cell-"))
    bundle_dir = target / cellrunner.BUNDLE_DIR
    bundle_dir.mkdir(parents=True, exist_ok=True)
    try:
        # Local modules: the notebook folder's own .py files travel as files; other user code
        # (e.g. from a sys.path entry) travels by value inside the pickle.
        user_modules = [m for m in list(sys.modules.values())
                        if isinstance(m, types.ModuleType) and m.__name__ != "__main__"
                        and is_user_module(m, roots)]
        by_value = [m for m in user_modules if shippable_path(m, folder) is None]
        pickled, recorder = _pickle_variables(to_pickle, bundle_dir / cellrunner.NAMESPACE_FILE,
                                              by_value, max_mb)
        size = (bundle_dir / cellrunner.NAMESPACE_FILE).stat().st_size if pickled else 0
        modules |= recorder["modules"]
        tops = {m.split(".")[0] for m in modules}
        for module in user_modules:
            rel = shippable_path(module, folder)
            if rel is not None and module.__name__.split(".")[0] in tops:
                shipped.add(rel)
        for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            path = os.path.join(folder, entry)
            if entry.endswith(".py") and os.path.isfile(path) and \
                    os.path.getsize(path) <= MAX_LOCAL_FILE_MB * 2**20:
                shipped.add(entry)
        local_files = _copy_local(folder, sorted(shipped), target)
        filename = f"<celltrain {label}>"
        labels_out = {filename: label}
        sources_out = {filename: cell_text if cell_text is not None
                       else "\n" * (first_line - 1) + source}
        for code_file in recorder["filenames"]:
            if labels and code_file in labels:
                labels_out[code_file] = labels[code_file]
            if sources and code_file in sources:
                sources_out[code_file] = sources[code_file]
        local_names = {p.split("/")[0].removesuffix(".py") for p in shipped}
        dists, module_dists = distributions_for(modules, exclude=local_names)
        exec_source, eval_source = split_last_expression(source, first_line,
                                                         analysis.last_expr)
        meta = {
            "format": 1, "python": list(sys.version_info[:2]),
            "exec_source": exec_source, "eval_source": eval_source,
            "code_by_value": recorder["code_by_value"],
            "source": source, "first_line": first_line, "filename": filename,
            "last_expr": analysis.last_expr, "imports": imports, "variables": pickled,
            "out": out, "params": sorted(params), "labels": labels_out,
            "sources": sources_out, "packages": dists, "module_dists": module_dists,
            "tqdm": "tqdm" in {m.split(".")[0] for m in modules} or "tqdm" in source,
            "local_files": local_files,
        }
        (bundle_dir / cellrunner.META_FILE).write_text(json.dumps(meta, indent=1))
        shutil.copyfile(cellrunner.__file__, target / RUNNER_SCRIPT)
    except BaseException:
        if dest is None:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return Bundle(target, meta, size, dists, local_files)



def _copy_local(folder: str, rels: list[str], target: Path) -> list[str]:
    copied = []
    for rel in rels:
        source = os.path.join(folder, rel)
        if os.path.isdir(source):
            for dirpath, dirnames, filenames in os.walk(source):
                dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
                for name in filenames:
                    if name.endswith(".py"):
                        full = os.path.join(dirpath, name)
                        rel_file = os.path.relpath(full, folder)
                        (target / rel_file).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(full, target / rel_file)
                        copied.append(rel_file)
        elif os.path.isfile(source):
            shutil.copyfile(source, target / rel)
            copied.append(rel)
    return copied


def _pickle_variables(values: Mapping[str, Any], path: Path, by_value: list,
                      max_mb: float) -> tuple[list[str], dict]:
    """One pickler for all, so notebook functions keep sharing one globals dict in the run."""
    import cloudpickle
    registered = []
    for module in by_value:
        try:
            cloudpickle.register_pickle_by_value(module)
            registered.append(module)
        except (ValueError, TypeError):
            pass
    names: list[str] = []
    sizes: dict[str, int] = {}
    try:
        with open(path, "wb") as f:
            pickler = _RecordingPickler(f)
            for name, value in values.items():
                before = f.tell()
                try:
                    pickler.dump((name, value))
                except Exception as e:
                    raise BundleError(
                        f"the cell reads the notebook variable {name!r} (a "
                        f"{type(value).__name__}), which cannot go to the run: "
                        f"{why_unpicklable(value, e)}. Nothing was started.") from None
                sizes[name] = f.tell() - before
                names.append(name)
                if f.tell() > max_mb * 2**20:
                    raise _too_big(sizes, max_mb)
            record = {"modules": {m for m in pickler.modules if isinstance(m, str)},
                      "filenames": set(pickler.filenames),
                      "code_by_value": pickler.code_by_value}
    finally:
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)
    return names, record



def load_results(source: str | os.PathLike | BinaryIO) -> tuple[dict[str, Any], Any, bool]:
    """What the runner sent back: ({--out name: value}, last expression value, whether any).
    ``source``: the results file's path, or the file already open (``%%train`` opens it
    without following links)."""
    import cloudpickle  # noqa: F401
    values: dict[str, Any] = {}
    value, has_value = None, False
    with (nullcontext(source) if hasattr(source, "read") else open(source, "rb")) as f:
        unpickler = pickle.Unpickler(f)
        header = unpickler.load()
        for _ in header["out"]:
            name, data = unpickler.load()
            values[name] = pickle.loads(data)
        if header["has_value"]:
            kind, data = unpickler.load()
            has_value = True
            value = pickle.loads(data) if kind == "value" else _Repr(data)
    return values, value, has_value


class _Repr:
    """A last expression that could not travel back: shown by its repr from the run."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text
