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
import threading
from pathlib import Path
from typing import Any, Iterable

from .. import states
from ..run import Run, format_warning
from ..runfiles import BUILD_LOG, OUTPUT_LOG, STDERR_LOG
from ..store import METRIC_BLOCK_BITS

WORKSPACE_ENV = "CELLTRAIN_WORKSPACE"
DEFAULT_DIR = ".celltrain"
SORT_KEYS = ("created", "started", "ended", "number", "status", "id")
MAX_PAGE = 10_000
LOG_FILES = {"output": OUTPUT_LOG, "stderr": STDERR_LOG, "build": BUILD_LOG,
             "supervisor": "supervisor.log"}
DEFAULT_TAIL_BYTES = 64 * 1024
MAX_LOG_BYTES = 4 * 1024 * 1024
MAX_CHART_POINTS = 100_000
# Up to this many points a series is read whole and downsampled exactly (views.downsample);
# longer ones become min/max per bucket of ids, merged from the store's per-block rollups
# (``metric_blocks``: 256 ids each) when buckets are that wide, else aggregated inside SQLite.
READ_WHOLE_UP_TO = 20_000
RUN_SUMMARY = ("id", "experiment", "number", "status", "target", "created", "started", "ended",
               "script", "reason", "exit_code", "progress", "params", "tags", "cancel_requested")


def _run_json_column(key: str) -> str:
    if key == "experiment":
        return "json_quote(e.name)"
    if key in ("id", "status", "target", "script", "reason"):
        return f"json_quote(r.{key})"
    return f"COALESCE(r.{key}, 'null')"   # numbers, and JSON text stored by json.dumps


# One run's summary as JSON text, written by SQLite: the JSON columns are pasted in as they are
# stored, never parsed, which keeps a page of 10,000 runs close to the cost of the raw query.
_RUN_JSON = "'{' || " + " || ',' || ".join(f"'\"{k}\":' || {_run_json_column(k)}"
                                          for k in RUN_SUMMARY) + " || '}'"


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


def _finite(values: Iterable) -> list:
    """JSON has no NaN or infinity: a metric logged as None or NaN becomes null."""
    return [v if v is not None and math.isfinite(v) else None for v in values]


