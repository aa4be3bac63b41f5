"""A submitted run's v1 answers: ``get_details``, ``wait_for_completion``, downloads."""
from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path, PurePosixPath


class ActivityFailedException(Exception):
    """v1's error when ``wait_for_completion`` sees the run fail; carries the details."""

    def __init__(self, details: dict):
        self.details = details
        error = details.get("error", {}).get("error", {})
        super().__init__(f"run {details['runId']} {details['status']}: "
                         f"{error.get('message') or 'no reason recorded'}")


def _iso(t) -> str | None:
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(float(t), datetime.timezone.utc).isoformat()


def details(run) -> dict:
    """v1's ``get_details()`` dict, from the store."""
    record = run.record
    spec = record.get("spec") or {}
    out = {
        "runId": run.id, "target": record.get("target"), "status": record["status"],
        "startTimeUtc": _iso(record.get("started")), "endTimeUtc": _iso(record.get("ended")),
        "properties": {"celltrain.folder": str(run.folder),
                       "celltrain.kind": record.get("kind") or "run"},
        "inputDatasets": [], "outputDatasets": [],
        "runDefinition": {"script": _script(spec, record), "arguments": _args(spec, record),
                          "target": record.get("target"),
                          "environmentVariables": dict(spec.get("env_vars") or {})},
        "logFiles": {name: str(run.folder / name) for name in ("output.log", "stderr.log")
                     if (run.folder / name).exists()},
    }
    if record["status"] in ("Failed", "Canceled"):
        out["error"] = {"error": {"code": record["status"],
                                  "message": record.get("reason") or ""}}
    return out


def _script(spec: dict, record: dict) -> str:
    return spec.get("script") or record.get("script")


def _args(spec: dict, record: dict) -> list:
    return list(spec.get("args") or record.get("args") or [])


def wait_for_completion(run, show_output: bool, raise_on_error: bool) -> dict:
    status = run.wait(show_output=show_output)
    result = details(run)
    if raise_on_error and status != "Completed":
        raise ActivityFailedException(result)
    return result


def _check_name(run, name: str) -> str:
    clean = str(PurePosixPath(str(name).strip("/")))
    if clean in ("", ".") or ".." in PurePosixPath(clean).parts:
        raise ValueError(f"download_file({name!r}): name a file of the run, one of "
                         f"{run.files()[:20]}")
    return clean


def download_file(run, name: str, output_file_path=None) -> Path:
    """v1: ``output_file_path`` is the file to write (or a folder to put it in)."""
    name = _check_name(run, name)
    dest = Path(output_file_path) if output_file_path else Path(PurePosixPath(name).name)
    folder = dest if dest.is_dir() else dest.parent
    got = run.download(name, str(folder.resolve() / ".celltrain-download"))
    try:
        final = folder / got.name if dest.is_dir() else dest
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(got, final)
    finally:
        shutil.rmtree(folder.resolve() / ".celltrain-download", ignore_errors=True)
    return final


def download_files(run, prefix, output_directory, append_prefix: bool = True) -> list[Path]:
    out = Path(output_directory or ".")
    done = []
    for name in run.files():
        if prefix and not name.startswith(prefix.strip("/")):
            continue
        relative = name if append_prefix or not prefix else name[len(prefix.strip("/")):]
        dest = out / relative.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        done.append(download_file(run, name, dest))
    return done
