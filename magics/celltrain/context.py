"""The API a training script uses: ``Run.get_context()``, ``log``, ``progress``.

This module runs inside the container, so it is standard library only and stays compatible with
Python 3.8: users bring their own image.  ``log()`` only appends a tuple to a list (well under a
microsecond); a daemon thread flushes the list every 0.1 s as one length-prefixed ``marshal``
frame appended to ``$CELLTRAIN_TELEMETRY_DIR/events.bin``, which the host ingests into the
workspace.  ``atexit`` and a SIGTERM handler flush what is left, so a normal exit, an exception
and ``docker stop`` lose nothing.

Outside a celltrain run the same calls work and keep everything in memory (``OfflineRun``).
"""
from __future__ import annotations

import atexit
import json
import marshal
import os
import shutil
import signal
import struct
import sys
import threading
import time

TELEMETRY_ENV = "CELLTRAIN_TELEMETRY_DIR"
EVENTS_FILE = "events.bin"
FRAME_HEADER = struct.Struct("<I")
FLUSH_INTERVAL_S = 0.1
PROGRESS_INTERVAL_S = 0.1

_context = None
_context_lock = threading.Lock()


def encode_frame(kind, payload):
    """One record of the events file: 4-byte little-endian length, then marshal((kind, payload))."""
    body = marshal.dumps((kind, payload))
    return FRAME_HEADER.pack(len(body)) + body


def decode_frames(data):
    """Split bytes into complete (kind, payload) records; returns (records, bytes consumed)."""
    records, pos, end = [], 0, len(data)
    while pos + 4 <= end:
        (size,) = FRAME_HEADER.unpack_from(data, pos)
        if pos + 4 + size > end:
            break
        records.append(marshal.loads(data[pos + 4:pos + 4 + size]))
        pos += 4 + size
    return records, pos


