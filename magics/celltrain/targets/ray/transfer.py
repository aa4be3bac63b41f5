"""What travels between the submitter's run folder and the nodes' agents, through Ray.

Out: the code snapshot as one tar (put in the object store once, unpacked by every agent).
Back: output lines and telemetry files, pulled from each agent from the offsets already taken
(kept in ``ray-offsets.json`` in the run folder, so a supervisor that re-attaches goes on where
the last one stopped), and at the end ``./outputs`` and ``./logs`` as Docker's tars.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from pathlib import Path, PurePosixPath

from ... import copyback
from ...runfiles import OUTPUT_LOG, STDERR_LOG
from ...runtime.wire import TELEMETRY_DIR
from ..docker.nodes import renamed

OFFSETS = "ray-offsets.json"
STREAMS = (OUTPUT_LOG, STDERR_LOG)


def snapshot_tar(folder: Path) -> bytes:
    """The snapshot folder as an uncompressed tar, names relative to it."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return out.getvalue()


class Inbox:
    """Writes what agents hand back into the run folder, and remembers the offsets."""

    def __init__(self, run_dir: Path, nodes: int):
        self.run_dir, self.nodes = run_dir, nodes
        self.lock = threading.Lock()
        try:
            saved = json.loads((run_dir / OFFSETS).read_text())
        except (FileNotFoundError, ValueError):
            saved = {}
        self.offsets = [dict(saved.get(str(k), {})) for k in range(nodes)]
        for marks in self.offsets:    # a grown file was written before its offset was saved
            for key, mark in marks.items():
                path = run_dir / key
                if key.startswith(TELEMETRY_DIR + "/") and isinstance(mark, int) \
                        and path.is_file() and path.stat().st_size > mark:
                    marks[key] = path.stat().st_size

    def take(self, node: int, data: dict, marks: dict) -> bool:
        """Write node ``node``'s pull; whether anything was new."""
        with self.lock:
            for key, chunk in data.items():
                if key in STREAMS:
                    with open(self.run_dir / key, "ab") as f:
                        f.write(chunk)
                    continue
                rel = PurePosixPath(key)
                if rel.is_absolute() or ".." in rel.parts or rel.parts[0] != TELEMETRY_DIR:
                    continue
                path = self.run_dir.joinpath(*rel.parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(marks.get(key), int):           # a growing file: append
                    with open(path, "ab") as f:
                        f.write(chunk)
                else:                                        # a small file: replace whole
                    tmp = path.with_name(f".{path.name}.part")
                    tmp.write_bytes(chunk)
                    os.replace(tmp, path)
            self.offsets[node] = dict(marks)
            if data:
                tmp = self.run_dir / f".{OFFSETS}.part"
                tmp.write_text(json.dumps({str(k): v for k, v in enumerate(self.offsets)}))
                os.replace(tmp, self.run_dir / OFFSETS)
            return bool(data)


def extract_outputs(run_dir: Path, node: int, tars: dict) -> list[str]:
    """Node 0's ./outputs and ./logs into the run folder, node k's under ``<folder>/node-k``
    where it wrote something; what was skipped (links out, devices)."""
    skipped = []
    for folder, data in tars.items():
        if not data:
            continue
        if node == 0:
            skipped += copyback.extract_tar(io.BytesIO(data), run_dir, folder)
            continue
        data = renamed(data, folder, f"node-{node}")
        if data is None:
            continue
        dest = run_dir / folder
        dest.mkdir(exist_ok=True)
        skipped += copyback.extract_tar(io.BytesIO(data), dest, f"node-{node}")
    return skipped


def write_nodes(run_dir, where: list[dict]) -> None:
    """Which Ray node ran each of the run's nodes (``run.ranks()`` shows it)."""
    import json
    from ...ranks import NODES_FILE
    (run_dir / NODES_FILE).write_text(json.dumps(
        [{k: w.get(k) for k in ("node_id", "ip", "hostname")} for w in where]))
