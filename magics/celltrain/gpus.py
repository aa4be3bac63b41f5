"""How many GPUs this machine has, asked of the NVIDIA driver (``nvidia-smi -L``), not of torch:
importing torch costs seconds, and the host process need not have it."""
from __future__ import annotations

import shutil
import subprocess


def visible_gpu_count() -> int:
    """GPUs the NVIDIA driver lists here; 0 without the driver or when it does not answer."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))
