"""What the sidebar shows, as JSON-ready dicts read from the workspace store: no HTTP in here.

The handlers in ``routes.py`` only parse a request, call one method here and write the answer, so
everything the REST API does can be called (and benchmarked) as plain Python.  Errors are
``ManagerError`` subclasses that carry the HTTP status they map to and a message that names the
value at fault.

The server is one more view of the store, like a kernel or the CLI: it keeps no state the store
lacks (the only thing kept is a cache of downsampled series, keyed by the newest metric id, so a
poll of a finished 1M-point run does not scan it again).
"""
from __future__ import annotations

import json
import math
import os
import stat
import threading
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .. import safefiles, states
from ..ranks import read_ranks
from ..run import Run
from ..runcode import run_code
from ..runfiles import BUILD_LOG, OUTPUT_LOG, STDERR_LOG
from ..store.runs import RUN_SUMMARY, format_warning
from ..store.search import SearchError
from ..store.series import MetricSeries

WORKSPACE_ENV = "CELLTRAIN_WORKSPACE"
DEFAULT_DIR = ".celltrain"
SORT_KEYS = ("created", "started", "ended", "number", "status", "id")
MAX_PAGE = 10_000
LOG_FILES = {"output": OUTPUT_LOG, "stderr": STDERR_LOG, "build": BUILD_LOG,
             "supervisor": "supervisor.log"}
DEFAULT_TAIL_BYTES = 64 * 1024
MAX_LOG_BYTES = 4 * 1024 * 1024
MAX_CHART_POINTS = 100_000
MAX_OFFSET = 2**63 - 1          # SQLite's integers: a larger OFFSET raises OverflowError


