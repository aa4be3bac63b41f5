"""Host side of the metric API: ingest a run's events file into the workspace store.

The run writes frames (see ``context.encode_frame``); ingestion reads from the offset stored with
the run, inserts every complete frame in one transaction together with the new offset, and so is
safe to repeat: a supervisor that dies mid-way and a reconciling process that picks up after it
never insert a point twice.

The events file is written by the container, so nothing in it is trusted: it is opened without
following links (``safefiles``), read in capped chunks, garbage between frames is skipped (the
offset always moves past it), and every record is checked before it reaches SQLite.  What cannot
be stored is counted as a warning on the run, and ingestion goes on with the next good frame.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from . import safefiles
from .context import (EVENTS_FILE, HEADER, MAX_BODY, NO_STEP, STEP_MAX, decode_body,
                      decode_frames)
from .store import Store

TELEMETRY_DIR = "telemetry"
EVENTS_REL = f"{TELEMETRY_DIR}/{EVENTS_FILE}"
READ_CAP = 2 * (MAX_BODY + HEADER.size)   # per read: always holds a whole frame
MAX_PROGRESS = 64 * 1024                  # bytes of JSON kept as a run's progress
IMAGES_DIR = "images/"

SKIPPED_BYTES = ("skipped-bytes", "telemetry/events.bin: skipped bytes that belong to no valid "
                 "frame (garbage written into the file, or a frame cut short); ingestion went on "
                 "with the next valid frame")
BAD_FRAME = "bad-frame"
BAD_VALUE = "bad-value"
EVENTS_UNSAFE = "events-unsafe"


def events_path(store: Store, run_id: str) -> Path:
    return store.run_dir(run_id) / TELEMETRY_DIR / EVENTS_FILE


def ingest(store: Store, run_id: str, last_steps: dict[str, int] | None = None, *,
           final: bool = False) -> int:
    """Move new events of ``run_id`` into SQLite; returns the number of metric points added.

    ``last_steps`` caches each metric's last step between calls (for points logged without one).
    ``final``: the run's process has ended, so a frame cut short at the end will never be
    completed; it is skipped (and reported) instead of waited for.
    """
    if last_steps is None:
        last_steps = store.last_steps(run_id)
    added = 0
    while True:
        offset = store.get_run(run_id)["events_offset"]
        try:
            data = safefiles.read_bytes(store.run_dir(run_id), EVENTS_REL, READ_CAP,
                                        offset=offset)
        except FileNotFoundError:
            return added
        except (safefiles.UnsafePath, NotADirectoryError) as e:
            _warn_once(store, run_id, EVENTS_UNSAFE,
                       f"telemetry/events.bin was not read ({e}): it must be a plain file "
                       "in the run folder; metrics logged after it changed are lost")
            return added
        whole = len(data) < READ_CAP          # up to the end of the file, as it is now
        bodies, used, skipped = decode_frames(data, final=final and whole)
        if not used:
            return added
        batch = _Batch(dict(last_steps))
        for body in bodies:
            batch.add(body)
        with store.write() as conn:
            current = conn.execute("SELECT events_offset FROM runs WHERE id=?",
                                   (run_id,)).fetchone()[0]
            if current != offset:        # somebody else ingested this stretch meanwhile
                last_steps.clear()
                last_steps.update(store.last_steps(run_id))
                continue
            store.add_metrics(run_id, batch.points, conn=conn)
            store.add_table_rows(run_id, batch.rows, conn)
            store.add_images(run_id, batch.images, conn)
            if batch.progress is not None:
                conn.execute("UPDATE runs SET progress=? WHERE id=?", (batch.progress, run_id))
            if skipped:
                store.add_warning(run_id, *SKIPPED_BYTES, count=skipped, conn=conn)
            for kind, (count, message) in batch.warnings.items():
                store.add_warning(run_id, kind, message, count=count, conn=conn)
            conn.execute("UPDATE runs SET events_offset=? WHERE id=?", (offset + used, run_id))
        last_steps.update(batch.steps)
        added += len(batch.points)
        if whole:
            return added


def _warn_once(store: Store, run_id: str, kind: str, message: str) -> None:
    if not any(w["kind"] == kind for w in store.warnings(run_id)):
        store.add_warning(run_id, kind, message)


class _Batch:
    """The records of some frames, each checked: what SQLite can store, and what it cannot."""

    def __init__(self, steps: dict[str, int]):
        self.steps = steps
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
            self.warn(BAD_FRAME, f"telemetry/events.bin: skipped a frame that could not be "
                                 f"decoded ({type(e).__name__}: {str(e)[:200]})")
            return
        try:
            handler = getattr(self, "_" + kind) if kind in RECORD_KINDS else None
            if handler is None:
                self.warn(BAD_FRAME, f"telemetry/events.bin: skipped a record of unknown kind "
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
        inside = isinstance(path, str) and path.startswith(IMAGES_DIR)
        base = path[len(IMAGES_DIR):] if inside else ""
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
