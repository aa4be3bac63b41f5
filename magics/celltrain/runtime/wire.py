"""The wire contract between the host and a run's processes: the one place for the names both
sides use.

* the environment a target gives the run's process (``CELLTRAIN_*``) and the ones the runtime
  reads from launchers (``RANK``, ``OMPI_COMM_WORLD_RANK``);
* the files of the telemetry folder (``runs/<id>/telemetry/``, mounted into a container): the
  events files, one per rank, and the notes a runner leaves there;
* the frame format of the events files: the writer (``runtime.context``) encodes with it, the
  host (``celltrain.telemetry``) decodes with it.

It runs inside the container, so it is standard library only and parses as Python 3.8.

The events file is read by the host, and a container could write anything into it, so each frame
starts with a marker and a header checksum, bounds its length (``MAX_BODY``) and carries a CRC of
its body: a reader that meets garbage skips to the next valid frame instead of stalling.  Bodies
are arrays of numbers and JSON, never ``marshal`` or ``pickle``, so decoding hostile bytes can
raise but cannot run or crash anything.
"""
import json
import math
import re
import struct
import sys
import zlib
from array import array
from operator import itemgetter

# -- the environment of a run's process --------------------------------------------------------
RUN_ID_ENV = "CELLTRAIN_RUN_ID"
EXPERIMENT_ENV = "CELLTRAIN_EXPERIMENT"
PARAMS_ENV = "CELLTRAIN_PARAMS"                # the run's params as a JSON object
PARENT_ENV = "CELLTRAIN_PARENT_RUN_ID"         # a child run's parent (a sweep trial's sweep)
TELEMETRY_ENV = "CELLTRAIN_TELEMETRY_DIR"      # the telemetry folder as the process sees it
EXIT_FILE_ENV = "CELLTRAIN_EXIT_FILE"          # local target: its wrapper writes $? there
# Where to listen, for a process that serves (a deployment): {"8080": [address, port]}, the
# port inside the container (RunSpec.ports' keys) to the address and port to bind.
PORTS_ENV = "CELLTRAIN_PORTS"
# "1" in a run the Azure ML v1 layer submitted: the runtime maps the azureml.* names first.
AZUREML_ENV = "CELLTRAIN_AZUREML"
# The process's rank, from the launcher: torchrun sets RANK, Open MPI OMPI_COMM_WORLD_RANK.
RANK_ENVS = ("RANK", "OMPI_COMM_WORLD_RANK")
# A distributed run: the node (container) a process runs on, how many there are, and the MPI
# launch servers' secret, port and debug switch (``runtime.mpiagent``).
NODE_ENV = "CELLTRAIN_NODE"
NODES_ENV = "CELLTRAIN_NODES"
MPI_TOKEN_ENV = "CELLTRAIN_MPI_TOKEN"
MPI_PORT_ENV = "CELLTRAIN_MPI_PORT"
MPI_DEBUG_ENV = "CELLTRAIN_MPI_DEBUG"

# -- the telemetry folder ------------------------------------------------------------------------
TELEMETRY_DIR = "telemetry"         # in the run folder on the host
EVENTS_FILE = "events.bin"          # rank 0's frames (and every single-process run's)
FAILURE_FILE = "failure.txt"        # a runner's own explanation of a failure: the run's reason
RESULTS_FILE = "cell-results.pkl"   # %%train: the --out values and the cell's last expression
WORKDIR_NOTE = "workdir"            # Docker: where the script ran, if not the image's workdir
IMAGES_DIR = "images"               # the files given to log_image
RANKS_DIR = "ranks"                 # a distributed run: <rank>.json per rank (runtime.rankrun)
_EVENTS_NAME = re.compile(r"\Aevents(?:-([1-9][0-9]{0,8}))?\.bin\Z")


def run_environ(run_id, experiment, params, telemetry_dir, parent=None):
    """The variables a target gives the run's process: who it is (and its parent run, if it
    has one), its params (a JSON-able dict) and its telemetry folder as the process sees it."""
    env = {RUN_ID_ENV: run_id, EXPERIMENT_ENV: experiment, PARAMS_ENV: json.dumps(params),
           TELEMETRY_ENV: telemetry_dir}
    if parent:
        env[PARENT_ENV] = parent
    return env


def ports_environ(listen):
    """The variable a target gives a serving process: ``listen`` maps each port of
    ``RunSpec.ports`` to [address, port] to bind (nothing when there are none)."""
    return {PORTS_ENV: json.dumps(listen)} if listen else {}


def events_file(rank):
    """The events file of ``rank``: ``events.bin`` for rank 0, ``events-<rank>.bin`` else."""
    return EVENTS_FILE if rank == 0 else "events-%d.bin" % rank


def events_rank(name):
    """The rank whose events file is called ``name``, or None for any other name."""
    match = _EVENTS_NAME.match(name)
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) else 0


def rank_from(environ):
    """The process's rank from the launcher's variables (``RANK_ENVS``, first set wins); 0 when
    none is set or it is not a whole number from 0 on."""
    for key in RANK_ENVS:
        value = environ.get(key)
        if value is not None and value.strip():
            try:
                rank = int(value)
            except ValueError:
                return 0
            return rank if 0 <= rank < 10 ** 9 else 0
    return 0


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


def metric_frames(points):
    """Frames of at most MAX_BODY bytes; a point too big for any frame becomes a "drop" record."""
    if len(points) > POINTS_PER_FRAME:
        return [f for i in range(0, len(points), POINTS_PER_FRAME)
                for f in metric_frames(points[i:i + POINTS_PER_FRAME])]
    body = _metric_body(points)
    if len(body) <= MAX_BODY:
        return [_frame(body)]
    if len(points) == 1:
        return json_frames("drop", ["too-big", 1, "a metric named %r... of %d bytes was dropped: "
                                    "a name that long cannot be sent" % (points[0][0][:40],
                                                                         len(body))])
    half = len(points) // 2
    return metric_frames(points[:half]) + metric_frames(points[half:])


def json_frames(kind, payload):
    """The frames of one JSON record (one, or a "drop" record if it is too big for a frame)."""
    body = b"J" + json.dumps([kind, payload], separators=(",", ":")).encode()
    if len(body) <= MAX_BODY:
        return [_frame(body)]
    return json_frames("drop", ["too-big", 1, "a %s record of %d bytes was dropped: frames "
                                "hold at most %d bytes" % (kind, len(body), MAX_BODY)])


def encode_frame(kind, payload):
    """The bytes of one record: ``("m", [(name, step, value, time), ...])`` or a JSON record
    (``"row"``, ``"img"``, ``"progress"``, ``"drop"``); big metric batches span several frames."""
    if kind == "m":
        return b"".join(metric_frames(list(payload))) if payload else b""
    return b"".join(json_frames(kind, payload))


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

# Serving: where the deployed model's files are (Azure-style scripts read AZUREML_MODEL_DIR) and
# the bearer token every request must carry when a deployment asks for auth.
MODEL_DIR_ENV = "CELLTRAIN_MODEL_DIR"
SERVE_TOKEN_ENV = "CELLTRAIN_SERVE_TOKEN"
