"""Packaging a notebook cell for a run: what it reads, how it travels, what it needs installed.

``build_bundle`` turns a cell and the notebook's namespace into a source folder for
``Experiment.submit``: the entry script (``cellrunner``), the cell's meta data, the variables it
reads pickled by value with cloudpickle (notebook functions and classes included, also those that
call other notebook functions), and the notebook folder's own ``.py`` modules.  Modules the cell
reads become import statements with the same aliases.  Everything that cannot travel is refused
here, before anything starts, with the variable's name, the reason and the fix.
"""
from __future__ import annotations

import ast
import io
import json
import os
import pickle
import re
import shutil
import symtable
import sys
import sysconfig
import tempfile
import types
from collections import ChainMap
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import cellrunner
from .errors import CelltrainError

RUNNER_SCRIPT = "celltrain_cell.py"
DEFAULT_MAX_MB = 300
MAX_LOCAL_FILE_MB = 2
INJECTED = ("log", "progress", "Run")
NOT_SHIPPED = {"In", "Out", "get_ipython", "exit", "quit", "_", "__", "___"}
NO_PIN = {"celltrain", "cloudpickle"}   # mounted into every run


class BundleError(CelltrainError):
    """The cell cannot be packaged (bad syntax, an unpicklable variable, too much data)."""


# -- reading the cell ------------------------------------------------------------------------
@dataclass
class CellAnalysis:
    reads: list[str]            # names the cell needs from outside, in first-use order
    assigned: set[str]          # names the cell binds at its top level
    imported_modules: set[str]  # top-level modules of the cell's own import statements
    last_expr: bool


