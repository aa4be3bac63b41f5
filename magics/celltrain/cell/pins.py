"""What the run needs installed: the distributions behind the cell's modules, pins, requirements."""
from __future__ import annotations

import os
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import BundleError

NO_PIN = {"celltrain", "cloudpickle"}   # mounted into every run


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
