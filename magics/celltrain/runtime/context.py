"""The API a training script uses: ``Run.get_context()``, ``log``, ``progress``.

This module runs inside the container, so it is standard library only and stays compatible with
Python 3.8: users bring their own image.  ``log()`` checks the types of its arguments and appends
a tuple to a list (well under a microsecond); a value that is not a number is refused right there,
with the value named, rather than breaking the run later on the host.  A daemon thread flushes the
list every 0.1 s as frames appended to ``$CELLTRAIN_TELEMETRY_DIR/events.bin``, which the host
ingests into the workspace.  One lock covers taking a batch *and* writing it, so the flush that
``atexit`` and the SIGTERM handler make waits for one the thread is in the middle of: a normal
exit, an exception, ``sys.exit`` and ``docker stop`` lose nothing.

The events file is read by the host, and a container could write anything into it, so each frame
starts with a marker and a header checksum, bounds its length (``MAX_BODY``) and carries a CRC of
its body: a reader that meets garbage skips to the next valid frame instead of stalling.  Bodies
are arrays of numbers and JSON, never ``marshal`` or ``pickle``, so decoding hostile bytes can
raise but cannot run or crash anything.

Outside a celltrain run the same calls work and keep everything in memory (``OfflineRun``).
"""
from __future__ import annotations

import atexit
import json
import math
import operator
import os
import shutil
import signal
import struct
import sys
import threading
import time
import zlib
from array import array
from operator import itemgetter

TELEMETRY_ENV = "CELLTRAIN_TELEMETRY_DIR"
EVENTS_FILE = "events.bin"
FLUSH_INTERVAL_S = 0.1
PROGRESS_INTERVAL_S = 0.1
CLOSE_WAIT_S = 30.0          # at exit, how long to wait for the flusher's write in progress

# -- the frame format ------------------------------------------------------------------------
# header: marker, body length, crc32 of the body, crc32 of the header's first 12 bytes.
# body: b"M" + metric columns, or b"J" + one JSON record [kind, payload].
MAGIC = b"\xffCT\x01"       # 0xff never occurs in UTF-8 or JSON text
HEADER = struct.Struct("<4sIII")
MAX_BODY = 16 << 20           # a header announcing more is not a header
POINTS_PER_FRAME = 4096      # 28 bytes a point: 115 KB frames, encoded while in the CPU cache
METRIC_HEAD = struct.Struct("<II")   # points, bytes of the JSON list of names
NO_STEP = -(1 << 63)          # "the next step": the host counts on from the previous one
STEP_MAX = (1 << 63) - 1
_BIG_ENDIAN = sys.byteorder == "big"
_NAME, _STEP, _VALUE, _TIME = (itemgetter(i) for i in range(4))

_context = None
_context_lock = threading.Lock()


def _frame(body):
    head = MAGIC + struct.pack("<II", len(body), zlib.crc32(body))
    return head + struct.pack("<I", zlib.crc32(head)) + body


def _little(arr):
    if _BIG_ENDIAN:
        arr.byteswap()
    return arr.tobytes()


def _metric_body(points):
    """Columns: the distinct names as JSON, then name index, step, value and time arrays."""
    count = len(points)
    names = list(map(_NAME, points))
    if names.count(names[0]) == count:     # one metric: the usual case, and cheap to see
        table, ids = [names[0]], array("I", [0]) * count
    else:
        table = list(dict.fromkeys(names))
        index = {name: i for i, name in enumerate(table)}
        ids = array("I", map(index.__getitem__, names))
    steps = list(map(_STEP, points))
    if steps[0] is None and steps.count(None) == count:
        step_array = array("q", [NO_STEP]) * count
    else:
        try:
            step_array = array("q", steps)
        except TypeError:   # some steps are None
            step_array = array("q", [NO_STEP if s is None else s for s in steps])
    try:
        value_array = array("d", list(map(_VALUE, points)))
    except TypeError:   # not from log(): a hand-made list may hold None or numpy scalars
        value_array = array("d", [math.nan if p[2] is None else float(p[2]) for p in points])
    names_json = json.dumps(table).encode()
    return b"".join([b"M", METRIC_HEAD.pack(count, len(names_json)), names_json,
                     _little(ids), _little(step_array), _little(value_array),
                     _little(array("d", list(map(_TIME, points))))])


def _metric_frames(points):
    """Frames of at most MAX_BODY bytes; a point too big for any frame becomes a "drop" record."""
    if len(points) > POINTS_PER_FRAME:
        return [f for i in range(0, len(points), POINTS_PER_FRAME)
                for f in _metric_frames(points[i:i + POINTS_PER_FRAME])]
    body = _metric_body(points)
    if len(body) <= MAX_BODY:
        return [_frame(body)]
    if len(points) == 1:
        return _json_frames("drop", ["too-big", 1, "a metric named %r... of %d bytes was dropped: "
                                     "a name that long cannot be sent" % (points[0][0][:40],
                                                                          len(body))])
    half = len(points) // 2
    return _metric_frames(points[:half]) + _metric_frames(points[half:])


