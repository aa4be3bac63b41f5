"""What code a run ran, as the views show it: a ``%%train`` cell's source and its notebook, or a
script run's command line.

The cell's source is the one the run's snapshot holds (the bundle's ``cell.json``, written when
the cell was packed, with its ``%%train`` line), so it is what ran even after the notebook
changed; the notebook and cell come from the run's ``notebook``/``cell`` tags (Jupyter Server
names the notebook to its kernel).  A script run's command line is its script and arguments,
from the stored spec.
"""
from __future__ import annotations

import json
import shlex
from typing import Any

from . import safefiles
from .runtime.cellrunner import BUNDLE_DIR, META_FILE

MAX_SOURCE = 256 * 1024        # bytes of a cell's source shown; the snapshot keeps it all


def cell_source(run_dir) -> str | None:
    """The ``%%train`` cell's text (its magic line first) from the run's snapshot; None for a
    script run or a snapshot without it."""
    text = safefiles.read_text(run_dir, f"snapshot/{BUNDLE_DIR}/{META_FILE}", 64 * 2**20)
    if not text:
        return None
    try:
        meta = json.loads(text)
        source = (meta.get("sources") or {}).get(meta.get("filename")) or meta.get("source")
    except (ValueError, AttributeError):
        return None
    if not isinstance(source, str):
        return None
    magic, newline, body = source.partition("\n")
    source = magic.rstrip() + newline + body      # "%%train " (no options) as it was typed
    return source if len(source) <= MAX_SOURCE else source[:MAX_SOURCE] + "\n# ... (cut)"


def command_line(record: dict) -> str:
    """``python SCRIPT ARGS`` as a shell would take it."""
    return shlex.join(["python", record.get("script") or "?", *map(str, record.get("args") or [])])


def run_code(record: dict, run_dir) -> dict[str, Any]:
    """{"kind": "cell" or "script", "source", "notebook", "cell", "command"}; what is not known
    is None (a cell run from a kernel Jupyter Server did not start has no notebook)."""
    tags = record.get("tags") or {}
    source = cell_source(run_dir) if tags.get("source") == "%%train" else None
    is_cell = source is not None or tags.get("source") == "%%train"
    return {"kind": "cell" if is_cell else "script",
            "source": source,
            "notebook": tags.get("notebook"),
            "cell": tags.get("cell"),
            "command": None if is_cell else command_line(record)}
