"""Where celltrain itself is installed: supervisors and local runs put it on their path."""
from __future__ import annotations

from pathlib import Path

PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
