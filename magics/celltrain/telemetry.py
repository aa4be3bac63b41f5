"""Host side of the metric API: ingest a run's events files into the workspace store.

Each process of a run writes frames (see ``runtime.wire``) into its rank's events file in the
telemetry folder: ``events.bin`` for rank 0, ``events-<r>.bin`` for rank r.  Ingestion reads each
file from its own offset (``ingest_offsets``), inserts every complete frame in one transaction
together with the file's new offset, and so is safe to repeat: a supervisor that dies mid-way and
a reconciling process that picks up after it never insert a point twice.  The points, rows and
images of ``events-<r>.bin`` are stored with rank r.

The events files are written by the container, so nothing in them is trusted: the folder is
listed and each file opened without following links (``safefiles``), read in capped chunks,
garbage between frames is skipped (the offset always moves past it), and every record is checked
before it reaches SQLite.  What cannot be stored is counted as a warning on the run, and
ingestion goes on with the next good frame.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from . import safefiles
from .runtime.wire import (EVENTS_FILE, HEADER, IMAGES_DIR, MAX_BODY, NO_STEP, STEP_MAX,
                           TELEMETRY_DIR, decode_body, decode_frames, events_file,
                           events_rank)
from .store import Store

READ_CAP = 2 * (MAX_BODY + HEADER.size)   # per read: always holds a whole frame
MAX_PROGRESS = 64 * 1024                  # bytes of JSON kept as a run's progress
MAX_EVENTS_FILES = 1024                   # ranks ingested per run; the rest is a warning
IMAGES_PREFIX = IMAGES_DIR + "/"

SKIPPED_BYTES = "skipped-bytes"
BAD_FRAME = "bad-frame"
BAD_VALUE = "bad-value"
EVENTS_UNSAFE = "events-unsafe"
TOO_MANY_RANKS = "too-many-ranks"


def events_path(store: Store, run_id: str, rank: int = 0) -> Path:
    return store.run_dir(run_id) / TELEMETRY_DIR / events_file(rank)


def events_files(store: Store, run_id: str) -> list[tuple[int, str]]:
    """(rank, file name) of each events file in the run's telemetry folder, by rank.  The
    folder is listed without following a link: a link there has no events files (a warning)."""
    try:
        names = safefiles.list_beneath(store.run_dir(run_id), TELEMETRY_DIR)
    except FileNotFoundError:
        return []
    except (safefiles.UnsafePath, NotADirectoryError) as e:
        _warn_once(store, run_id, EVENTS_UNSAFE,
                   f"{TELEMETRY_DIR}/ was not read ({e}): it must be a folder in the run "
                   "folder; metrics logged after it changed are lost")
        return []
    found = sorted((rank, name) for name, rank in ((n, events_rank(n)) for n in names)
                   if rank is not None)
    if len(found) > MAX_EVENTS_FILES:
        _warn_once(store, run_id, TOO_MANY_RANKS,
                   f"{TELEMETRY_DIR}/ has {len(found)} events files: the first "
                   f"{MAX_EVENTS_FILES} ranks were ingested, the rest were not")
        found = found[:MAX_EVENTS_FILES]
    return found


def ingest(store: Store, run_id: str, last_steps: dict[int, dict[str, int]] | None = None, *,
           final: bool = False) -> int:
    """Move new events of ``run_id`` into SQLite; returns the number of metric points added.

    ``last_steps`` caches, per rank, each metric's last step between calls (for points logged
    without one).  ``final``: the run's processes have ended, so a frame cut short at the end of
    a file will never be completed; it is skipped (and reported) instead of waited for.
    """
    return ingest_files(store, run_id, last_steps, final=final)[0]


def ingest_files(store: Store, run_id: str, last_steps: dict[int, dict[str, int]] | None = None,
                 *, final: bool = False) -> tuple[int, list[str]]:
    """``ingest``, also returning the names of the events files it found (the supervisor
    watches their sizes)."""
    if last_steps is None:
        last_steps = {}
    files = events_files(store, run_id)
    added = 0
    for rank, name in files:
        steps = last_steps.get(rank)
        if steps is None:
            steps = last_steps[rank] = store.last_steps(run_id, rank)
        added += _ingest_file(store, run_id, rank, name, steps, final)
    return added, [name for _, name in files]


def _ingest_file(store: Store, run_id: str, rank: int, name: str, last_steps: dict[str, int],
                 final: bool) -> int:
    rel = f"{TELEMETRY_DIR}/{name}"
    added = 0
    while True:
        offset = store.ingest_offset(run_id, name)
        try:
            data = safefiles.read_bytes(store.run_dir(run_id), rel, READ_CAP, offset=offset)
        except FileNotFoundError:
            return added
        except (safefiles.UnsafePath, NotADirectoryError) as e:
            _warn_once(store, run_id, EVENTS_UNSAFE,
                       f"{rel} was not read ({e}): it must be a plain file "
                       "in the run folder; metrics logged after it changed are lost")
            return added
        whole = len(data) < READ_CAP          # up to the end of the file, as it is now
        bodies, used, skipped = decode_frames(data, final=final and whole)
        if not used:
            return added
        batch = _Batch(dict(last_steps), rel)
        for body in bodies:
            batch.add(body)
        points = batch.points if rank == 0 else [(*p, rank) for p in batch.points]
        with store.write() as conn:
            if store.ingest_offset(run_id, name, conn) != offset:
                # somebody else ingested this stretch meanwhile
                last_steps.clear()
                last_steps.update(store.last_steps(run_id, rank))
                continue
            store.add_metrics(run_id, points, conn=conn)
            store.add_table_rows(run_id, batch.rows, conn, rank=rank)
            store.add_images(run_id, batch.images, conn, rank=rank)
            if batch.progress is not None and rank == 0:
                conn.execute("UPDATE runs SET progress=? WHERE id=?", (batch.progress, run_id))
            if skipped:
                store.add_warning(run_id, SKIPPED_BYTES, f"{rel}: skipped bytes that belong to "
                                  "no valid frame (garbage written into the file, or a frame cut "
                                  "short); ingestion went on with the next valid frame",
                                  count=skipped, conn=conn)
            for kind, (count, message) in batch.warnings.items():
                store.add_warning(run_id, kind, message, count=count, conn=conn)
            store.set_ingest_offset(run_id, name, offset + used, conn=conn)
        last_steps.update(batch.steps)
        added += len(batch.points)
        if whole:
            return added


class TelemetryWatch:
    """A supervisor's ingestion of its run: stats, not queries, when nothing was logged.

    What changes when a process logs: the telemetry folder's mtime (a new events file: a new
    rank) and the size of each events file known; lstat only, no link is followed.  The folder
    is listed again at least every ``RELIST_S`` even so (a file made in the same tick as the
    folder's last change leaves its mtime as it was).  A file found by an ingest is read once
    more at the next poll: what it looked like before that ingest was not known.
    """

    RELIST_S = 2.0

    def __init__(self, store: Store, run_id: str, clock):
        self.store, self.run_id, self.clock = store, run_id, clock
        self.folder = store.run_dir(run_id) / TELEMETRY_DIR
        self.last_steps: dict[int, dict[str, int]] = {}   # per rank: each metric's last step
        self.files: list[str] = []      # the events files the last ingest found
        self.mark: tuple | None = None  # what they looked like before it
        self.listed_at = -math.inf

    def forget(self) -> None:
        """After a failed ingest: read the last steps again, and ingest at the next call."""
        self.last_steps, self.mark = {}, None

    def ingest(self, final: bool = False) -> None:
        mark = self._mark()
        if mark is None:
            return
        now = self.clock()
        if mark == self.mark and not final and now - self.listed_at < self.RELIST_S:
            return
        _, self.files = ingest_files(self.store, self.run_id, self.last_steps, final=final)
        self.mark, self.listed_at = mark, now

    def _mark(self) -> tuple | None:
        try:
            folder = os.lstat(self.folder).st_mtime_ns
        except FileNotFoundError:
            return None                 # no telemetry folder yet
        sizes = []
        for name in self.files:
            try:
                sizes.append(os.lstat(self.folder / name).st_size)
            except FileNotFoundError:
                sizes.append(-1)
        return folder, tuple(sizes)


def _warn_once(store: Store, run_id: str, kind: str, message: str) -> None:
    if not any(w["kind"] == kind for w in store.warnings(run_id)):
        store.add_warning(run_id, kind, message)


class _Batch:
    """The records of some frames, each checked: what SQLite can store, and what it cannot."""

    def __init__(self, steps: dict[str, int], rel: str = f"{TELEMETRY_DIR}/{EVENTS_FILE}"):
        self.steps = steps
        self.rel = rel
        self.points: list[tuple] = []
        self.rows: list[tuple] = []
        self.images: list[tuple] = []
        self.progress: str | None = None
        self.warnings: dict[str, list] = {}
        self.good_names: set[str] = set()

    def warn(self, kind: str, message: str, count: int = 1) -> None:
        entry = self.warnings.setdefault(kind, [0, message])
        entry[0] += count
        entry[1] = message

    def refuse(self, what: str, count: int = 1) -> None:
        self.warn(BAD_VALUE, f"telemetry: dropped {what}; the rest of the run's telemetry "
                             "was ingested", count)

    def add(self, body: bytes) -> None:
        try:
            kind, payload = decode_body(body)
        except Exception as e:  # noqa: BLE001  (any body: JSON nesting, lengths, encodings)
            self.warn(BAD_FRAME, f"{self.rel}: skipped a frame that could not be "
                                 f"decoded ({type(e).__name__}: {str(e)[:200]})")
            return
        try:
            handler = getattr(self, "_" + kind) if kind in RECORD_KINDS else None
            if handler is None:
                self.warn(BAD_FRAME, f"{self.rel}: skipped a record of unknown kind "
                                     f"{kind[:40]!r}")
            else:
                handler(payload)
        except Exception as e:  # noqa: BLE001  (a record of any shape must not stop ingestion)
            self.refuse(f"a {kind} record of the wrong shape ({type(e).__name__}: "
                        f"{str(e)[:200]})")

    def name_ok(self, name) -> bool:
        if name in self.good_names:
            return True
        if not isinstance(name, str) or not name:
            return False
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return False
        self.good_names.add(name)
        return True

    def _m(self, payload) -> None:
        names, ids, steps, values, times = payload
        ok = [self.name_ok(n) for n in names]
        last = self.steps
        append = self.points.append
        refused = 0
        for i, step, value, t in zip(ids, steps, values, times):
            if not ok[i]:
                refused += 1
                continue
            name = names[i]
            if step == NO_STEP:
                step = last.get(name, -1) + 1
                if step > STEP_MAX:
                    refused += 1
                    continue
            last[name] = step
            append((name, step, value, t))
        if refused:
            bad = next((n for n, good in zip(names, ok) if not good), None)
            self.refuse(f"metric points the store cannot hold (a name such as {_short(bad)}, "
                        "which must be a non-empty UTF-8 str, or a step past 2**63-1)", refused)

    def _row(self, payload) -> None:
        name, columns, t = payload
        if not self.name_ok(name) or not isinstance(columns, dict):
            self.refuse(f"a table row with the name {_short(name)} and columns "
                        f"{_short(columns)}")
            return
        self.rows.append((name, columns, _time(t)))

    def _img(self, payload) -> None:
        name, path, step, t = payload
        inside = isinstance(path, str) and path.startswith(IMAGES_PREFIX)
        base = path[len(IMAGES_PREFIX):] if inside else ""
        if (not self.name_ok(name) or base in ("", ".", "..") or any(c in base for c in "/\\\0")
                or not _step_ok(step)):
            self.refuse(f"an image record {_short(name)} with the path {_short(path)} "
                        f"(images must be files in telemetry/images/)")
            return
        self.images.append((name, f"{TELEMETRY_DIR}/{path}", step, _time(t)))

    def _progress(self, payload) -> None:
        text = json.dumps(payload) if isinstance(payload, dict) else None
        if text is None or len(text) > MAX_PROGRESS:
            self.refuse(f"a progress report that is not a small dict ({_short(payload)})")
            return
        self.progress = text

    def _drop(self, payload) -> None:
        """The run's own note that it dropped something (a record too big for a frame)."""
        kind, count, message = payload
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"a drop record counting {count!r}")
        self.warn("dropped", f"the run dropped telemetry: {str(message)[:300]}", count)


RECORD_KINDS = {"m", "row", "img", "progress", "drop"}


def _step_ok(step) -> bool:
    return step is None or (type(step) is int and NO_STEP < step <= STEP_MAX)


def _time(t) -> float:
    if type(t) not in (int, float):
        raise TypeError(f"the time {_short(t)} is not a number")
    t = float(t)
    if not math.isfinite(t):
        raise ValueError(f"the time {t} is not finite")
    return t


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
