"""HTTP clients for bench_serve.py: pre-encoded requests on keep-alive connections.

``Client`` sends one request at a time (the batch-1 latency, in the benchmark's process).
Run as a program, this is the load of N concurrent clients in a process of its own: one thread
drives N connections with ``selectors``, each sending its next request as soon as its answer
is in (closed loop), so the clients cost little CPU and none of it is charged to the
benchmark's process or to the server.  It reads commands on stdin, one a line, ``<seconds>``,
and answers each with one JSON line: requests answered, the time from the first send to the
last answer, each request's latency.

    python bench/serve_load.py HOST PORT REQUEST_FILE CLIENTS
"""
from __future__ import annotations

import json
import selectors
import socket
import sys
import time


def http_request(host: str, port: int, path: str, body: bytes, headers: dict) -> bytes:
    """One POST, headers and body, as the bytes to send."""
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=300)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Reader:
    """Takes a response's bytes as they come; ``feed`` says when the whole response is in."""

    def __init__(self):
        self.buf = b""
        self.need = None

    def feed(self, data: bytes) -> bool:
        if not data:
            raise ConnectionError("the endpoint closed the connection")
        self.buf += data
        if self.need is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = self.buf[:end].decode("latin-1").split("\r\n")
            if head[0].split()[1] != "200":
                raise RuntimeError(f"the endpoint answered {head[0]}: {self.buf[end + 4:][:300]}")
            length = next(int(h.split(":", 1)[1]) for h in head[1:]
                          if h.lower().startswith("content-length:"))
            self.need = end + 4 + length
        if len(self.buf) < self.need:
            return False
        if len(self.buf) > self.need:
            raise RuntimeError("the endpoint sent more than one response")
        self.buf, self.need = b"", None
        return True


class Client:
    """One keep-alive connection, one request at a time."""

    def __init__(self, host: str, port: int, request: bytes):
        self.sock, self.request, self.reader = connect(host, port), request, Reader()

    def once(self) -> float:
        start = time.perf_counter()
        self.sock.sendall(self.request)
        while not self.reader.feed(self.sock.recv(1 << 20)):
            pass
        return time.perf_counter() - start

    def close(self) -> None:
        self.sock.close()


def load(socks: list, request: bytes, seconds: float) -> dict:
    """Every connection sends requests back to back for ``seconds``, then finishes its last."""
    sel = selectors.DefaultSelector()
    state = {}
    start = time.perf_counter()
    stop = start + seconds
    for sock in socks:
        sock.setblocking(False)
        state[sock] = [memoryview(request), time.perf_counter(), Reader()]
        sel.register(sock, selectors.EVENT_WRITE)
    latencies, last = [], start
    while state:
        for key, events in sel.select():
            sock = key.fileobj
            st = state[sock]
            if events & selectors.EVENT_WRITE:
                st[0] = st[0][sock.send(st[0]):]
                if not st[0]:
                    sel.modify(sock, selectors.EVENT_READ)
                continue
            if not st[2].feed(sock.recv(1 << 20)):
                continue
            last = time.perf_counter()
            latencies.append(last - st[1])
            if last >= stop:
                sel.unregister(sock)
                del state[sock]
            else:
                st[0], st[1] = memoryview(request), last
                sel.modify(sock, selectors.EVENT_WRITE)
    for sock in socks:
        sock.setblocking(True)
    return {"answered": len(latencies), "seconds": last - start, "latencies": latencies}


def main(argv: list[str]) -> int:
    host, port, request_file, clients = argv[0], int(argv[1]), argv[2], int(argv[3])
    with open(request_file, "rb") as f:
        request = f.read()
    socks = [connect(host, port) for _ in range(clients)]
    for line in sys.stdin:
        print(json.dumps(load(socks, request, float(line))), flush=True)
    for sock in socks:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