def _json_frames(kind, payload):
    body = b"J" + json.dumps([kind, payload], separators=(",", ":")).encode()
    if len(body) <= MAX_BODY:
        return [_frame(body)]
    return _json_frames("drop", ["too-big", 1, "a %s record of %d bytes was dropped: frames "
                                 "hold at most %d bytes" % (kind, len(body), MAX_BODY)])


def encode_frame(kind, payload):
    """The bytes of one record: ``("m", [(name, step, value, time), ...])`` or a JSON record
    (``"row"``, ``"img"``, ``"progress"``, ``"drop"``); big metric batches span several frames."""
    if kind == "m":
        return b"".join(_metric_frames(list(payload))) if payload else b""
    return b"".join(_json_frames(kind, payload))


def _frame_at(data, pos):
    """At ``pos``: the body's length if a whole valid frame is there, -1 if its valid header
    announces more bytes than ``data`` has, None if it is no frame."""
    if len(data) - pos < HEADER.size:
        return -1 if MAGIC.startswith(data[pos:pos + len(MAGIC)]) else None
    magic, size, body_crc, head_crc = HEADER.unpack_from(data, pos)
    if magic != MAGIC or size > MAX_BODY or zlib.crc32(data[pos:pos + 12]) != head_crc:
        return None
    start = pos + HEADER.size
    if start + size > len(data):
        return -1
    return size if zlib.crc32(data[start:start + size]) == body_crc else None


def _next_frame(data, pos):
    """The position of the next whole valid frame at or after ``pos``, or None."""
    while True:
        pos = data.find(MAGIC, pos)
        if pos < 0:
            return None
        size = _frame_at(data, pos)
        if size is not None and size >= 0:
            return pos
        pos += 1


def _in_the_making(data, pos):
    """The first position at or after ``pos`` where a frame may still be being written."""
    while True:
        pos = data.find(MAGIC, pos)
        if pos < 0:
            break
        if _frame_at(data, pos) == -1:
            return pos
        pos += 1
    for pos in range(max(pos, len(data) - len(MAGIC) + 1), len(data)):
        if MAGIC.startswith(data[pos:]):       # the marker itself is cut
            return pos
    return None


def decode_frames(data, final=False):
    """Split bytes into frame bodies; returns (bodies, bytes consumed, bytes skipped).

    Garbage, a bad checksum and a frame cut short (followed by another frame) are skipped and
    counted.  A frame still being written at the end waits (is not consumed) unless ``final``:
    then the writer is gone and the rest counts as skipped too.
    """
    bodies, pos, skipped, end = [], 0, 0, len(data)
    while pos < end:
        size = _frame_at(data, pos)
        if size is not None and size >= 0:
            bodies.append(data[pos + HEADER.size:pos + HEADER.size + size])
            pos += HEADER.size + size
            continue
        nxt = _next_frame(data, pos + 1)
        if nxt is not None:           # garbage, or a frame cut short: go on with the next
            skipped += nxt - pos
            pos = nxt
            continue
        wait = end if final else pos if size == -1 else _in_the_making(data, pos + 1)
        wait = end if wait is None else wait
        skipped += wait - pos
        pos = wait
        break
    return bodies, pos, skipped


def _array(code, data, start, count):
    arr = array(code)
    arr.frombytes(data[start:start + count * arr.itemsize])
    if _BIG_ENDIAN:
        arr.byteswap()
    return arr, start + count * arr.itemsize


def decode_body(body):
    """A frame body as ``(kind, payload)``; metrics as ``("m", (names, ids, steps, values,
    times))``.  Raises ValueError for a body that does not have the shape its kind needs (the
    caller validates each value: a body can come from anywhere)."""
    if body[:1] == b"M":
        if len(body) < 1 + METRIC_HEAD.size:
            raise ValueError("a metric frame shorter than its header")
        count, names_len = METRIC_HEAD.unpack_from(body, 1)
        start = 1 + METRIC_HEAD.size
        if len(body) != start + names_len + 28 * count:
            raise ValueError("a metric frame of %d bytes announces %d points" % (len(body), count))
        names = json.loads(body[start:start + names_len].decode())
        if not isinstance(names, list) or (count and not names):
            raise ValueError("a metric frame without its list of names")
        pos = start + names_len
        ids, pos = _array("I", body, pos, count)
        steps, pos = _array("q", body, pos, count)
        values, pos = _array("d", body, pos, count)
        times, pos = _array("d", body, pos, count)
        if count and max(ids) >= len(names):
            raise ValueError("a metric frame naming metric %d of %d" % (max(ids), len(names)))
        return "m", (names, ids, steps, values, times)
    if body[:1] == b"J":
        record = json.loads(body[1:].decode())
        if not (isinstance(record, list) and len(record) == 2 and isinstance(record[0], str)):
            raise ValueError("a JSON frame that is not [kind, payload]")
        return record[0], record[1]
    raise ValueError("a frame of unknown kind %r" % body[:1])


