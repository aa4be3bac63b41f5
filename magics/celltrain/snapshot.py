"""The code snapshot: what of the source folder goes with a run.

A ``.celltrainignore`` file in the source folder (gitignore-like: one glob per line, ``#`` for
comments, a trailing ``/`` for folders) leaves things out.  Above the size limit the submission is
refused before anything starts, naming the largest files and the ignore-file fix; data belongs in
a read-only mount, not in the snapshot.
"""
from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path

from .errors import SourceTooLarge

IGNORE_FILE = ".celltrainignore"
DEFAULT_IGNORES = [".git/", "__pycache__/", ".ipynb_checkpoints/", ".celltrain/", ".venv/",
                   "*.pyc", "outputs/", "logs/"]
DEFAULT_LIMIT_MB = 300


def ignore_patterns(source: Path) -> list[str]:
    patterns = list(DEFAULT_IGNORES)
    path = source / IGNORE_FILE
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line)
    return patterns


def _ignored(rel: str, is_dir: bool, patterns: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    for pattern in patterns:
        if pattern.endswith("/"):
            if not is_dir:
                continue
            pattern = pattern[:-1]
        pattern = pattern.lstrip("/")
        if fnmatch.fnmatch(rel, pattern) or ("/" not in pattern and fnmatch.fnmatch(name, pattern)):
            return True
    return False


def collect(source: Path) -> list[tuple[Path, str, int]]:
    """Files to snapshot as (absolute path, relative path, size)."""
    patterns = ignore_patterns(source)
    files = []
    for dirpath, dirnames, filenames in os.walk(source):
        rel_dir = os.path.relpath(dirpath, source)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not _ignored(rel_dir + d, True, patterns)]
        for name in filenames:
            rel = rel_dir + name
            if _ignored(rel, False, patterns):
                continue
            full = Path(dirpath) / name
            try:
                files.append((full, rel, full.stat().st_size))
            except OSError:   # a dangling link: nothing to copy
                continue
    return files


def check_size(source: Path, files: list[tuple[Path, str, int]], limit_mb: float) -> None:
    total = sum(size for _, _, size in files)
    if total <= limit_mb * 1024 * 1024:
        return
    biggest = sorted(files, key=lambda f: -f[2])[:5]
    listing = "\n".join(f"  {size / 2**20:8.1f} MB  {rel}" for _, rel, size in biggest)
    raise SourceTooLarge(
        f"the source folder {source} holds {total / 2**20:.1f} MB, over the {limit_mb:g} MB "
        f"snapshot limit. Largest files:\n{listing}\nAdd them (or their folder, e.g. 'data/') "
        f"to {source / IGNORE_FILE} and mount the data read-only with "
        f"submit(..., mounts={{'/host/data': '/data'}}), or raise snapshot_limit_mb.")


def snapshot(source: Path, dest: Path, limit_mb: float = DEFAULT_LIMIT_MB,
             files: list[tuple[Path, str, int]] | None = None) -> int:
    """Copy the source folder (or the already collected ``files``) into ``dest``."""
    files = collect(source) if files is None else files
    check_size(source, files, limit_mb)
    for full, rel, _ in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(full, target)
    dest.mkdir(parents=True, exist_ok=True)
    return len(files)
