"""Bringing ``./outputs`` and ``./logs`` back into a run folder without following a link.

The files come from the run (a container's archive, or the local backend's work folder), so
they are the run's to choose: an absolute link to ``/etc/passwd`` must neither crash the
supervisor (tarfile's data filter raises on it) nor be copied as the host file's content
(``shutil.copytree`` follows links).  Plain files and folders are written one component at a
time with ``O_NOFOLLOW``; a relative link that stays inside its folder is kept as a link; every
other link, device, fifo or hard link out is skipped and reported in ``skipped``.
"""
from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO

WARNING_KIND = "output-link"      # Store.add_warning kind: what copy-back left out


class CopyBack:
    """Writes members of ``top`` (e.g. "outputs") below ``dest``; ``skipped`` says what not."""

    def __init__(self, dest: Path, top: str):
        self.dest, self.top = Path(dest), top
        self.skipped: list[str] = []
        self._links: list[tuple[PurePosixPath, str]] = []

    # -- names ---------------------------------------------------------------------------------
    def _name(self, raw: str) -> PurePosixPath | None:
        """The member's path below dest, or None (skipped) if it is not inside ``top``."""
        path = PurePosixPath(raw)
        parts = [p for p in path.parts if p not in ("", ".")]
        if (path.is_absolute() or ".." in parts or "\0" in raw or not parts
                or parts[0] != self.top):
            self.skipped.append(f"{raw!r} is not a path inside {self.top}/: skipped")
            return None
        return PurePosixPath(*parts)

    def _dir_fd(self, rel: PurePosixPath) -> int:
        """A descriptor of folder ``dest/rel``, made as needed, refusing links on the way."""
        fd = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in rel.parts:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    # -- writing ---------------------------------------------------------------------------------
    def folder(self, rel: PurePosixPath) -> None:
        try:
            os.close(self._dir_fd(rel))
        except OSError as e:
            self._refused(rel, e)

    def file(self, rel: PurePosixPath, source: IO[bytes], mode: int, mtime: float | None) -> None:
        """Write ``source`` as the plain file ``dest/rel`` (a link already there is replaced,
        never written through)."""
        try:
            parent = self._dir_fd(rel.parent)
        except OSError as e:
            return self._refused(rel, e)
        try:
            try:
                info = os.lstat(rel.name, dir_fd=parent)
                if not stat.S_ISREG(info.st_mode):
                    if stat.S_ISDIR(info.st_mode):
                        shutil.rmtree(os.path.join(self.dest, rel))
                    else:
                        os.unlink(rel.name, dir_fd=parent)
            except FileNotFoundError:
                pass
            fd = os.open(rel.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                         (mode & 0o755) | 0o600, dir_fd=parent)
            with open(fd, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
                os.fchmod(out.fileno(), (mode & 0o755) | 0o600)   # no setuid, no group write
                if mtime is not None:
                    os.utime(out.fileno(), (mtime, mtime))
        except OSError as e:
            self._refused(rel, e)
        finally:
            os.close(parent)

    def link(self, rel: PurePosixPath, target: str) -> None:
        """Keep a relative link that stays inside ``top``; links are made after every file,
        so nothing is ever written through one."""
        inside = posixpath.normpath(posixpath.join(str(rel.parent), target))
        if (target.startswith("/") or "\0" in target
                or not (inside == self.top or inside.startswith(self.top + "/"))):
            self.skipped.append(f"{rel} is a link to {target}: skipped")
        else:
            self._links.append((rel, target))

    def other(self, rel: PurePosixPath, what: str) -> None:
        self.skipped.append(f"{rel} is {what}: skipped")

    def _refused(self, rel: PurePosixPath, e: OSError) -> None:
        why = "a link on its way" if e.errno in (errno.ELOOP, errno.ENOTDIR) else e.strerror
        self.skipped.append(f"{rel} could not be written ({why}): skipped")

    def finish(self) -> list[str]:
        """Make the kept links, then drop any whose chain of links leaves ``top``."""
        made = []
        for rel, target in self._links:
            try:
                parent = self._dir_fd(rel.parent)
            except OSError as e:
                self._refused(rel, e)
                continue
            try:
                try:
                    os.unlink(rel.name, dir_fd=parent)
                except (FileNotFoundError, IsADirectoryError, PermissionError):
                    pass
                os.symlink(target, rel.name, dir_fd=parent)
                made.append((rel, target))
            except OSError as e:
                self._refused(rel, e)
            finally:
                os.close(parent)
        root = os.path.realpath(self.dest / self.top)
        for rel, target in made:
            real = os.path.realpath(self.dest / rel)
            if not (real == root or real.startswith(root + os.sep)):
                os.unlink(self.dest / rel)
                self.skipped.append(f"{rel} is a link to {target}, which leads out of "
                                    f"{self.top}/: skipped")
        return self.skipped


def extract_tar(fileobj: IO[bytes], dest: Path, top: str) -> list[str]:
    """Extract the archive Docker gave for ``top`` (its members all start with ``top/``) into
    ``dest``; returns what was skipped, one line each."""
    copy = CopyBack(dest, top)
    written: dict[str, PurePosixPath] = {}
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            rel = copy._name(member.name)
            if rel is None:
                continue
            if member.isdir():
                copy.folder(rel)
            elif member.isreg():
                copy.file(rel, tar.extractfile(member), member.mode, member.mtime)
                written[member.name] = rel
            elif member.issym():
                copy.link(rel, member.linkname)
            elif member.islnk():
                # A hard link to a file of this archive: a copy of it; to anything else: skip.
                source = written.get(member.linkname)
                if source is None:
                    copy.other(rel, f"a hard link to {member.linkname}")
                    continue
                try:
                    fd = _open_written(dest, source)
                except OSError as e:
                    copy._refused(rel, e)
                    continue
                with open(fd, "rb") as f:
                    copy.file(rel, f, member.mode, member.mtime)
            else:
                copy.other(rel, "a device or fifo")
    return copy.finish()


def copy_tree(source: Path, dest: Path, top: str) -> list[str]:
    """Copy the folder ``source`` (the run's ``top``) to ``dest/top`` the same way: links are
    read with readlink, never followed; returns what was skipped."""
    copy = CopyBack(dest, top)
    base = PurePosixPath(top)
    for dirpath, dirnames, filenames in os.walk(source):   # never descends into a link
        here = base / Path(dirpath).relative_to(source).as_posix()
        copy.folder(PurePosixPath(posixpath.normpath(str(here))))
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = PurePosixPath(posixpath.normpath(str(here / name)))
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                copy.link(rel, os.readlink(path))
                if name in dirnames:
                    dirnames.remove(name)
            elif stat.S_ISREG(info.st_mode):
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                except OSError as e:
                    copy._refused(rel, e)
                    continue
                with open(fd, "rb") as f:
                    copy.file(rel, f, info.st_mode, info.st_mtime)
            elif not stat.S_ISDIR(info.st_mode):
                copy.other(rel, "a device, fifo or socket")
    return copy.finish()


def _open_written(dest: Path, rel: PurePosixPath) -> int:
    from .safefiles import open_beneath
    return open_beneath(dest, rel)


def report(store, run_id: str, skipped: list[str]) -> None:
    """One warning on the run for what copy-back left out (the latest line, and a count)."""
    if skipped:
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        store.add_warning(run_id, WARNING_KIND, "; ".join(skipped[:3]) + more,
                          count=len(skipped))