def _clean(value):
    """NaN and infinities (which Python's json writes, and JSON lacks) become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class ManagerError(Exception):
    status = 500


class NotFound(ManagerError):
    status = 404


class BadRequest(ManagerError):
    status = 400


class Forbidden(ManagerError):
    status = 403


class Conflict(ManagerError):
    status = 409


def find_workspace(configured: str | None, root_dir: str | os.PathLike) -> tuple[Path, str]:
    """The workspace the kernels use: configuration, else $CELLTRAIN_WORKSPACE, else
    ``<root_dir>/.celltrain`` (a notebook in the root folder opens ``./.celltrain``)."""
    if configured:
        return Path(configured).expanduser().resolve(), "config (CelltrainConfig.workspace)"
    if os.environ.get(WORKSPACE_ENV):
        return Path(os.environ[WORKSPACE_ENV]).expanduser().resolve(), \
            f"environment (${WORKSPACE_ENV})"
    return (Path(root_dir).expanduser() / DEFAULT_DIR).resolve(), \
        "default (.celltrain in the server's root folder)"


class CelltrainManager:
    """Reads one workspace for the server.  Opens it only once its database exists, so pointing
    the server at a folder creates nothing there."""

    def __init__(self, path: str | os.PathLike, source: str = "given", reconcile: bool = True):
        self.path = Path(path).expanduser().resolve()
        self.source = source
        self.reconcile_on_open = reconcile
        self._workspace = None
        self._lock = threading.Lock()
        self._metric_series: MetricSeries | None = None

    # -- the workspace ---------------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return (self.path / "celltrain.db").is_file()

    def workspace(self):
        """The Workspace, opened on first use.  Opening adopts runs whose supervisor died (as a
        kernel opening it would), so runs left by a closed kernel still finish while only the
        server is up; config ``CelltrainConfig.reconcile = False`` turns that off."""
        if self._workspace is None:
            with self._lock:
                if self._workspace is None:
                    from ..workspace import Workspace
                    try:
                        self._workspace = Workspace(self.path,
                                                    reconcile=self.reconcile_on_open)
                    except RuntimeError as e:   # a newer schema: the store says what to do
                        raise ManagerError(str(e)) from e
        return self._workspace

    @property
    def store(self):
        return self.workspace().store

    @property
    def metric_series(self) -> MetricSeries:
        """The store's chart reads and their cache of downsampled series, made on first use."""
        if self._metric_series is None:
            store = self.store
            with self._lock:
                if self._metric_series is None:
                    self._metric_series = MetricSeries(store)
        return self._metric_series

    def info(self) -> dict[str, Any]:
        from .. import __version__
        out = {"path": str(self.path), "source": self.source, "exists": self.exists,
               "version": __version__, "states": list(states.ALL),
               "active_states": [s for s in states.ALL if s in states.ACTIVE],
               "runs": 0, "experiments": 0}
        if self.exists:
            out["runs"] = self.store.count_runs()
            out["experiments"] = self.store.count_experiments()
        else:
            out["message"] = (f"no workspace at {self.path} yet: it appears with the first run "
                              f"submitted there (set CelltrainConfig.workspace or "
                              f"${WORKSPACE_ENV} to show another one)")
        return out

    # -- experiments and runs --------------------------------------------------------------------
    def experiments(self) -> list[dict[str, Any]]:
        return self.store.experiments() if self.exists else []

    def list_runs(self, *, experiment: str | None = None, status: list[str] | None = None,
                  sort: str = "created", descending: bool = True, limit: int = 100,
                  offset: int = 0, search: str | None = None) -> dict[str, Any]:
        """One page of runs, newest first by default, and how many match in all."""
        return json.loads(self.list_runs_json(experiment=experiment, status=status, sort=sort,
                                              descending=descending, limit=limit, offset=offset,
                                              search=search))

    def list_runs_json(self, *, experiment: str | None = None, status: list[str] | None = None,
                       sort: str = "created", descending: bool = True, limit: int = 100,
                       offset: int = 0, search: str | None = None) -> str:
        """``list_runs`` as the JSON text the handler sends.  SQLite writes each run's JSON
        itself (its JSON columns are embedded, never parsed in Python): 10,000 runs stay fast.
        ``search`` is a query of ``store.search`` ("lr=0.01 birds"), run over every run."""
        if sort not in SORT_KEYS:
            raise BadRequest(f"cannot sort runs by {sort!r}: use one of {', '.join(SORT_KEYS)}")
        for s in status or ():
            if s not in states.ALL:
                raise BadRequest(f"unknown run status {s!r}: use one of {', '.join(states.ALL)}")
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be between 1 and {MAX_PAGE}, not {limit!r}")
        if not 0 <= offset <= MAX_OFFSET:
            raise BadRequest(f"offset must be between 0 and {MAX_OFFSET}, not {offset!r}")
        head = {"limit": limit, "offset": offset, "sort": sort,
                "order": "desc" if descending else "asc", "total": 0}
        if not self.exists:
            return json.dumps({**head, "runs": []})
        try:
            head["total"], runs = self.store.run_summaries_json(
                experiment=experiment, status=status, order_by=sort, descending=descending,
                limit=limit, offset=offset, search=search)
        except SearchError as e:
            raise BadRequest(str(e)) from None
        if "NaN" in runs or "Infinity" in runs:
            # Python wrote a NaN into params or tags: JSON has none, so parse and clean them.
            records = self.store.list_runs(experiment=experiment, status=status, order_by=sort,
                                           descending=descending, limit=limit, offset=offset,
                                           search=search)
            runs = json.dumps(_clean([{k: r[k] for k in RUN_SUMMARY} for r in records]))
        return json.dumps(head)[:-1] + ', "runs": ' + runs + "}"

    def _record(self, run_id: str) -> dict[str, Any]:
        record = self.store.get_run(run_id) if self.exists else None
        if record is None:
            raise NotFound(f"no run {run_id!r} in workspace {self.path}")
        return record

    def run_record(self, run_id: str) -> dict[str, Any]:
        """The run's stored record, or NotFound naming it."""
        return self._record(run_id)

    def run(self, run_id: str) -> dict[str, Any]:
        """Everything the run panel shows, except series and logs (fetched on their own)."""
        record = self._record(run_id)
        store = self.store
        out = {k: record[k] for k in RUN_SUMMARY}
        for key in ("args", "image", "image_digest", "container_id", "environment"):
            out[key] = record[key]
        out["options"] = {k: v for k, v in record["options"].items()
                          if k in ("gpus", "memory", "cpus", "shm_size", "timeout", "network")}
        out["terminal"] = states.is_terminal(record["status"])
        out["history"] = store.status_history(run_id)
        out["warnings"] = [format_warning(w) for w in store.warnings(run_id)]
        names = self.metric_series.metric_names(run_id)
        out["metrics"] = self.metric_series.latest_metrics(run_id, names)
        out["metric_names"] = names
        out["tables"] = store.table_names(run_id)
        out["images"] = store.images(run_id)
        out["models"] = [{"name": name, "version": version}
                         for name, version in sorted(store.model_versions_of_run(run_id))]
        out["folder"] = str(store.run_dir(run_id))
        out["workspace"] = str(self.path)
        out["ranks"] = read_ranks(store.run_dir(run_id), record["status"])
        out["code"] = run_code(record, store.run_dir(run_id))
        out["system"] = store.latest_system(run_id)     # the last sample; series: runs/<id>/system
        return _clean(out)

    def sweep(self, run_id: str) -> dict[str, Any]:
        """A sweep's panel: its view as HTML (the notebook's static copy) and its trials."""
        from ..sweep.handle import Sweep
        from ..views.sweep_view import sweep_data, sweep_html
        record = self._record(run_id)
        if record.get("kind") != "sweep":
            raise BadRequest(f"run {run_id} is a {record.get('kind')!r} run, not a sweep")
        data = sweep_data(Sweep(self.workspace(), run_id))
        return _clean({"id": run_id, "html": sweep_html(data), "trials": data["trials"],
                       "best": (record["progress"] or {}).get("best")})

    def cancel(self, run_id: str, grace: float = 10.0) -> dict[str, Any]:
        """Ask the run's supervisor to stop it (SIGTERM, SIGKILL after ``grace``); returns at once."""
        record = self._record(run_id)
        if states.is_terminal(record["status"]):
            raise Conflict(f"run {run_id} has already ended {record['status']}: "
                           f"there is nothing to cancel")
        if not 0 <= grace <= 3600:
            raise BadRequest(f"grace must be between 0 and 3600 seconds, not {grace!r}")
        status = Run(self.workspace(), run_id).cancel(grace=grace, wait=False)
        return {"id": run_id, "status": status, "cancel_requested": True}

    # -- metrics ---------------------------------------------------------------------------------
    def metrics(self, run_id: str, names: list[str] | None = None,
                max_points: int = 1000, rank: int = 0) -> dict[str, Any]:
        """Each metric of one rank (rank 0's unless told) as x (step) and y (value) arrays,
        at most ``max_points`` points each."""
        self._record(run_id)
        if not 4 <= max_points <= MAX_CHART_POINTS:
            raise BadRequest(f"max_points must be between 4 and {MAX_CHART_POINTS}, "
                             f"not {max_points!r}")
        if rank < 0:
            raise BadRequest(f"rank must be 0 or more, not {rank!r}")
        known = self.metric_series.metric_names(run_id, rank)
        for name in names or ():
            if name not in known:
                raise NotFound(f"run {run_id} has no metric {name!r} from rank {rank}; its "
                               f"metrics: {', '.join(known) or 'none yet'}")
        series = [self.metric_series.series(run_id, name, max_points, rank)
                  for name in (names or known)]
        return {"id": run_id, "max_points": max_points, "rank": rank, "series": series}

    # -- logs and files --------------------------------------------------------------------------
    def logs(self, run_id: str, file: str = "output", offset: int | None = None,
             tail: int = DEFAULT_TAIL_BYTES) -> dict[str, Any]:
        """Log text from byte ``offset`` on (or the last ``tail`` bytes); ``offset`` in the
        answer is where the next call starts.  A log rewritten shorter starts again at 0."""
        self._record(run_id)
        if file not in LOG_FILES:
            raise BadRequest(f"unknown log {file!r}: use one of {', '.join(LOG_FILES)}")
        if offset is not None and offset < 0:
            raise BadRequest(f"offset must be 0 or more, not {offset!r}")
        if not 0 < tail <= MAX_LOG_BYTES:
            raise BadRequest(f"tail must be between 1 and {MAX_LOG_BYTES} bytes, not {tail!r}")
        folder = self.store.run_dir(run_id)
        name = LOG_FILES[file]
        try:
            size = _plain_size(folder, name)
            reset = offset is not None and offset > size
            start = max(0, size - tail) if offset is None or reset else offset
            data = safefiles.read_bytes(folder, name, min(size - start, MAX_LOG_BYTES),
                                        offset=start) if size > start else b""
        except FileNotFoundError:
            size, reset, start, data = 0, False, 0, b""
        except (safefiles.UnsafePath, NotADirectoryError):
            raise Forbidden(f"the {file} log of run {run_id} ({name}) is a link or not a plain "
                            f"file: it is not read") from None
        data = data[:_complete_utf8(data)]
        return {"id": run_id, "file": file, "start": start, "offset": start + len(data),
                "size": size, "reset": reset, "truncated": start > 0 and offset is None,
                "text": data.decode("utf-8", errors="replace")}

    def files(self, run_id: str) -> dict[str, Any]:
        """The run's files with their sizes; a link is listed as a link with its target
        (never the target's size), so a dangling one is listed too."""
        self._record(run_id)
        run = Run(self.workspace(), run_id)
        out = []
        for rel in run.files():
            try:
                info = os.lstat(run.folder / rel)
            except FileNotFoundError:     # removed since the listing
                continue
            entry = {"path": rel, "size": info.st_size, "modified": info.st_mtime}
            if stat.S_ISLNK(info.st_mode):
                entry.update(size=None, link=os.readlink(run.folder / rel))
            out.append(entry)
        return {"id": run_id, "files": out}

    def open_file(self, run_id: str, rel: str) -> tuple[BinaryIO, str, int]:
        """The plain file ``rel`` of the run's folder, open, with its name and size.  Links
        are never followed, and paths leaving the folder are refused."""
        self._record(run_id)
        if "\0" in rel:
            raise BadRequest(f"file names cannot hold a NUL character: {rel!r}")
        folder = self.store.run_dir(run_id)
        try:
            fd = safefiles.open_beneath(folder, rel)
        except (safefiles.UnsafePath, NotADirectoryError):
            raise Forbidden(f"{rel!r} is a link or outside the folder of run {run_id}: only "
                            f"the run's own files can be downloaded, and links are not "
                            f"followed") from None
        except FileNotFoundError:
            raise NotFound(f"run {run_id} has no file {rel!r} (not there); "
                           f"GET /celltrain/runs/{run_id}/files lists its files") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            what = "a folder, not a file" if stat.S_ISDIR(info.st_mode) else "not a plain file"
            raise NotFound(f"run {run_id} has no file {rel!r} ({what}); "
                           f"GET /celltrain/runs/{run_id}/files lists its files")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), PurePosixPath(rel).name, info.st_size

    # -- models ----------------------------------------------------------------------------------
    def models(self, name: str | None = None) -> list[dict[str, Any]]:
        """Registered models with their versions (newest first) and aliases, read straight from
        the registry's tables."""
        if not self.exists:
            return []
        rows = self.store.model_version_rows(name)
        aliases: dict[str, dict[str, int]] = {}
        for r in self.store.model_alias_rows(name):
            aliases.setdefault(r[0], {})[r[1]] = r[2]
        models: dict[str, dict[str, Any]] = {}
        for r in rows:
            model = models.setdefault(r["name"], {
                "name": r["name"], "latest": None, "aliases": aliases.get(r["name"], {}),
                "versions": []})
            if model["latest"] is None and not r["archived"]:
                model["latest"] = r["version"]  # the newest version that is not archived
            version = dict(r)
            for key in ("tags", "metrics", "artifacts"):
                version[key] = json.loads(version[key] or "{}")
            version["archived"] = bool(version["archived"])
            version["aliases"] = [a for a, v in model["aliases"].items() if v == r["version"]]
            version.pop("name")
            model["versions"].append(version)
        return _clean(list(models.values()))

    def model(self, name: str) -> dict[str, Any]:
        found = self.models(name)
        if not found:
            known = [m["name"] for m in self.models()]
            raise NotFound(f"no model {name!r} in workspace {self.path}; registered models: "
                           f"{', '.join(known) or 'none yet'}")
        return found[0]


def _plain_size(folder: Path, name: str) -> int:
    """The size of the plain file ``folder/name``; FileNotFoundError or UnsafePath else."""
    fd = safefiles.open_beneath(folder, name)
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(info.st_mode):
        raise safefiles.UnsafePath(0, f"{name!r} is not a plain file")
    return info.st_size


def _complete_utf8(data: bytes) -> int:
    """Length of ``data`` without a UTF-8 character cut in half at its end (read it next time)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue                      # a continuation byte: look further back
        if byte & 0x80 == 0:
            return len(data)              # ASCII ends the data cleanly
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
        return len(data) if back >= need else len(data) - back
    return len(data)
