"""Checking a submission's options before anything starts.

``Experiment.submit`` (and so ``%%train``) passes every option through here before the run row
exists, so a bad value is refused with one message naming the option, the value and the accepted
form, instead of failing later in the supervisor or inside Docker.  Pure Python: the only check
that needs the engine (``check_engine``) imports nothing itself and takes the client.
"""
from __future__ import annotations

import math
import numbers
import os
import posixpath
import re
from pathlib import Path
from typing import Any, Mapping

SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*$", re.IGNORECASE)
SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
MIN_MEMORY = 6 * 2**20              # Docker refuses a smaller memory limit
MIN_CPUS = 0.01                     # Docker's smallest --cpus
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NETWORK_MODES = ("bridge", "host", "none")
NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED_MOUNTS = ("/celltrain-run", "/celltrain-lib")  # where celltrain puts its own files


def size_bytes(option: str, value: Any) -> int:
    """A Docker size (int bytes, or "512m", "8g", "1.5G", "100000b") as bytes, positive."""
    what = (f"{option}={value!r} is not a size: pass bytes as an int or a Docker size like "
            f'"512m" or "8g"')
    if isinstance(value, bool):
        raise ValueError(what)
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, str) and SIZE.match(value):
        digits, unit = SIZE.match(value).groups()
        number = int(float(digits) * SIZE_UNITS[unit.lower()])
    else:
        raise ValueError(what)
    if number <= 0:
        raise ValueError(f"{option}={value!r} is not a positive size: pass bytes as an int or "
                         f'a Docker size like "512m" or "8g"')
    return number


def positive_number(option: str, value: Any, form: str, *, strings: bool) -> float:
    """A finite number above zero; a numeric string too when ``strings``."""
    number = None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    elif strings and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number <= 0:
        raise ValueError(f"{option}={value!r} is not {form}")
    return number


def check_script(source: Path, script: Any) -> str:
    """The script as a path relative to ``source``, refused if it lies outside or is missing."""
    if not isinstance(script, (str, os.PathLike)) or not str(script).strip():
        raise ValueError(f"script={script!r} is not a file name: pass the script's path "
                         f"relative to source_dir, e.g. script='train.py'")
    path = Path(script)
    resolved = (source / path).resolve()
    if not resolved.is_relative_to(source) or resolved == source:
        raise ValueError(f"script={str(script)!r} is outside the source folder {source}: pass a "
                         f"path relative to source_dir that stays inside it (only source_dir "
                         f"is copied into the run), or pass source_dir= a folder that holds it")
    if not resolved.is_file():
        raise FileNotFoundError(f"script {str(script)!r} is not in the source folder {source}: "
                                f"pass its path relative to source_dir")
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(source).as_posix()
    except ValueError:          # an absolute path through a link to the source folder
        return resolved.relative_to(source).as_posix()


def check_env_vars(env_vars: Mapping | None) -> dict[str, str]:
    if env_vars is None:
        return {}
    if not isinstance(env_vars, Mapping):
        raise ValueError(f"env_vars={env_vars!r} is not a mapping: pass e.g. "
                         f"env_vars={{'WANDB_MODE': 'offline'}}")
    out = {}
    for name, value in env_vars.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ValueError(f"env_vars name {name!r} is not an environment variable name: "
                             f"use letters, digits and _, not starting with a digit "
                             f"(e.g. 'MY_VAR')")
        if not isinstance(value, str) or "\0" in value:
            raise ValueError(f"env_vars[{name!r}]={value!r} is not a string without NUL "
                             f"characters: pass text, e.g. env_vars={{{name!r}: str(value)}}")
        out[name] = value
    return out


def check_mounts(mounts: Mapping | None) -> dict[str, str]:
    """{host path: container path}: the host path exists, the container path is absolute."""
    if mounts is None:
        return {}
    if not isinstance(mounts, Mapping):
        raise ValueError(f"mounts={mounts!r} is not a mapping: pass {{host path: container "
                         f"path}}, e.g. mounts={{'./data': '/data'}}")
    out = {}
    for host, inside in mounts.items():
        if not isinstance(host, (str, os.PathLike)) or not Path(host).expanduser().exists():
            raise FileNotFoundError(f"mount source {host} does not exist on the host")
        host_path = str(Path(host).expanduser().resolve())
        if ":" in host_path:
            raise ValueError(f"mounts host path {host_path!r} holds a ':', which Docker's "
                             f"volume syntax cannot carry: mount a folder above it, or rename it")
        form = (f"mounts[{str(host)!r}]={inside!r} is not an absolute container path: pass "
                f"e.g. mounts={{{str(host)!r}: '/data'}}")
        if not isinstance(inside, str) or not inside.startswith("/") or ":" in inside:
            raise ValueError(form)
        normal = posixpath.normpath(inside)
        if normal == "/" or any(normal == r or normal.startswith(r + "/") or
                                r.startswith(normal + "/") for r in RESERVED_MOUNTS):
            raise ValueError(f"mounts[{str(host)!r}]={inside!r} would cover the container's / or "
                             f"celltrain's own {' and '.join(RESERVED_MOUNTS)}: mount it "
                             f"elsewhere, e.g. '/data'")
        out[host_path] = normal
    return out


def check_network(network: Any) -> str | None:
    if network is None:
        return None
    if not isinstance(network, str) or not NETWORK_NAME.match(network):
        raise ValueError(f"network={network!r} is not a network: pass one of "
                         f"{', '.join(map(repr, NETWORK_MODES))} or the name of a Docker "
                         f"network (`docker network ls`)")
    return network


def check_options(*, memory: Any = None, cpus: Any = None, shm_size: Any = "2g",
                  env_vars: Mapping | None = None, mounts: Mapping | None = None,
                  timeout: Any = None, network: Any = None) -> dict[str, Any]:
    """Every resource option checked; returns them normalized (mounts resolved, numbers float).

    Sizes keep the form they were given (the OOM reason quotes it back)."""
    if memory is not None:
        if size_bytes("memory", memory) < MIN_MEMORY:
            raise ValueError(f"memory={memory!r} is below Docker's smallest limit of 6 MB: "
                             f'pass e.g. memory="512m"')
    if shm_size is not None:
        size_bytes("shm_size", shm_size)
    if cpus is not None:
        cpus = positive_number("cpus", cpus, "a number of CPUs: pass a positive number, "
                                             "e.g. cpus=2 or cpus=0.5", strings=True)
        if cpus < MIN_CPUS:
            raise ValueError(f"cpus={cpus!r} is below Docker's smallest {MIN_CPUS}: pass e.g. "
                             f"cpus=0.5")
    if timeout is not None:
        timeout = positive_number("timeout", timeout, "a number of seconds: pass a positive "
                                                      "int or float, e.g. timeout=3600",
                                  strings=False)
    return {"memory": memory.strip() if isinstance(memory, str) else memory,
            "cpus": cpus, "shm_size": shm_size.strip() if isinstance(shm_size, str) else shm_size,
            "env_vars": check_env_vars(env_vars), "mounts": check_mounts(mounts),
            "timeout": timeout, "network": check_network(network)}


def parse_gpus(gpus):
    """Validate a gpus value early: 'all', 'none', a non-negative count or a list of device ids."""
    if gpus in (None, "none", "all") or isinstance(gpus, (list, tuple)):
        return gpus
    try:
        count = int(gpus)
    except (TypeError, ValueError):
        count = -1
    if count < 0 or isinstance(gpus, bool) or (isinstance(gpus, float) and not gpus.is_integer()):
        raise ValueError(f"gpus takes 'all', 'none', a count or a list of device ids, "
                         f"not {gpus!r}")
    return count
