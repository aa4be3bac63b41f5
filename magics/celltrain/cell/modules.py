"""Where modules come from: the user's own (which travel) or installed ones (imported in the run)."""
from __future__ import annotations

import os
import sys
import sysconfig
import types
from typing import Any

from .pins import NO_PIN


# -- where modules come from -----------------------------------------------------------------
def system_roots() -> list[str]:
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
