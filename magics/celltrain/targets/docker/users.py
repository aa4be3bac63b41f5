"""Who a run's container runs as, so its telemetry folder is writable by it and by nobody else."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path


def container_user(container) -> tuple[int, int] | None:
    """(uid, gid) the container's process runs as, from its image's USER: empty or root is
    root, "uid[:gid]" is taken as it is, a name is looked up in the image's /etc/passwd (read
    from the created container).  None when the name is not there (Docker will say so)."""
    user = (container.attrs.get("Config", {}).get("User") or "").strip()
    name, _, group = user.partition(":")
    if name in ("", "root", "0"):
        return 0, int(group) if group.isdigit() else 0
    passwd = {}
    if not (name.isdigit() and group.isdigit()):
        for line in _image_file(container, "/etc/passwd").splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
                passwd.setdefault(fields[0], (int(fields[2]), int(fields[3])))
                passwd.setdefault(fields[2], (int(fields[2]), int(fields[3])))
    if name.isdigit():
        uid = int(name)
        gid = passwd.get(name, (uid, 0))[1]
    elif name in passwd:
        uid, gid = passwd[name]
    else:
        return None
    return uid, int(group) if group.isdigit() else gid


def _image_file(container, path: str, cap: int = 1 << 20) -> str:
    """A small text file of the container's image (e.g. /etc/passwd), or "" if there is none."""
    import docker
    try:
        chunks, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.next()
            if member is None or not member.isreg():
                return ""
            return tar.extractfile(member).read(cap).decode(errors="replace")
    except (docker.errors.APIError, tarfile.TarError):
        return ""


def let_write(folder: Path, user: tuple[int, int] | None) -> None:
    """Make the telemetry folder writable by the container's user and nobody else: ours if it
    runs as root or as us, else chowned to it (we are root), else our group's (the container
    has our gid as a supplementary group).  Never world-writable."""
    if user is None or user[0] in (0, os.getuid()):
        folder.chmod(0o700)
        return
    try:
        os.chown(folder, *user)
        folder.chmod(0o700)
    except PermissionError:
        os.chown(folder, -1, os.getgid())
        folder.chmod(0o2770)
