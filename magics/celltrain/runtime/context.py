"""The API a training script uses: ``Run.get_context()``, ``log``, ``progress``.

This module runs inside the container, so it is standard library only and stays compatible with
Python 3.8: users bring their own image.  ``log()`` checks the types of its arguments and appends
a tuple to a list (well under a microsecond); a value that is not a number is refused right there,
with the value named, rather than breaking the run later on the host.  A daemon thread flushes the
list every 0.1 s as frames appended to ``$CELLTRAIN_TELEMETRY_DIR/events.bin``, which the host
ingests into the workspace.  One lock covers taking a batch *and* writing it, so the flush that
``atexit`` and the SIGTERM handler make waits for one the thread is in the middle of: a normal
exit, an exception, ``sys.exit`` and ``docker stop`` lose nothing.

Each rank writes its own events file (``wire.events_file``): rank 0, and so every single-process
run, ``events.bin``; rank r, as ``RANK`` or ``OMPI_COMM_WORLD_RANK`` says, ``events-<r>.bin``.  A
forked worker (a DataLoader's) appends to its parent's file.  The frame format is the wire's
(``runtime.wire``), shared with the host.

Outside a celltrain run the same calls work and keep everything in memory (``OfflineRun``).
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import sys
import threading
import time

from .checks import check_name, check_step, checked_point, jsonable, progress_value, short
from .wire import (EXPERIMENT_ENV, IMAGES_DIR, NO_STEP, PARAMS_ENV, PARENT_ENV, RUN_ID_ENV,
                   STEP_MAX, TELEMETRY_ENV, events_file, json_frames, metric_frames, rank_from)

FLUSH_INTERVAL_S = 0.1
PROGRESS_INTERVAL_S = 0.1
CLOSE_WAIT_S = 30.0          # at exit, how long to wait for the flusher's write in progress

_context = None
_context_lock = threading.Lock()


class Run:
    """A run's logging context.  Use ``Run.get_context()`` rather than constructing one."""

    offline = False

    def __init__(self, telemetry_dir=None, rank=None):
        self.id = os.environ.get(RUN_ID_ENV, "offline")
        self.experiment = os.environ.get(EXPERIMENT_ENV, "offline")
        self.params = json.loads(os.environ.get(PARAMS_ENV, "{}"))
        self.parent_id = os.environ.get(PARENT_ENV) or None   # a sweep trial's sweep
        # The process's rank (RANK, OMPI_COMM_WORLD_RANK): each rank has its own events file.
        self.rank = rank_from(os.environ) if rank is None else rank
        self.telemetry_dir = telemetry_dir
        self._metrics = []       # (name, step, value, time); log() appends, flush() takes
        self._other = []         # (kind, payload) for rows, images and progress
        self._fd = None
        self._thread = None
        self._reset_flushing()
        if telemetry_dir is not None:
            os.makedirs(telemetry_dir, exist_ok=True)
            self._fd = os.open(os.path.join(telemetry_dir, events_file(self.rank)),
                               os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            self._start_flusher()
            atexit.register(self._close)
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
        lowest, highest = NO_STEP, STEP_MAX

        def log(name, value, step=None):
            """Log one scalar; ``step`` defaults to the previous step of ``name`` plus one."""
            if type(value) is not float or type(name) is not str or not name or (
                    step is not None and (type(step) is not int or not lowest < step <= highest)):
                name, value, step = checked_point(name, value, step)
            append((name, step, value, now()))
        return log

    # -- the rest of the logging API ----------------------------------------------------------
    def log_list(self, name, values):
        """Log a list of scalars as consecutive steps of ``name``."""
        for value in values:
            self.log(name, value)

    def log_row(self, name, **columns):
        """Append one row to the table ``name`` (like Azure ML's log_row)."""
        check_name(name, "log_row(%s, ...)" % short(name))
        self._other.append(("row", (name, {k: jsonable(v) for k, v in columns.items()},
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
        call = "log_image(%s, %s%s)" % (short(name), short(path),
                                        "" if step is None else ", step=%s" % short(step))
        check_name(name, call)
        step = check_step(step, call)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"log_image({name!r}): no file at {path!r}")
        stored = path
        if self.telemetry_dir is not None:
            folder = os.path.join(self.telemetry_dir, IMAGES_DIR)
            os.makedirs(folder, exist_ok=True)
            rank = "r%d-" % self.rank if self.rank else ""     # ranks never share a name
            base = f"{len(os.listdir(folder)):05d}-{rank}{os.path.basename(path)}"
            shutil.copyfile(path, os.path.join(folder, base))
            stored = IMAGES_DIR + "/" + base
        self._other.append(("img", (name, stored, step, time.time())))

    def set_progress(self, **state):
        """Report progress (n, total, desc, unit, rate, elapsed); the latest one wins."""
        state = {str(k): progress_value(v) for k, v in state.items()}
        state["t"] = time.time()
        self._other.append(("progress", state))

    def get_metrics(self):
        """Offline runs: the logged values by name.  Real runs: look them up in the workspace."""
        raise NotImplementedError("get_metrics() is for offline runs; on the host use "
                                  "Workspace().run(id).metrics()")

    # -- flushing ------------------------------------------------------------------------------
    def _reset_flushing(self):
        self._flush_lock = threading.RLock()   # held across take *and* write
        self._unwritten = []       # frames taken from the buffers, not yet written
        self._main_flushing = False
        self._deferred_exit = None  # a SIGTERM that came while the main thread was flushing
        self._stop = threading.Event()
        self._flush_error = None

    def _start_flusher(self):
        self._thread = threading.Thread(target=self._flush_loop, name="celltrain-flush",
                                        daemon=True)
        self._thread.start()

    def _flush_loop(self):
        stop = self._stop
        while not stop.wait(FLUSH_INTERVAL_S):
            try:
                self.flush()
            except Exception as e:   # a full disk, say: keep the frames and try again
                if repr(e) != self._flush_error:
                    self._flush_error = repr(e)
                    sys.stderr.write("celltrain: could not write telemetry (will retry): %r\n"
                                     % (e,))

    def _after_fork(self):
        # A forked worker (a DataLoader, say) gets a fresh buffer, lock and flusher of its own:
        # the parent's lock may have been held by its flusher at the fork.
        self._metrics.clear()
        self._other.clear()
        self._reset_flushing()
        self.log = self._make_log()
        self._start_flusher()

    def _close(self):
        """At exit: stop the flusher (waiting for a write it is doing), then write the rest."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(CLOSE_WAIT_S)
        try:
            self.flush()
        except Exception as e:
            sys.stderr.write("celltrain: could not write the last telemetry: %r\n" % (e,))

    def _take(self):
        # Copy, then delete what was copied: log() appends to the same list meanwhile.
        metrics = self._metrics[:]
        del self._metrics[:len(metrics)]
        other = self._other[:]
        del self._other[:len(other)]
        return metrics, other

    def _encode(self, metrics, other):
        frames = metric_frames(metrics) if metrics else []
        progress = [i for i, (kind, _) in enumerate(other) if kind == "progress"]
        for i, (kind, payload) in enumerate(other):
            if kind != "progress" or i == progress[-1]:   # the latest progress is enough
                frames.extend(json_frames(kind, payload))
        return frames

    def flush(self):
        """Write out everything logged so far (called by the flusher, atexit and SIGTERM).

        Whoever calls it while another flush is under way waits for that one's write.
        """
        in_main = threading.current_thread() is threading.main_thread()
        with self._flush_lock:
            if in_main:
                self._main_flushing = True
            try:
                metrics, other = self._take()
                if self._fd is None:
                    return
                if metrics or other:
                    self._unwritten.extend(self._encode(metrics, other))
                while self._unwritten:
                    self._write(self._unwritten[0])
                    del self._unwritten[0]
            finally:
                if in_main:
                    self._main_flushing = False
        deferred = self._deferred_exit if in_main else None
        if deferred is not None:
            self._deferred_exit = None
            deferred()

    def _write(self, frame):
        view = memoryview(frame)
        while view:
            view = view[os.write(self._fd, view):]


class OfflineRun(Run):
    """Used outside celltrain: every call works, and values stay in memory."""

    offline = True

    def __init__(self):
        super().__init__(telemetry_dir=None)
        self.parent_id = None
        self.metrics = {}
        self.tables = {}
        self.images = []
        self.progress_state = None

    def flush(self):
        metrics, other = self._take()
        for name, step, value, t in metrics:
            series = self.metrics.setdefault(name, [])
            series.append((len(series) if step is None else step, value))
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
    """On SIGTERM (docker stop, cancel): flush, then exit as SIGTERM would, running finally blocks.

    The handler runs in the main thread.  If that thread was inside ``flush()`` (atexit's, or
    the user's), flushing again there would write its batch twice or lose it: the handler only
    notes the signal, and that flush exits once its frames are out.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def exit_as_sigterm(signum, frame):
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)

    def on_sigterm(signum, frame):
        if run._main_flushing:
            run._deferred_exit = lambda: exit_as_sigterm(signum, frame)
            return
        run.flush()
        exit_as_sigterm(signum, frame)
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
