"""Open MPI's remote launch without ssh: ``mpirun``'s rsh agent, and the server it talks to.

Runs inside the containers of a run (stdlib only, Python 3.8+).  Nodes 1..N-1 run
``python -m celltrain.runtime.mpiagent serve``: it listens on the run's private network and runs each
command it is sent (Open MPI's ``orted``) with ``sh -c``, streaming its output and exit code
back; the supervisor stops these nodes once node 0's ``mpirun`` has exited.  Node 0's ``mpirun`` has ``plm_rsh_agent`` set to
``python -m celltrain.runtime.mpiagent``, which it calls as it would call ssh: ``HOST COMMAND...``.
A shared token (``CELLTRAIN_MPI_TOKEN``, the run's own) is required, so nothing else on the
network can run a command.  When the connection drops, the command is killed.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from celltrain.runtime.wire import MPI_DEBUG_ENV, MPI_PORT_ENV, MPI_TOKEN_ENV as TOKEN_ENV

PORT = int(os.environ.get(MPI_PORT_ENV, "29600"))
CONNECT_S = 120       # node 0 may be quicker than the other nodes' servers
FRAME = struct.Struct("!cI")


def _send(sock, lock, kind, data):
    with lock:
        sock.sendall(FRAME.pack(kind, len(data)) + data)


def _recv_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            return None
        out += chunk
    return out


def serve(port=PORT):
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print("celltrain.runtime.mpiagent: %s is not set" % TOKEN_ENV, file=sys.stderr)
        return 2
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(4)
    while True:
        conn, _ = listener.accept()
        reader = conn.makefile("rb")
        try:
            request = json.loads(reader.readline(65536).decode())
        except ValueError:
            request = None
        if not isinstance(request, dict) or request.get("token") != token:
            reader.close()          # the socket closes only with its file too
            conn.close()
            continue
        if os.environ.get(MPI_DEBUG_ENV):
            print("celltrain.runtime.mpiagent: running %r" % request.get("command"), file=sys.stderr,
                  flush=True)
        threading.Thread(target=_run, args=(conn, reader, str(request.get("command", ""))),
                         daemon=True).start()


def _run(conn, reader, command):
    lock = threading.Lock()
    proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)

    def pump(stream, kind):
        for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
            try:
                _send(conn, lock, kind, chunk)
            except OSError:
                break

    def hangup():           # the agent went away: mpirun is gone, so is the job
        reader.read()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except OSError:
                pass

    threads = [threading.Thread(target=pump, args=(proc.stdout, b"o")),
               threading.Thread(target=pump, args=(proc.stderr, b"e"))]
    for t in threads:
        t.start()
    threading.Thread(target=hangup, daemon=True).start()
    code = proc.wait()
    for t in threads:
        t.join()
    code = 128 - code if code < 0 else code
    try:
        _send(conn, lock, b"x", str(code).encode())
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    reader.close()
    conn.close()
    return code


def agent(host, words, port=PORT):
    """What ssh would do: run ``words`` (joined, for a shell) on ``host``; its exit code."""
    deadline = time.monotonic() + CONNECT_S
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                print("celltrain.runtime.mpiagent: node %s did not answer on port %d within %ds"
                      % (host, port, CONNECT_S), file=sys.stderr)
                return 255
            time.sleep(0.2)
    sock.settimeout(None)
    request = {"token": os.environ.get(TOKEN_ENV, ""), "command": " ".join(words)}
    sock.sendall(json.dumps(request).encode() + b"\n")
    outs = {b"o": sys.stdout.buffer, b"e": sys.stderr.buffer}
    while True:
        head = _recv_exact(sock, FRAME.size)
        if head is None:
            return 255          # the node's server went away without an exit code
        kind, size = FRAME.unpack(head)
        data = _recv_exact(sock, size) or b""
        if kind == b"x":
            return int(data or b"255")
        outs.get(kind, sys.stderr.buffer).write(data)
        outs.get(kind, sys.stderr.buffer).flush()


def main(argv):
    if argv == ["serve"]:
        return serve()
    if len(argv) >= 2:
        return agent(argv[0], argv[1:])
    print("usage: python -m celltrain.runtime.mpiagent serve | HOST COMMAND...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
