"""Model names, aliases and tags: what is allowed, the registry's errors and its folder layout."""
from __future__ import annotations

import re
from typing import Any, Mapping

from ..errors import CelltrainError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
LATEST = "latest"
FILES = "files"          # <version>/files/<the registered file or folder>
ARTIFACTS = "artifacts"  # <version>/artifacts/<format>/ (e.g. onnx/model.onnx)
TMP_PREFIX = ".tmp-"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")  # what load() picks in a folder
MODEL_SUFFIXES = TORCH_SUFFIXES + (".safetensors", ".onnx")


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


def check_tags(tags: Mapping | None) -> dict[str, str]:
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


def latest_version(versions: list[tuple[int, bool]]) -> int | None:
    """What 'latest' means: the newest version that is not archived."""
    live = [v for v, archived in versions if not archived]
    return max(live) if live else None


def load_hint(name: str, version: int) -> str:
    """The line of code that loads a version: one wording for cards, summaries and %%train."""
    return f"ws.model({name!r}, version={version}).load(model=...)"
