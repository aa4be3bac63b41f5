"""Run every benchmark in bench/, one after another (`make bench`).

Each prints its own ratios against a baseline measured in the same run; copy what matters into
BENCHMARKS.md.  Pass names to run a subset: `python bench/run_all.py log submit`.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXTRA_ARGS = {"bench_onnx.py": ["--threads", "1"]}


def main(argv: list[str]) -> int:
    scripts = sorted(p for p in HERE.glob("bench_*.py")
                     if not argv or p.stem.removeprefix("bench_") in argv)
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *EXTRA_ARGS.get(script.name, [])])
        print(f"({script.name}: {time.perf_counter() - start:.0f} s, exit {code})", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
