"""Submit-to-completion of a trivial script (cached image) vs a bare `docker run` of it.

Both run the same image and command; celltrain adds the run record, snapshot, supervisor,
telemetry and copy-back.  Interleaved rounds, medians, one ratio.
"""
from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

IMAGE = "celltrain/base:offline"
ROUNDS = 7
SCRIPT = "print('hello')\n"


def bare(src: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", "-v", f"{src}:/src:ro", "-w", "/src", IMAGE,
                    "python3", "-u", "train.py"], check=True, capture_output=True)
    return time.perf_counter() - t


def celltrain_run(ws, src: Path) -> float:
    from celltrain import Environment
    t = time.perf_counter()
    run = ws.experiment("bench").submit("train.py", src, gpus="none",
                                        environment=Environment(base_image=IMAGE))
    status = run.wait(poll=0.02)
    elapsed = time.perf_counter() - t
    assert status == "Completed", run.reason
    return elapsed


def main() -> float:
    from celltrain import Workspace
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        (src / "train.py").write_text(SCRIPT)
        ws = Workspace(Path(tmp) / "ws")
        bare(src), celltrain_run(ws, src)          # warm both paths once
        times_bare, times_ct = [], []
        for _ in range(ROUNDS):
            times_bare.append(bare(src))
            times_ct.append(celltrain_run(ws, src))
    b, c = statistics.median(times_bare), statistics.median(times_ct)
    print(f"trivial script, cached image {IMAGE}, median of {ROUNDS} interleaved rounds")
    print(f"  bare docker run        {b:6.2f} s")
    print(f"  celltrain submit+wait  {c:6.2f} s   ratio {c / b:.2f} (target <= 1.25)")
    return c / b


if __name__ == "__main__":
    main()
