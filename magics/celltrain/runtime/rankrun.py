"""One rank of a distributed run, as torchrun starts it: ``python -m celltrain.runtime.rankrun SCRIPT ARGS``.

Runs inside the container (stdlib only, Python 3.8+).  It runs the script as a child process
with torchrun's variables plus NODE_RANK, prefixes every output line with ``[rank r]`` (so the
stored log keeps ranks apart), forwards SIGTERM/SIGINT, and records the rank's node, state,
exit code and last output line in ``telemetry/ranks/<rank>.json`` for ``Run.ranks()``.  A rank
that fails on its own (not stopped by a signal) writes the run's reason, ``failure.txt``,
unless another rank was first.  (Each rank's ``log()`` has its own events file already:
``runtime.context``.)
"""
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time

from celltrain.runtime.wire import (FAILURE_FILE, NODE_ENV, RANKS_DIR, TELEMETRY_ENV,
                                    rank_from)

TAIL_LINES = 15


def _write_json(path, data):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _pump(source, sink, prefix, tail, last):
    for line in iter(source.readline, b""):
        if not line.endswith(b"\n"):
            line += b"\n"
        sink.write(prefix + line)
        sink.flush()
        text = line.decode("utf-8", "replace").rstrip()
        if text.strip():
            last[0] = text
            if tail is not None:
                tail.append(text)
    source.close()


def _claim_failure(telemetry, text):
    """Write failure.txt only if no rank (nor the %%train runner) wrote it first."""
    try:
        fd = os.open(os.path.join(telemetry, FAILURE_FILE),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _own_reason(telemetry, rank):
    """The reason the rank's runner gave (a %%train cell's traceback mapped to cell lines),
    left under rank-<r>/."""
    name = os.path.join("rank-%d" % rank, FAILURE_FILE)
    try:
        fd = os.open(os.path.join(telemetry, name), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        return f.read(16384).decode("utf-8", "replace").strip()


def main(argv):
    if not argv:
        print("usage: python -m celltrain.runtime.rankrun SCRIPT [ARGS...]", file=sys.stderr)
        return 2
    env = dict(os.environ)
    for ours, ompi in (("RANK", "OMPI_COMM_WORLD_RANK"), ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE"),
                       ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),
                       ("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE")):
        if ompi in env and ours not in env:      # under mpirun: torch's env:// contract
            env[ours] = env[ompi]
    rank = rank_from(env)
    local = int(env.get("LOCAL_RANK", env.get("OMPI_COMM_WORLD_LOCAL_RANK", "0")))
    node = int(env.get(NODE_ENV, env.get("GROUP_RANK", "0")))
    env.setdefault("NODE_RANK", env.get("GROUP_RANK", str(node)))
    telemetry = env.get(TELEMETRY_ENV)
    status_path = None
    if telemetry:
        ranks = os.path.join(telemetry, RANKS_DIR)
        os.makedirs(ranks, exist_ok=True)
        status_path = os.path.join(ranks, "%d.json" % rank)
    record = {"rank": rank, "node": node, "local_rank": local, "state": "running",
              "exit_code": None, "last_line": "", "started": time.time(), "ended": None}
    if status_path:
        _write_json(status_path, record)
    proc = subprocess.Popen([sys.executable, "-u"] + list(argv), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    stopped = []

    def forward(signum, frame):
        stopped.append(signum)
        try:
            proc.send_signal(signum)
        except OSError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    prefix = ("[rank %d] " % rank).encode()
    tail = collections.deque(maxlen=TAIL_LINES)
    last = [""]
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, sys.stdout.buffer, prefix,
                                                  None, last)),
             threading.Thread(target=_pump, args=(proc.stderr, sys.stderr.buffer, prefix,
                                                  tail, last))]
    for pump in pumps:
        pump.start()
    code = proc.wait()
    for pump in pumps:
        pump.join()
    if code < 0:
        code = 128 - code
    state = "completed" if code == 0 else ("stopped" if stopped else "failed")
    # A failed rank's last line is its error (stderr's last line); the two streams' pumps race,
    # so "whichever wrote last" would sometimes be an earlier line of stdout.
    last_line = tail[-1] if code != 0 and tail else last[0]
    record.update(state=state, exit_code=code, last_line=last_line[-500:], ended=time.time())
    if status_path:
        _write_json(status_path, record)
    if state == "failed" and telemetry:
        said = ("; last lines of its stderr:\n" + "\n".join(tail)) if tail else \
            " (nothing on stderr)"
        own = _own_reason(telemetry, rank)
        if own:
            said = ": " + own
        _claim_failure(telemetry, "rank %d (node %d, local rank %d) failed with exit code %d%s"
                       % (rank, node, local, code, said))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
