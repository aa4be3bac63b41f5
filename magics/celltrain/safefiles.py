"""Reading files that a run's container could have written, without following its links.

The supervisor runs as root and a run folder holds files the container wrote (its telemetry
folder is mounted read-write, ``./outputs`` comes back from it).  A container that makes
``telemetry/failure.txt`` a link to ``/etc/shadow`` must not get that file's text as its reason.
So every path below a run folder is walked one component at a time with ``O_NOFOLLOW``
(``openat``), never resolved, and every read is capped.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

DEFAULT_CAP = 64 * 1024


class UnsafePath(OSError):
    """A path below a run folder that is a link, leaves the folder, or is not a plain file."""


def _parts(rel: str | os.PathLike) -> list[str]:
    path = PurePosixPath(os.fspath(rel))
    if path.is_absolute() or any(p in ("..", "") for p in path.parts) or "\0" in str(path):
        raise UnsafePath(errno.EINVAL, f"not a path inside the run folder: {os.fspath(rel)!r}")
    return [p for p in path.parts if p != "."]


def open_beneath(root: str | os.PathLike, rel: str | os.PathLike,
                 flags: int = os.O_RDONLY) -> int:
    """A file descriptor for ``root/rel``, refusing a link at any step (UnsafePath).

    A missing file raises FileNotFoundError, as ``open`` would.
    """
    parts = _parts(rel)
    if not parts:
        raise UnsafePath(errno.EINVAL, f"no file named in {os.fspath(rel)!r}")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(e.errno, f"{part!r} in {os.fspath(rel)!r} is a link or "
                                              "not a folder: not followed") from None
                raise
            os.close(fd)
            fd = nxt
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafePath(e.errno, f"{os.fspath(rel)!r} is a symbolic link: "
                                          "not followed") from None
            raise
    finally:
        os.close(fd)


def read_bytes(root: str | os.PathLike, rel: str | os.PathLike, cap: int = DEFAULT_CAP, *,
               tail: bool = False, offset: int = 0) -> bytes:
    """At most ``cap`` bytes of the plain file ``root/rel``: from ``offset``, or its last bytes.

    Raises FileNotFoundError if it is missing and UnsafePath if it is a link, a fifo, a device
    or a folder (a fifo would block the reader forever).
    """
    fd = open_beneath(root, rel)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(errno.EINVAL, f"{os.fspath(rel)!r} is not a plain file")
        start = max(0, info.st_size - cap) if tail else offset
        os.lseek(fd, start, os.SEEK_SET)
        chunks, left = [], cap
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(root: str | os.PathLike, rel: str | os.PathLike, cap: int = DEFAULT_CAP, *,
              tail: bool = False, default: str | None = None) -> str | None:
    """The text of ``root/rel`` (capped, undecodable bytes replaced); ``default`` if missing
    or unsafe to read."""
    try:
        return read_bytes(root, rel, cap, tail=tail).decode(errors="replace")
    except (FileNotFoundError, UnsafePath, NotADirectoryError):
        return default


def size_beneath(root: str | os.PathLike, rel: str | os.PathLike) -> int | None:
    """The size of the plain file ``root/rel``, or None if missing, a link or not a file."""
    try:
        fd = open_beneath(root, rel)
    except (FileNotFoundError, UnsafePath, NotADirectoryError):
        return None
    try:
        info = os.fstat(fd)
        return info.st_size if stat.S_ISREG(info.st_mode) else None
    finally:
        os.close(fd)


def list_beneath(root: str | os.PathLike, rel: str | os.PathLike) -> list[str]:
    """The names in the folder ``root/rel``, reached without following a link (UnsafePath if
    a step is one); FileNotFoundError if it is missing, NotADirectoryError if not a folder."""
    fd = open_beneath(root, rel, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def is_inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Whether ``path`` resolves to a place inside ``root`` (links resolved)."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())
