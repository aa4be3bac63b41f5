"""Registering a run's file: validate, copy into a temporary folder, and rename it into place
inside the transaction that inserts the version's row (a failure anywhere leaves nothing)."""
from __future__ import annotations

import difflib
import os
import secrets
import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .. import states
from .hashing import content_hash
from .leftovers import hold_work_lock
from .names import (FILES, MODEL_SUFFIXES, TMP_PREFIX, ModelRegistrationError, check_alias,
                    check_name, check_tags)

if TYPE_CHECKING:
    from ..run import Run

RUN_BOOKKEEPING = {"exit_code", "output.log", "stderr.log", "build.log", "supervisor.log"}


def _resolve_run_path(run: "Run", path: str | os.PathLike) -> Path:
    """The file or folder ``path`` names in the run's folder, or an error listing what exists."""
    text = str(path).strip()
    rel = PurePosixPath(text.replace("\\", "/"))
    root = run.folder.resolve()
    source = (root / rel).resolve() if text else root
    if rel.is_absolute() or not text or not source.is_relative_to(root) or source == root:
        # e.g. the container's /celltrain-run/src/outputs/model.pt: say what it is called here
        same = [f for f in run.files() if text.endswith("/" + f)] if text else []
        hint = f" Did you mean {same[-1]!r}?" if same else ""
        raise ModelRegistrationError(
            f"model path {text!r} must be relative to the run's folder, e.g. "
            f"'outputs/model.pt' (what the script saved in ./outputs).{hint}")
    if source.exists():
        return source
    files = run.files()
    # suggest the user's own files, not celltrain's bookkeeping
    own = [f for f in files if f not in RUN_BOOKKEEPING
           and not any(part.startswith(".") for part in PurePosixPath(f).parts)]
    hints = [f for f in own if PurePosixPath(f).name == rel.name]
    hints = hints or difflib.get_close_matches(str(rel), own, n=3, cutoff=0.6)
    hints = hints or [f for f in own if f.endswith(MODEL_SUFFIXES)]
    listing = "\n  ".join(files[:40]) or "(none: did the script save into ./outputs?)"
    more = f"\n  ... and {len(files) - 40} more" if len(files) > 40 else ""
    hint = f" Did you mean {' or '.join(repr(h) for h in hints[:3])}?" if hints else ""
    raise ModelRegistrationError(
        f"could not find {text!r} in run {run.id}'s files.{hint} Only ./outputs and ./logs "
        f"come back from a run; the files that exist:\n  {listing}{more}")


def register_version(run: "Run", name: str, path: str | os.PathLike, *,
                     tags: Mapping[str, Any] | None = None, description: str | None = None,
                     aliases: Iterable[str] = ()) -> int:
    """Register ``path`` (a file or folder of the run, e.g. "outputs/model.pt") as the next
    version of model ``name``; returns that version's number (``register_model`` returns
    its ``ModelVersion``)."""
    check_name(name)
    tags = check_tags(tags)
    if isinstance(aliases, str):
        aliases = [aliases]
    aliases = [check_alias(a) for a in aliases]
    if description is not None and not isinstance(description, str):
        raise TypeError(f"description takes a string, not {type(description).__name__}")
    record = run.record
    if record is None:
        raise ModelRegistrationError(f"run {run.id} is not in workspace {run.workspace.path}")
    if record["status"] != states.COMPLETED:
        why = f" ({record['reason']})" if record["reason"] else ""
        if not states.is_terminal(record["status"]):
            fix = "its ./outputs come back when it ends: run.wait(), then register"
        else:
            fix = ("only completed runs are registered; run.download(path) still copies its "
                   "files")
        raise ModelRegistrationError(f"run {run.id} is {record['status']}{why}: {fix}")
    source = _resolve_run_path(run, path)

    store = run.workspace.store
    models_dir = store.models_dir
    tmp = models_dir / f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
    final: Path | None = None
    work = hold_work_lock(store)
    try:
        (tmp / FILES).mkdir(parents=True)
        target = tmp / FILES / source.name
        if source.is_dir():   # a link inside is copied as a link, never followed
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target)
        sha256 = content_hash(target)
        metrics = store.latest_metrics(run.id)
        with store.write() as conn:
            version = store.next_model_version(name, conn)
            final = models_dir / name / str(version)
            store.insert_model_version(
                name, version, run_id=run.id, path=f"{name}/{version}/{FILES}/{source.name}",
                sha256=sha256, description=description, tags=tags, metrics=metrics,
                environment=record["environment"], image_digest=record["image_digest"],
                conn=conn)
            for alias in aliases:
                store.set_model_alias(name, alias, version, conn)
            if final.exists():  # left by a process that died before committing its version
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, final)  # last step: the row commits only with the files in place
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if final is not None and final.exists() and not store.model_exists(name, version):
            shutil.rmtree(final, ignore_errors=True)
        raise
    finally:
        work.close()
    return version
