"""The temporary folders of registrations, exports and deletes: a shared lock on
``models/.work.lock`` while a process has some, and their removal on open once their process died."""
from __future__ import annotations

import fcntl
import os
import re
import shutil
from pathlib import Path

from .names import ARTIFACTS, TMP_PREFIX

WORK_LOCK = ".work.lock"  # in models/: shared while a process has temporary folders there
DELETED_RE = re.compile(rf"^{re.escape(TMP_PREFIX)}deleted-(.+)-(\d+)-[0-9a-f]{{8}}$")


def hold_work_lock(store):
    """A shared lock on models/.work.lock, held while this process has temporary folders
    there: remove_leftovers() removes them only when nobody holds it."""
    lock = open(store.models_dir / WORK_LOCK, "a")
    fcntl.flock(lock, fcntl.LOCK_SH)
    return lock


def remove_leftovers(store) -> list[Path]:
    """Remove the temporary folders of registrations, exports and deletes whose process died
    (a kill -9 mid-copy left hundreds of MB).  Done when no process is working there: one
    that is keeps its folders, and the next opening of the workspace cleans up."""
    models = store.models_dir
    with open(models / WORK_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []
        removed = []
        # Versions first: a version put back brings its artifacts' leftovers with it.
        for pattern in (f"{TMP_PREFIX}*", f"*/*/{ARTIFACTS}/{TMP_PREFIX}*"):
            for tmp in list(models.glob(pattern)):
                if tmp.is_symlink() or not tmp.is_dir() or _put_back(store, tmp):
                    continue
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
        return removed


def _put_back(store, tmp: Path) -> bool:
    """A folder moved aside inside a transaction that never committed goes back in place."""
    if tmp.name.startswith(f"{TMP_PREFIX}old-onnx-"):
        home = tmp.parent / "onnx"          # an export died between its two renames
    else:
        deleted = DELETED_RE.match(tmp.name)
        if deleted is None or not store.model_exists(deleted[1], int(deleted[2])):
            return False
        home = store.models_dir / deleted[1] / deleted[2]   # a delete that did not commit
    if home.exists():
        return False
    os.rename(tmp, home)
    return True