class CelltrainManager:
    """Reads one workspace for the server.  Opens it only once its database exists, so pointing
    the server at a folder creates nothing there."""

    def __init__(self, path: str | os.PathLike, source: str = "given", reconcile: bool = True):
        self.path = Path(path).expanduser().resolve()
        self.source = source
        self.reconcile_on_open = reconcile
        self._workspace = None
        self._lock = threading.Lock()
        self._series_cache: dict[tuple, tuple] = {}
        self._series_lock = threading.Lock()

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

    def info(self) -> dict[str, Any]:
        from .. import __version__
        out = {"path": str(self.path), "source": self.source, "exists": self.exists,
               "version": __version__, "states": list(states.ALL),
               "active_states": [s for s in states.ALL if s in states.ACTIVE],
               "runs": 0, "experiments": 0}
        if self.exists:
            conn = self.store.conn
            out["runs"] = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            out["experiments"] = conn.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]
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
                  offset: int = 0) -> dict[str, Any]:
        """One page of runs, newest first by default, and how many match in all."""
        return json.loads(self.list_runs_json(experiment=experiment, status=status, sort=sort,
                                              descending=descending, limit=limit, offset=offset))

    def list_runs_json(self, *, experiment: str | None = None, status: list[str] | None = None,
                       sort: str = "created", descending: bool = True, limit: int = 100,
                       offset: int = 0) -> str:
        """``list_runs`` as the JSON text the handler sends.  SQLite writes each run's JSON
        itself (its JSON columns are embedded, never parsed in Python): 10,000 runs stay fast."""
        if sort not in SORT_KEYS:
            raise BadRequest(f"cannot sort runs by {sort!r}: use one of {', '.join(SORT_KEYS)}")
        for s in status or ():
            if s not in states.ALL:
                raise BadRequest(f"unknown run status {s!r}: use one of {', '.join(states.ALL)}")
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be between 1 and {MAX_PAGE}, not {limit!r}")
        if offset < 0:
            raise BadRequest(f"offset must be 0 or more, not {offset!r}")
        head = {"limit": limit, "offset": offset, "sort": sort,
                "order": "desc" if descending else "asc", "total": 0}
        if not self.exists:
            return json.dumps({**head, "runs": []})
        where, args = [], []
        if experiment is not None:
            where.append("e.name = ?")
            args.append(experiment)
        if status:
            where.append(f"r.status IN ({', '.join('?' for _ in status)})")
            args.extend(status)
        sql_where = f"WHERE {' AND '.join(where)} " if where else ""
        conn = self.store.conn
        head["total"] = conn.execute("SELECT COUNT(*) FROM runs r JOIN experiments e ON "
                                     "e.id = r.experiment_id " + sql_where, args).fetchone()[0]
        rows = conn.execute(
            f"SELECT {_RUN_JSON} FROM runs r JOIN experiments e ON e.id = r.experiment_id "
            f"{sql_where}ORDER BY r.{sort} {'DESC' if descending else 'ASC'}, r.id "
            f"LIMIT ? OFFSET ?", [*args, limit, offset]).fetchall()
        runs = "[" + ",".join(r[0] for r in rows) + "]"
        if "NaN" in runs or "Infinity" in runs:
            # Python wrote a NaN into params or tags: JSON has none, so parse and clean them.
            records = self.store.list_runs(experiment=experiment, status=status, order_by=sort,
                                           descending=descending, limit=limit, offset=offset)
            runs = json.dumps(_clean([{k: r[k] for k in RUN_SUMMARY} for r in records]))
        return json.dumps(head)[:-1] + ', "runs": ' + runs + "}"

    def _record(self, run_id: str) -> dict[str, Any]:
        record = self.store.get_run(run_id) if self.exists else None
        if record is None:
            raise NotFound(f"no run {run_id!r} in workspace {self.path}")
        return record

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
        names = self.metric_names(run_id)
        out["metrics"] = self.latest_metrics(run_id, names)
        out["metric_names"] = names
        out["tables"] = store.table_names(run_id)
        out["images"] = store.images(run_id)
        out["models"] = [dict(r) for r in store.conn.execute(
            "SELECT name, version FROM models WHERE run_id=? ORDER BY name, version",
            (run_id,))]
        out["folder"] = str(store.run_dir(run_id))
        out["workspace"] = str(self.path)
        return _clean(out)

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
                max_points: int = 1000) -> dict[str, Any]:
        """Each metric as x (step) and y (value) arrays, at most ``max_points`` points each."""
        self._record(run_id)
        if not 4 <= max_points <= MAX_CHART_POINTS:
            raise BadRequest(f"max_points must be between 4 and {MAX_CHART_POINTS}, "
                             f"not {max_points!r}")
        known = self.metric_names(run_id)
        for name in names or ():
            if name not in known:
                raise NotFound(f"run {run_id} has no metric {name!r}; its metrics: "
                               f"{', '.join(known) or 'none yet'}")
        series = [self.series(run_id, name, max_points) for name in (names or known)]
        return {"id": run_id, "max_points": max_points, "series": series}

    def metric_names(self, run_id: str) -> list[str]:
        """Distinct names by hopping through the (run_id, name, id) index: one seek per name,
        where ``SELECT DISTINCT`` would read every point of a million-point run."""
        rows = self.store.conn.execute(
            "WITH RECURSIVE n(name) AS (SELECT MIN(name) FROM metrics WHERE run_id = ?1 "
            "UNION ALL SELECT (SELECT MIN(name) FROM metrics WHERE run_id = ?1 AND name > n.name)"
            " FROM n WHERE n.name IS NOT NULL) SELECT name FROM n WHERE name IS NOT NULL",
            (run_id,)).fetchall()
        return [r[0] for r in rows]

    def latest_metrics(self, run_id: str, names: list[str]) -> dict[str, float | None]:
        """The last value logged of each metric (one index seek each)."""
        conn = self.store.conn
        out = {}
        for name in names:
            value = conn.execute("SELECT value FROM metrics WHERE run_id=? AND name=? "
                                 "ORDER BY id DESC LIMIT 1", (run_id, name)).fetchone()[0]
            out[name] = value if value is not None and math.isfinite(value) else None
        return out

    def series(self, run_id: str, name: str, max_points: int) -> dict[str, Any]:
        """One metric downsampled.  The answer is cached per newest point id: an unchanged
        series costs two index seeks, and a growing long one only reads its new points."""
        conn = self.store.conn
        lo, hi = (conn.execute(f"SELECT {f}(id) FROM metrics WHERE run_id=? AND name=?",
                               (run_id, name)).fetchone()[0] for f in ("MIN", "MAX"))
        key = (run_id, name, max_points)
        with self._series_lock:
            cached_hi, out, buckets = self._series_cache.get(key, (None, None, None))
            if out is not None and cached_hi == hi:
                return out
            if lo is None:
                out, buckets = {"name": name, "count": 0, "downsampled": False, "x": [],
                                "y": []}, None
            elif hi - lo < READ_WHOLE_UP_TO:
                out, buckets = self._series_whole(run_id, name, max_points), None
            else:
                if buckets is None or buckets.lo != lo:
                    buckets = _Buckets(lo, hi, max_points // 2)
                self._extend(buckets, run_id, name, hi)
                out = self._series_from(buckets, name, hi)
            out["last_id"] = hi or 0
            if len(self._series_cache) > 256:
                self._series_cache.clear()
            self._series_cache[key] = (hi, out, buckets)
            return out

    def _series_whole(self, run_id: str, name: str, max_points: int) -> dict[str, Any]:
        from ..views.downsample import downsample
        rows = self.store.conn.execute(
            "SELECT step, value FROM metrics WHERE run_id=? AND name=? ORDER BY id",
            (run_id, name)).fetchall()
        xs = [r[0] for r in rows]
        ys = [r[1] if r[1] is not None else math.nan for r in rows]
        x, y = downsample(xs, ys, max_points)
        return {"name": name, "count": len(rows), "downsampled": len(x) < len(rows),
                "x": _finite(x.tolist()), "y": _finite(y.tolist())}

    def _extend(self, b: "_Buckets", run_id: str, name: str, hi: int) -> None:
        """Read the points after ``b.hi`` into ``b``: the last bucket (maybe partial) again,
        then new ones; merge pairs of buckets while there are too many."""
        first = (b.hi + 1 - b.base) // b.width
        del b.stats[first:]
        if b.width >= 1 << METRIC_BLOCK_BITS:
            b.stats += self._block_stats(run_id, name, b, first, hi)
        else:
            starts = range(b.base + first * b.width, hi + 1, b.width)
            b.stats += self._bucket_stats(run_id, name, [(a, a + b.width) for a in starts])
        b.hi = hi
        while len(b.stats) > b.limit:
            b.width *= 2
            b.stats = [_merge(b.stats[i:i + 2]) for i in range(0, len(b.stats), 2)]

    def _series_from(self, b: "_Buckets", name: str, hi: int) -> dict[str, Any]:
        """Two points per bucket: its min at the step of its first point, its max halfway to
        the next bucket (both within one bucket, far below a pixel on a chart)."""
        stats = [s for s in b.stats if s is not None]
        last_step = self.store.conn.execute("SELECT step FROM metrics WHERE id=?",
                                            (hi,)).fetchone()[0]
        x: list = []
        y: list = []
        for i, (step, vmin, vmax, _) in enumerate(stats):
            following = stats[i + 1][0] if i + 1 < len(stats) else last_step
            x += [step, (step + following) / 2]
            y += [vmin, vmax]
        return {"name": name, "count": sum(s[3] for s in stats), "downsampled": True,
                "x": x, "y": _finite(y)}

    def _block_stats(self, run_id: str, name: str, b: "_Buckets", first: int, hi: int) -> list:
        """(first step, min, max, count) of buckets ``first`` on (up to id ``hi``), each merged
        from the store's blocks of 256 ids (a bucket is a whole number of blocks): one row per
        block read, never one per point."""
        shift = (b.width >> METRIC_BLOCK_BITS).bit_length() - 1     # blocks per bucket: 2**shift
        start = (b.base >> METRIC_BLOCK_BITS) + (first << shift)
        out: list = [None] * ((hi - b.base) // b.width + 1 - first)
        for block, n, step, vmin, vmax in self.store.conn.execute(
                "SELECT block, n, first_step, min_value, max_value FROM metric_blocks "
                "WHERE run_id=? AND name=? AND block >= ? AND block <= ? ORDER BY block",
                (run_id, name, start, hi >> METRIC_BLOCK_BITS)):
            i = (block - start) >> shift
            stats = (step, vmin, vmax, n)
            out[i] = stats if out[i] is None else _merge([out[i], stats])
        return out

    def _bucket_stats(self, run_id: str, name: str, ranges: list[tuple[int, int]]) -> list:
        """(first step, min, max, count) of the points with ids in each range, or None for a
        range without any: two aggregates per point inside SQLite, no Python row objects."""
        conn = self.store.conn
        agg = ("SELECT MIN(value), MAX(value), COUNT(*) FROM metrics "
               "WHERE run_id=? AND name=? AND id >= ? AND id < ?")
        first = ("SELECT step FROM metrics WHERE run_id=? AND name=? AND id >= ? "
                 "ORDER BY id LIMIT 1")
        out = []
        for a, b in ranges:
            vmin, vmax, n = conn.execute(agg, (run_id, name, a, b)).fetchone()
            out.append((conn.execute(first, (run_id, name, a)).fetchone()[0], vmin, vmax, n)
                       if n else None)
        return out

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
        path = self.store.run_dir(run_id) / LOG_FILES[file]
        size = path.stat().st_size if path.is_file() else 0
        reset = offset is not None and offset > size
        start = max(0, size - tail) if offset is None or reset else offset
        data = b""
        if size > start:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read(min(size - start, MAX_LOG_BYTES))
        data = data[:_complete_utf8(data)]
        return {"id": run_id, "file": file, "start": start, "offset": start + len(data),
                "size": size, "reset": reset, "truncated": start > 0 and offset is None,
                "text": data.decode("utf-8", errors="replace")}

    def files(self, run_id: str) -> dict[str, Any]:
        self._record(run_id)
        run = Run(self.workspace(), run_id)
        out = []
        for rel in run.files():
            stat = (run.folder / rel).stat()
            out.append({"path": rel, "size": stat.st_size, "modified": stat.st_mtime})
        return {"id": run_id, "files": out}

    def file_path(self, run_id: str, rel: str) -> Path:
        """The file ``rel`` of the run's folder; anything that resolves outside it is refused."""
        self._record(run_id)
        folder = self.store.run_dir(run_id).resolve()
        target = (folder / rel).resolve()
        if not target.is_relative_to(folder) or target == folder:
            raise Forbidden(f"{rel!r} is outside the folder of run {run_id}: only the run's own "
                            f"files can be downloaded")
        if not target.is_file():
            what = "a folder, not a file" if target.is_dir() else "not there"
            raise NotFound(f"run {run_id} has no file {rel!r} ({what}); "
                           f"GET /celltrain/runs/{run_id}/files lists its files")
        return target

    # -- models ----------------------------------------------------------------------------------
    def models(self, name: str | None = None) -> list[dict[str, Any]]:
        """Registered models with their versions (newest first) and aliases, read straight from
        the registry's tables."""
        if not self.exists:
            return []
        conn = self.store.conn
        where, args = ("WHERE name = ? ", (name,)) if name is not None else ("", ())
        rows = conn.execute("SELECT name, version, run_id, created, path, sha256, description, "
                            "tags, metrics, image_digest, archived, artifacts FROM models "
                            + where + "ORDER BY name, version DESC", args).fetchall()
        aliases: dict[str, dict[str, int]] = {}
        for r in conn.execute("SELECT name, alias, version FROM model_aliases " + where
                              + "ORDER BY alias", args):
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


class _Buckets:
    """Min/max of a long series in buckets of ``width`` consecutive ids from ``base`` (``lo``
    rounded down to a store block).  The width is a power of two, so two buckets merge into one
    when the series outgrows ``limit`` buckets, and a bucket at least a block wide is a whole
    number of the store's blocks."""

    def __init__(self, lo: int, hi: int, limit: int):
        self.lo, self.limit, self.width = lo, limit, 1
        self.base = lo >> METRIC_BLOCK_BITS << METRIC_BLOCK_BITS
        self.hi = self.base - 1
        while -(-(hi - self.base + 1) // self.width) > limit:
            self.width *= 2
        self.stats: list = []


def _merge(pair: list):
    stats = [s for s in pair if s is not None]
    if not stats:
        return None
    lows = [s[1] for s in stats if s[1] is not None]     # None: a bucket of NaNs only
    highs = [s[2] for s in stats if s[2] is not None]
    return (stats[0][0], min(lows) if lows else None, max(highs) if highs else None,
            sum(s[3] for s in stats))


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
