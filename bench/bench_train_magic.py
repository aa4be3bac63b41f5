"""`%%train` costs: packaging a big namespace, and a trivial cell against a bare `docker run`.

1. Packaging: a notebook namespace holding a 100 MB array and 50 notebook functions (each
   calling the previous one) read by one cell; `build_bundle` time and bundle size against a
   plain `pickle.dump` of the same array to the same disk (the floor for moving the data).
2. A trivial `%%train` cell (cached image, nothing to pin) through a real IPython shell, from
   the magic's call until its value is back, against a bare `docker run --rm` of the same code
   in the same image.  Interleaved rounds, medians, one ratio (target <= 1.3).
"""
from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGE = "celltrain/base:offline"
CELL = "x = sum(range(1000))\nprint(x)\nx\n"


def notebook_namespace(array_mb: int = 100, functions: int = 50) -> dict:
    import numpy as np
    namespace = {"__name__": "__main__", "np": np,
                 "data": np.random.default_rng(0).random(array_mb * 2**20 // 8)}
    code = ["def f0(x):\n    return x + 1\n"]
    code += [f"def f{i}(x):\n    return f{i - 1}(x) + 1\n" for i in range(1, functions)]
    exec(compile("".join(code), "<notebook>", "exec"), namespace)
    return namespace


def bench_packaging(rounds: int = 3) -> dict:
    from celltrain.cell.packing import build_bundle
    namespace = notebook_namespace()
    cell = "total = f49(0) + float(data.sum())\n"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "nb"
        folder.mkdir()
        build_times, pickle_times, size = [], [], 0
        for i in range(rounds):
            t = time.perf_counter()
            with open(Path(tmp) / "plain.pkl", "wb") as f:
                pickle.dump(namespace["data"], f, protocol=5)
            pickle_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = build_bundle(cell, namespace, folder=folder, dest=Path(tmp) / f"b{i}")
            build_times.append(time.perf_counter() - t)
            size = b.size
            b.cleanup()
    plain = statistics.median(pickle_times)
    built = statistics.median(build_times)
    array_bytes = namespace["data"].nbytes
    print(f"packaging: 100 MB array + 50 notebook functions, median of {rounds}")
    print(f"  pickle.dump of the array   {plain:6.3f} s")
    print(f"  build_bundle               {built:6.3f} s   ratio {built / plain:.2f}")
    print(f"  bundle size {size / 2**20:.1f} MB for {array_bytes / 2**20:.1f} MB of array "
          f"(overhead {(size - array_bytes) / 1024:.1f} KB)")
    return {"pickle_s": plain, "build_s": built, "size": size}


def bare(code: str) -> float:
    t = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", IMAGE, "python3", "-u", "-c", code], check=True,
                   capture_output=True)
    return time.perf_counter() - t


def bench_trivial_cell(rounds: int = 7) -> dict:
    from IPython.testing.globalipapp import get_ipython
    from IPython.utils.capture import capture_output
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        ip = get_ipython()
        ip.run_cell("%load_ext celltrain")
        ip.run_line_magic("train", f"config workspace={tmp}/ws target=docker gpus=none "
                                   f"image={IMAGE} experiment=bench")

        def magic() -> float:
            t = time.perf_counter()
            with capture_output():
                result = ip.run_cell(f"%%train\n{CELL}", store_history=True)
            elapsed = time.perf_counter() - t
            assert result.error_in_exec is None and result.result == 499500, result
            return elapsed

        bare(CELL), magic()   # warm both paths (image facts cached, spare supervisor)
        times_bare, times_magic = [], []
        for _ in range(rounds):
            times_bare.append(bare(CELL))
            times_magic.append(magic())
        os.chdir("/")
    b, m = statistics.median(times_bare), statistics.median(times_magic)
    print(f"trivial cell, cached image {IMAGE}, median of {rounds} interleaved rounds")
    print(f"  bare docker run       {b:6.2f} s")
    print(f"  %%train cell          {m:6.2f} s   ratio {m / b:.2f} (target <= 1.3)")
    return {"bare_s": b, "magic_s": m, "ratio": m / b}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--skip-docker", action="store_true")
    args = parser.parse_args(argv)
    bench_packaging()
    if not args.skip_docker:
        bench_trivial_cell(args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
