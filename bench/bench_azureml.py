"""The Azure ML v1 layer's cost against celltrain called directly, measured in the same run:
submit + wait of one trivial v1 script on the local target, alternating the two ways, and the
import of the v1 names.  Prints medians and their ratio (layer / direct).

    .venv/bin/python bench/bench_azureml.py [--rounds 9]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = ("from azureml.core.run import Run\nrun = Run.get_context()\n"
          "run.log('acc', 0.5)\n")
DIRECT = "from celltrain import Run\nrun = Run.get_context()\nrun.log('acc', 0.5)\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    rounds = parser.parse_args().rounds
    root = Path(tempfile.mkdtemp(prefix="bench-azureml-"))
    (root / "v1").mkdir()
    (root / "v1" / "train.py").write_text(SCRIPT)
    (root / "direct").mkdir()
    (root / "direct" / "train.py").write_text(DIRECT)
    os.environ["CELLTRAIN_WORKSPACE"] = str(root / "ws")
    os.environ["CELLTRAIN_AZUREML_COMPUTE"] = "local"
    import celltrain.azureml
    celltrain.azureml.install()
    from azureml.core import Experiment, ScriptRunConfig, Workspace
    ws = Workspace.from_config()
    experiment = Experiment(ws, "bench")
    direct = ws.celltrain.experiment("bench-direct")
    layer_t, direct_t = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        experiment.submit(ScriptRunConfig(str(root / "v1"), "train.py",
                                          compute_target="local")).wait_for_completion()
        layer_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert direct.submit("train.py", root / "direct", target="local").wait() == "Completed"
        direct_t.append(time.perf_counter() - t)
    imports = []
    for code in ("import celltrain.azureml as a; a.install(); import azureml.core.run",
                 "import celltrain.runtime.context"):
        t = time.perf_counter()
        for _ in range(5):
            subprocess.run([sys.executable, "-c", code], check=True)
        imports.append((time.perf_counter() - t) / 5)
    lm, dm = statistics.median(layer_t), statistics.median(direct_t)
    print(f"submit + wait, local target, {rounds} rounds alternating")
    print(f"  v1 layer  median {lm:.3f} s")
    print(f"  celltrain median {dm:.3f} s")
    print(f"  ratio {lm / dm:.2f}")
    print(f"python -c import: v1 names {imports[0]:.3f} s, celltrain runtime {imports[1]:.3f} s,"
          f" ratio {imports[0] / imports[1]:.2f}")


if __name__ == "__main__":
    main()