class _Reads(ast.NodeVisitor):
    """Module-level loads in execution order; nested scopes are left to ``symtable``."""

    def __init__(self):
        self.stored: set[str] = set()
        self.reads: list[str] = []
        self.local: list[set[str]] = []
        self.modules: set[str] = set()

    def load(self, name: str) -> None:
        if any(name in scope for scope in self.local):
            return
        if name not in self.stored and name not in self.reads:
            self.reads.append(name)

    def store(self, name: str) -> None:
        (self.local[-1] if self.local else self.stored).add(name)

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Store):
            self.store(node.id)
        else:
            self.load(node.id)

    def visit_Assign(self, node):
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)
            self.visit(node.target)

    def visit_AugAssign(self, node):
        if isinstance(node.target, ast.Name):
            self.load(node.target.id)
        self.visit(node.value)
        self.visit(node.target)

    def visit_NamedExpr(self, node):
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node):
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_withitem(self, node):
        self.visit(node.context_expr)
        if node.optional_vars is not None:
            self.visit(node.optional_vars)

    def visit_ExceptHandler(self, node):
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.store(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_Import(self, node):
        for alias in node.names:
            self.modules.add(alias.name.split(".")[0])
            self.store(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node):
        if node.level == 0 and node.module:
            self.modules.add(node.module.split(".")[0])
        for alias in node.names:
            if alias.name != "*":
                self.store(alias.asname or alias.name)

    def _def(self, node):
        for d in node.decorator_list:
            self.visit(d)
        args = node.args
        for default in args.defaults + [d for d in args.kw_defaults if d is not None]:
            self.visit(default)
        self.store(node.name)

    visit_FunctionDef = visit_AsyncFunctionDef = _def

    def visit_ClassDef(self, node):
        for item in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(item)
        self.store(node.name)

    def visit_Lambda(self, node):
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(default)

    def _comprehension(self, node):
        self.local.append(set())
        for gen in node.generators:
            self.visit(gen.iter)
            self.visit(gen.target)
            for cond in gen.ifs:
                self.visit(cond)
        for name in ("elt", "key", "value"):
            if getattr(node, name, None) is not None:
                self.visit(getattr(node, name))
        self.local.pop()

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

    def visit_Delete(self, node):
        for target in node.targets:
            if isinstance(target, ast.Name):
                self.load(target.id)
            else:
                self.visit(target)


def _nested_globals(table: symtable.SymbolTable) -> set[str]:
    """Global names that functions, classes and lambdas of the cell refer to."""
    out: set[str] = set()
    for child in table.get_children():
        for sym in child.get_symbols():
            if sym.is_referenced() and (sym.is_global() or
                                        (child.get_type() == "class" and not sym.is_assigned()
                                         and not sym.is_local())):
                out.add(sym.get_name())
        out |= _nested_globals(child)
    return out


def parse_cell(source: str, first_line: int = 1) -> ast.Module:
    """The cell's syntax tree, or a BundleError naming the line as the notebook numbers it."""
    try:
        return ast.parse(source)
    except SyntaxError as e:
        line = (e.lineno or 1) + first_line - 1
        text = (e.text or "").strip()
        hint = ""
        if text.startswith(("%", "!")):
            hint = (" IPython magics and shell commands (%... and !...) cannot run in the "
                    "container: put them in another cell.")
        raise BundleError(f"the cell does not parse: {e.msg} at line {line}"
                          + (f": {text}" if text else "") + f".{hint} Nothing was started.") \
            from None


def analyse(source: str, first_line: int = 1) -> CellAnalysis:
    tree = parse_cell(source, first_line)
    visitor = _Reads()
    for stmt in tree.body:
        visitor.visit(stmt)
    top = symtable.symtable(source, "<cell>", "exec")
    assigned = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    reads = list(visitor.reads)
    for name in sorted(_nested_globals(top)):
        if name not in assigned and name not in reads:
            reads.append(name)
    last = bool(tree.body) and isinstance(tree.body[-1], ast.Expr) and \
        not source.rstrip().endswith(";")   # as in IPython, a trailing ; hides the value
    return CellAnalysis(reads, assigned | visitor.stored, visitor.modules, last)


# -- where modules come from -----------------------------------------------------------------
def _system_roots() -> list[str]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        try:
            roots.add(sysconfig.get_paths()[key])
        except KeyError:
            pass
    return [os.path.realpath(r) for r in roots if r]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def module_file(module: types.ModuleType) -> str | None:
    path = getattr(module, "__file__", None)
    return os.path.realpath(path) if path else None


_USER_MODULE: dict[tuple[str, str], bool] = {}   # (name, __file__) -> answer; files don't move


def is_user_module(module: types.ModuleType, roots: list[str]) -> bool:
    """Pure-Python code of the user's (not the standard library, not installed, not celltrain)."""
    name = getattr(module, "__name__", "") or ""
    raw = getattr(module, "__file__", None)
    if not isinstance(raw, str) or not raw.endswith(".py") or name.split(".")[0] in NO_PIN \
            or "site-packages" in raw or "dist-packages" in raw:
        return False
    key = (name, raw)
    if key not in _USER_MODULE:
        path = os.path.realpath(raw)
        _USER_MODULE[key] = not ("site-packages" in path or "dist-packages" in path
                                 or any(_under(path, root) for root in roots))
    return _USER_MODULE[key]


def shippable_path(module: types.ModuleType, folder: str) -> str | None:
    """The path (relative to the notebook folder) that makes the module importable, if any."""
    path = module_file(module)
    if not path or not _under(path, folder):
        return None
    rel = os.path.relpath(path, folder)
    parts = module.__name__.split(".")
    if rel in ("/".join(parts) + ".py", "/".join(parts) + "/__init__.py"):
        return parts[0] if len(parts) > 1 or rel.endswith("__init__.py") else rel
    return None


def import_statement(name: str, value: Any) -> str | None:
    """``import numpy as np`` / ``from torch import nn`` / ``from math import sqrt as root``."""
    if isinstance(value, types.ModuleType):
        full = value.__name__
        if full == name:
            return f"import {full}"
        head, _, tail = full.rpartition(".")
        if head and tail == name:
            return f"from {head} import {tail}"
        return f"import {full} as {name}"
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "." in qualname \
            or module == "__main__" or module not in sys.modules:
        return None
    try:
        if getattr(sys.modules[module], qualname) is not value:
            return None
    except AttributeError:
        return None
    return f"from {module} import {qualname}" + (f" as {name}" if name != qualname else "")


def _module_of_import(statement: str) -> str:
    words = statement.split()
    return words[1]


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
    roots = _system_roots()

    imports: list[str] = []
    to_pickle: dict[str, Any] = {}
    shipped: set[str] = set()   # relative paths of the notebook's modules that travel
    modules: set[str] = set(analysis.imported_modules)
    for name in analysis.reads:
        if name in skip or name not in namespace:
            continue
        value = namespace[name]
        if name in INJECTED and getattr(value, "__module__", "") in ("celltrain.context",
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


def split_last_expression(source: str, first_line: int, last_expr: bool
                          ) -> tuple[str, str | None]:
    """The cell as (statements, last expression), padded so line numbers match the cell.

    Done here, not in the run, so the runner needs no ``ast`` (its import is a third of a
    trivial run's start-up).
    """
    pad = "\n" * (first_line - 1)
    if not last_expr:
        return pad + source, None
    node = ast.parse(source).body[-1]
    lines = source.splitlines(keepends=True)
    head = lines[node.lineno - 1].encode()[:node.col_offset].decode()
    body = "".join(lines[:node.lineno - 1]) + head
    expression = ast.get_source_segment(source, node)
    return pad + body, "\n" * (first_line - 1 + node.lineno - 1) + expression


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


# -- the environment --------------------------------------------------------------------------
_PACKAGES_DISTRIBUTIONS: dict[str, list[str]] | None = None


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions_for(modules: Iterable[str], exclude: Iterable[str] = ()
                      ) -> tuple[dict[str, str], dict[str, str]]:
    """Third-party distributions behind ``modules``: ({dist: version}, {module: dist})."""
    global _PACKAGES_DISTRIBUTIONS
    if _PACKAGES_DISTRIBUTIONS is None:
        _PACKAGES_DISTRIBUTIONS = metadata.packages_distributions()
    skip = set(sys.stdlib_module_names) | set(sys.builtin_module_names) | NO_PIN | \
        {"__main__", "builtins", "__mp_main__"} | set(exclude)
    dists: dict[str, str] = {}
    module_dists: dict[str, str] = {}
    for module in modules:
        top = (module or "").split(".")[0]
        if not top or top in skip or top.startswith("_"):
            continue
        for dist in _PACKAGES_DISTRIBUTIONS.get(top, [])[:1]:
            if _normalize(dist) in NO_PIN:
                continue
            try:
                dists[dist] = metadata.version(dist)
                module_dists[top] = dist
            except metadata.PackageNotFoundError:
                pass
    return dict(sorted(dists.items())), module_dists


def release(version: str) -> str:
    return version.split("+")[0]


def requirement_name(requirement: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return _normalize(m.group(1)) if m else ""


def auto_pins(kernel: Mapping[str, str], image: Mapping[str, str] | None,
              explicit: Iterable[str] = ()) -> list[str]:
    """Pins for the packages whose version in the image differs from the kernel's.

    ``image`` None (unknown) pins them all: installing a version that is already there is a
    no-op for pip.  Packages the user named (``--pip``, ``--requirements``) are left to them.
    """
    named = {requirement_name(r) for r in explicit}
    have = {_normalize(k): v for k, v in (image or {}).items()}
    pins = []
    for dist, version in kernel.items():
        key = _normalize(dist)
        if key in named:
            continue
        if image is not None and key in have and release(have[key]) == release(version):
            continue
        pins.append(f"{dist}=={release(version)}")
    return pins


def read_requirements(path: str | os.PathLike) -> list[str]:
    """Requirement lines of a requirements file (no options: they cannot reach the build)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise BundleError(f"--requirements {path}: no such file (relative paths start at "
                          f"{os.getcwd()})")
    out = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise BundleError(f"--requirements {path}, line {number}: {line!r} is a pip "
                              f"option; only requirements (name==version) are supported: "
                              f"set pip options in pip.conf, which builds use")
        out.append(line)
    return out


PROBE = ("import json,sys\n"
         "try:\n from importlib import metadata\n"
         " pk={d.metadata['Name']:d.version for d in metadata.distributions() if d.metadata['Name']}\n"
         "except Exception:\n pk={}\n"
         "print(json.dumps({'python':list(sys.version_info[:3]),'packages':pk}))")


def image_facts(client, image: str, cache_dir: str | os.PathLike) -> dict:
    """The image's Python version and packages, asked once per image id and cached."""
    import docker
    image_id = client.images.get(image).id
    cache = Path(cache_dir) / f"{image_id.replace(':', '-')}.json"
    if cache.exists():
        try:
            return json.loads(cache.read_text())
        except ValueError:
            pass
    try:
        output = client.containers.run(
            image, ["sh", "-c", 'exec "$(command -v python3 || command -v python)" -c "$0"',
                    PROBE], entrypoint=[], remove=True, network_disabled=True,
            stdout=True, stderr=False)
        facts = json.loads(output.decode().strip().splitlines()[-1])
    except (docker.errors.ContainerError, ValueError, IndexError) as e:
        raise BundleError(f"the image {image} has no working Python (python3 or python), "
                          f"which a %%train run needs: {str(e).strip()[:300]}") from None
    except docker.errors.DockerException as e:
        raise BundleError(f"could not ask the image {image} for its Python version and "
                          f"packages: {str(e).strip()[:300]}") from None
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(facts))
    return facts


def check_python(image: str, facts: dict) -> None:
    have = tuple(facts["python"][:2])
    want = tuple(sys.version_info[:2])
    if have != want:
        raise BundleError(
            f"the image {image} runs Python {have[0]}.{have[1]}, but this kernel runs "
            f"{want[0]}.{want[1]}: functions and classes defined in the notebook travel as "
            f"Python {want[0]}.{want[1]} bytecode, which only the same Python version can run. "
            f"Use an image with Python {want[0]}.{want[1]} (--image), or a kernel with Python "
            f"{have[0]}.{have[1]}. Nothing was started.")


def load_results(path: str | os.PathLike) -> tuple[dict[str, Any], Any, bool]:
    """What the runner sent back: ({--out name: value}, last expression value, whether any)."""
    import cloudpickle  # noqa: F401
    values: dict[str, Any] = {}
    value, has_value = None, False
    with open(path, "rb") as f:
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
