"""The content hash recorded with a version and checked on download."""
from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath


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
