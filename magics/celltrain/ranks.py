"""The ranks of a distributed run, read from what ``celltrain.runtime.rankrun`` left in the run folder.

Each rank writes ``telemetry/ranks/<rank>.json`` (node, local rank, state, exit code, last
output line); the container wrote them, so they are read without following links, capped, and
checked.  Output lines carry ``[rank r] `` in the stored log: ``lines_of`` picks one rank's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from . import safefiles
from .runtime.wire import RANKS_DIR as WIRE_RANKS_DIR, TELEMETRY_DIR

RANKS_DIR = f"{TELEMETRY_DIR}/{WIRE_RANKS_DIR}"
CAP = 16 * 1024
FIELDS = ("rank", "node", "local_rank", "state", "exit_code", "last_line", "started", "ended")
NODES_FILE = "nodes.json"   # a cluster target's: which machine ran each node ({"node_id", "ip",
                            # "hostname"} by node), written by the supervisor, not the container


def read_ranks(run_dir: Path, run_status: str | None = None) -> list[dict]:
    """Every rank that started, by rank.  A rank still "running" once the run has ended was
    stopped with its container (no chance to say so): it reads "stopped".  On a cluster
    target each row also has "host": the machine (Ray node id, address, hostname) of its node."""
    try:
        names = os.listdir(run_dir / RANKS_DIR)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        stem, _, ext = name.partition(".")
        if ext != "json" or not stem.isdigit():
            continue
        try:
            data = json.loads(safefiles.read_text(run_dir, f"{RANKS_DIR}/{name}", CAP,
                                                  default="{}"))
        except (ValueError, safefiles.UnsafePath, OSError):
            continue
        if not isinstance(data, dict) or not data:   # a link, or not a rank's record
            continue
        row = {k: data.get(k) for k in FIELDS}
        row["rank"] = int(stem)
        if row["state"] == "running" and run_status in ("Completed", "Failed", "Canceled"):
            row["state"] = "stopped"
        out.append(row)
    hosts = _hosts(run_dir)
    for row in out:
        node = row["node"]
        if hosts and isinstance(node, int) and 0 <= node < len(hosts):
            row["host"] = hosts[node]
    return sorted(out, key=lambda r: r["rank"])


def _hosts(run_dir: Path) -> list:
    try:
        hosts = json.loads((run_dir / NODES_FILE).read_text())
    except (FileNotFoundError, ValueError, OSError):
        return []
    return hosts if isinstance(hosts, list) else []


def lines_of(text: str, rank: int) -> str:
    """The lines rank ``rank`` wrote, without their prefix."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank takes a rank number (0, 1, ...), not {rank!r}")
    prefix = f"[rank {rank}] "
    return "".join(line[len(prefix):] for line in text.splitlines(keepends=True)
                   if line.startswith(prefix))