# -- checking what log() is given --------------------------------------------------------------
def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _call(what, name, value, step):
    return "%s(%s, %s%s)" % (what, _short(name), _short(value),
                             "" if step is None else ", step=%s" % _short(step))


def _a(value):
    kind = type(value).__name__
    return ("an " if kind[:1].lower() in "aeiou" else "a ") + kind


def check_name(name, call):
    """The metric/table name as a str, or TypeError/ValueError naming it."""
    if not isinstance(name, str):
        raise TypeError("%s: the name must be a str such as 'loss', not %s" % (
            call, "None" if name is None else _a(name)))
    if not name:
        raise ValueError("%s: the name must not be empty" % call)
    return str(name)


def check_step(step, call):
    """The step as an int (None stays None: the next step), or TypeError/ValueError."""
    if step is None:
        return None
    if isinstance(step, (str, bytes, float)) or not hasattr(type(step), "__index__"):
        raise TypeError("%s: the step must be an int (or None for the next step), not %s%s" % (
            call, _a(step), "; pass int(step)" if isinstance(step, float) else ""))
    step = operator.index(step)
    if not NO_STEP < step <= STEP_MAX:
        raise ValueError("%s: the step %d does not fit in 64 bits (from -2**63+1 to 2**63-1)" % (
            call, step))
    return step


def check_value(value, call, name="name"):
    """The value as a float: ints, numpy scalars and 0-d tensors convert; the rest is refused."""
    kind = _a(value)
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError("%s: the value must be a number (int, float, numpy scalar or 0-d "
                        "tensor), not %s; convert it yourself, e.g. float(...), if it holds "
                        "one" % (call, kind))
    if value is None:
        raise TypeError("%s: the value must be a number (int, float, numpy scalar or 0-d "
                        "tensor), not None" % call)
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        raise TypeError("%s: the value must be a number (int, float, numpy scalar or 0-d "
                        "tensor), not %s; log a list with log_list(%r, values)" % (
                            call, kind, name))
    shape = getattr(value, "shape", ())
    if getattr(value, "ndim", 0) != 0:
        raise TypeError("%s: the value must be a number (int, float, numpy scalar or 0-d "
                        "tensor), not %s of shape %s; log one element (value.item()), or "
                        "all of them with log_list(%r, values.tolist())" % (
                            call, kind, tuple(shape), name))
    try:
        return float(value)
    except OverflowError:
        raise ValueError("%s: the value is too large for a float (at most about 1.8e308)"
                         % call) from None
    except (TypeError, ValueError):
        raise TypeError("%s: the value must be a number (int, float, numpy scalar or 0-d "
                        "tensor), not %s" % (call, kind)) from None


def checked_point(name, value, step):
    """``log()``'s slow path: convert what is unambiguous, refuse the rest naming the call."""
    call = _call("log", name, value, step)
    name = check_name(name, call)
    return name, check_value(value, call, name), check_step(step, call)


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return str(value)


def _progress_value(value):
    value = _jsonable(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Run:
    """A run's logging context.  Use ``Run.get_context()`` rather than constructing one."""

    offline = False

    def __init__(self, telemetry_dir=None):
        self.id = os.environ.get("CELLTRAIN_RUN_ID", "offline")
        self.experiment = os.environ.get("CELLTRAIN_EXPERIMENT", "offline")
        self.params = json.loads(os.environ.get("CELLTRAIN_PARAMS", "{}"))
        self.telemetry_dir = telemetry_dir
        self._metrics = []       # (name, step, value, time); log() appends, flush() takes
        self._other = []         # (kind, payload) for rows, images and progress
        self._fd = None
        self._thread = None
        self._reset_flushing()
        if telemetry_dir is not None:
            os.makedirs(telemetry_dir, exist_ok=True)
            self._fd = os.open(os.path.join(telemetry_dir, EVENTS_FILE),
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
        check_name(name, "log_row(%s, ...)" % _short(name))
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
        call = "log_image(%s, %s%s)" % (_short(name), _short(path),
                                        "" if step is None else ", step=%s" % _short(step))
        check_name(name, call)
        step = check_step(step, call)
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
        state = {str(k): _progress_value(v) for k, v in state.items()}
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
        frames = _metric_frames(metrics) if metrics else []
        progress = [i for i, (kind, _) in enumerate(other) if kind == "progress"]
        for i, (kind, payload) in enumerate(other):
            if kind != "progress" or i == progress[-1]:   # the latest progress is enough
                frames.extend(_json_frames(kind, payload))
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
