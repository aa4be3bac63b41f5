"""Parsing ``%%train`` and ``%train`` arguments.

Typed ``--param`` values, KEY=VALUE options (``--env``, ``--tag``), repeated options, and the
``%train config`` keys and values.
"""
from __future__ import annotations

import ast
import math
import os
from typing import Any

from IPython.core.error import UsageError

DEFAULT_EXPERIMENT = "notebook"
CONFIG_KEYS = {
    "image": "base image for runs (default: the PyTorch image matching this kernel's torch)",
    "gpus": "'all', 'none', a count or comma-separated ids (default: auto)",
    "experiment": f"experiment name (default: {DEFAULT_EXPERIMENT!r})",
    "target": "docker, local or a target saved in the workspace (`celltrain targets`)",
    "workspace": "workspace folder (default: $CELLTRAIN_WORKSPACE or ./.celltrain)",
    "memory": "memory limit, e.g. 8g",
    "cpus": "CPU limit, e.g. 2",
    "timeout": "seconds before a run is stopped",
    "warm": "on (default) or off: start runs from a warm worker where possible",
}


def plain_usage(func):
    """``%%train?`` starts with the usage line: IPython's ``magic_arguments`` opens the help
    with reST's ``::`` (for Sphinx), which a notebook user sees as a stray "::"."""
    doc = func.__doc__ or ""
    if doc.startswith("::"):
        func.__doc__ = doc[2:].lstrip("\n")
    return func


def parse_param(text: str) -> tuple[str, Any]:
    """``lr=0.01`` -> ("lr", 0.01): ints, floats, bools, None, strings and lists."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UsageError(f"--param {text!r} is not NAME=VALUE: write e.g. --param lr=0.01 "
                         f"epochs=30 name=resnet layers=[64,128]")
    if not name.isidentifier() or name in ("log", "progress", "Run") or \
            name in __import__("keyword").kwlist:
        raise UsageError(f"--param {text!r}: {name!r} cannot be a variable name in the cell; "
                         f"use a plain identifier such as lr or num_epochs")
    return name, parse_value(raw.strip(), text)


def parse_value(raw: str, context: str = "") -> Any:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        if "," in raw and not raw.startswith(("[", "(")):
            return [parse_value(part.strip(), context) for part in raw.split(",")]
        if raw.startswith(("[", "(", "{")):
            raise UsageError(f"--param {context!r}: {raw!r} is not a valid list; write "
                             f"e.g. layers=[64,128] (no spaces) or layers=64,128") from None
        return raw
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--param {context!r}: {raw} is not a finite number")
        return value
    if isinstance(value, list) and all(isinstance(v, (bool, int, float, str)) or v is None
                                       for v in value):
        return value
    raise UsageError(f"--param {context!r}: {type(value).__name__} values are not supported; "
                     f"use ints, floats, bools, strings or lists of them")


def pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def flatten(values) -> list[str]:
    out: list[str] = []
    for item in values or []:
        out.extend(item if isinstance(item, list) else [item])
    return out


def config_value(key: str, value: str):
    from .options import parse_gpus
    if key == "target" and not value.strip():
        raise UsageError("%train config target=: give docker, local or a target saved in the "
                         "workspace (`celltrain targets` lists them)")
    if key == "gpus":
        if value in ("all", "none", "auto"):
            return value
        else:
            parts = value.split(",")
            try:
                return parse_gpus(int(value)) if len(parts) == 1 else parts
            except ValueError:
                raise UsageError(f"%train config gpus={value}: use all, none, a count or "
                                 f"comma-separated device ids") from None
    if key == "warm":
        if value.lower() not in ("on", "off"):
            raise UsageError(f"%train config warm={value}: use on or off")
        return value.lower()
    if key in ("cpus", "timeout"):
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"%train config {key}={value}: give a number") from None
        if number <= 0:
            raise UsageError(f"%train config {key}={value}: give a positive number")
        return number
    return value


def cell_origin(shell) -> dict[str, str]:
    """Tags that say where a %%train run came from: the notebook (Jupyter Server names it to
    its kernels in $JPY_SESSION_NAME) and the cell's prompt number, for the run panel."""
    origin = {}
    notebook = os.environ.get("JPY_SESSION_NAME")
    if notebook:
        origin["notebook"] = notebook
    count = cell_number(shell)
    if count > 0:
        origin["cell"] = f"In [{count}]"
    return origin


def cell_number(shell) -> int:
    """The running cell's prompt number: it was compiled (as a run_cell_magic call) just before
    it ran, so the newest compiled entry is its number, which execution_count may already have
    moved past."""
    filename_map = getattr(getattr(shell, "compile", None), "_filename_map", {}) or {}
    return max(filename_map.values(), default=getattr(shell, "execution_count", 0) or 0)