def _as_float(value):
    """Numbers of any kind (numpy scalars, 0-d tensors) become plain floats; None stays None."""
    if value is None or type(value) is float:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Run:
    """A run's logging context.  Use ``Run.get_context()`` rather than constructing one."""

    offline = False

    def __init__(self, telemetry_dir=None):
        self.id = os.environ.get("CELLTRAIN_RUN_ID", "offline")
        self.experiment = os.environ.get("CELLTRAIN_EXPERIMENT", "offline")
        self.params = json.loads(os.environ.get("CELLTRAIN_PARAMS", "{}"))
        self.telemetry_dir = telemetry_dir
        self._metrics = []       # (name, step, value, time); swapped out whole by the flusher
        self._other = []         # (kind, payload) for rows, images and progress
        self._lock = threading.Lock()
        self._fd = None
        self._thread = None
        self._stop = threading.Event()
        if telemetry_dir is not None:
            os.makedirs(telemetry_dir, exist_ok=True)
            self._fd = os.open(os.path.join(telemetry_dir, EVENTS_FILE),
                               os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            self._start_flusher()
            atexit.register(self.flush)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=self._after_fork)
        # The bound method is what users call: attribute lookups stay out of the hot path.
        self.log = self._make_log()

    @classmethod
    def get_context(cls):
        """The current run: the celltrain run this process is part of, or an offline one."""
        return get_context()

    def _make_log(self):
        append = self._metrics.append
        now = time.time

        def log(name, value, step=None):
            """Log one scalar; ``step`` defaults to the previous step of ``name`` plus one."""
            append((name, step, value, now()))
        return log

    # -- the rest of the logging API ----------------------------------------------------------
    def log_list(self, name, values):
        """Log a list of scalars as consecutive steps of ``name``."""
        for value in values:
            self.log(name, value)

    def log_row(self, name, **columns):
        """Append one row to the table ``name`` (like Azure ML's log_row)."""
        self._other.append(("row", (name, {k: _jsonable(v) for k, v in columns.items()},
                                    time.time())))

    def log_table(self, name, table):
        """Log a whole table: a dict of equal-length columns or a list of row dicts."""
        if isinstance(table, dict):
            keys = list(table)
            rows = [dict(zip(keys, values)) for values in zip(*table.values())]
        else:
            rows = list(table)
        for row in rows:
            self.log_row(name, **row)

    def log_image(self, name, path, step=None):
        """Keep an image file (a plot, a confusion matrix) with the run."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"log_image({name!r}): no file at {path!r}")
        stored = path
        if self.telemetry_dir is not None:
            folder = os.path.join(self.telemetry_dir, "images")
            os.makedirs(folder, exist_ok=True)
            base = f"{len(os.listdir(folder)):05d}-{os.path.basename(path)}"
            shutil.copyfile(path, os.path.join(folder, base))
            stored = "images/" + base
        self._other.append(("img", (name, stored, step, time.time())))

    def set_progress(self, **state):
        """Report progress (n, total, desc, unit, rate, elapsed); the latest one wins."""
        state["t"] = time.time()
        self._other.append(("progress", state))

    def get_metrics(self):
        """Offline runs: the logged values by name.  Real runs: look them up in the workspace."""
        raise NotImplementedError("get_metrics() is for offline runs; on the host use "
                                  "Workspace().run(id).metrics()")

    # -- flushing ------------------------------------------------------------------------------
    def _start_flusher(self):
        self._thread = threading.Thread(target=self._flush_loop, name="celltrain-flush",
                                        daemon=True)
        self._thread.start()

    def _flush_loop(self):
        while not self._stop.wait(FLUSH_INTERVAL_S):
            self.flush()

    def _after_fork(self):
        # A forked worker (a DataLoader, say) gets a fresh buffer and its own flusher.
        self._metrics.clear()
        self._other.clear()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.log = self._make_log()
        self._start_flusher()

    def _take(self):
        with self._lock:
            if not self._metrics and not self._other:
                return [], []
            metrics = self._metrics[:]
            del self._metrics[:len(metrics)]
            other = self._other[:]
            del self._other[:len(other)]
        return metrics, other

    def flush(self):
        """Write out everything logged so far (called by the flusher, atexit and SIGTERM)."""
        metrics, other = self._take()
        if self._fd is None or (not metrics and not other):
            return
        frames = []
        if metrics:
            try:
                frames.append(encode_frame("m", metrics))
            except ValueError:  # numpy scalars, tensors: convert, then it marshals
                clean = [(str(n), s if s is None else int(s), _as_float(v), t)
                         for n, s, v, t in metrics]
                frames.append(encode_frame("m", clean))
        for kind, payload in other:
            frames.append(encode_frame(kind, payload))
        os.write(self._fd, b"".join(frames))


class OfflineRun(Run):
    """Used outside celltrain: every call works, and values stay in memory."""

    offline = True

    def __init__(self):
        super().__init__(telemetry_dir=None)
        self.metrics = {}
        self.tables = {}
        self.images = []
        self.progress_state = None

    def flush(self):
        metrics, other = self._take()
        for name, step, value, t in metrics:
            series = self.metrics.setdefault(name, [])
            series.append((len(series) if step is None else step, _as_float(value)))
        for kind, payload in other:
            if kind == "row":
                self.tables.setdefault(payload[0], []).append(payload[1])
            elif kind == "img":
                self.images.append(payload)
            elif kind == "progress":
                self.progress_state = payload

    def get_metrics(self):
        self.flush()
        return {name: [v for _, v in series] for name, series in self.metrics.items()}


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    number = _as_float(value)
    return number if number is not None else str(value)


def get_context():
    """The process-wide run context, made on first use."""
    global _context
    if _context is None:
        with _context_lock:
            if _context is None:
                folder = os.environ.get(TELEMETRY_ENV)
                _context = Run(folder) if folder else OfflineRun()
                if folder:
                    _install_sigterm_flush(_context)
    return _context


def _install_sigterm_flush(run):
    """On SIGTERM (docker stop, cancel): flush, then exit as SIGTERM would, running finally blocks."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        run.flush()
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_sigterm)


def log(name, value, step=None):
    """Log a scalar to the current run (or keep it in memory outside celltrain)."""
    get_context().log(name, value, step)


class progress:
    """Wrap an iterable to report steps, total, rate and ETA to the run: ``for x in progress(xs)``."""

    def __init__(self, iterable, total=None, desc=None, unit="it"):
        self.iterable = iterable
        if total is None:
            try:
                total = len(iterable)
            except TypeError:
                total = None
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0

    def __len__(self):
        return self.total if self.total is not None else len(self.iterable)

    def __iter__(self):
        run = get_context()
        start = last = time.time()
        self._report(run, start, start)
        for item in self.iterable:
            yield item
            self.n += 1
            now = time.time()
            if now - last >= PROGRESS_INTERVAL_S:
                self._report(run, start, now)
                last = now
        self._report(run, start, time.time(), done=True)

    def _report(self, run, start, now, done=False):
        elapsed = now - start
        rate = self.n / elapsed if elapsed > 0 and self.n else None
        eta = (self.total - self.n) / rate if rate and self.total is not None else None
        run.set_progress(n=self.n, total=self.total, desc=self.desc, unit=self.unit,
                         rate=rate, elapsed=elapsed, eta=eta, done=done)
