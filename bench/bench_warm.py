"""Warm starts (issue 14): Shift+Enter to the first metric, cold against warm.

1. A `%%train` cell that imports torch, makes a tensor and logs once, through a real IPython
   shell: from the magic's call until the first metric is in the store; cold (`%train config
   warm=off`), warm (the environment's worker up), and a fresh host `python` doing the same
   (until its first line of output).  Targets: warm <= 0.5 s and <= 0.25x cold.
2. A trivial cell (`x = sum(range(1000))`) warm, until its value is back in the notebook,
   against a bare `docker run --rm` of the same code (target: <= 0.6x).
3. Training throughput: steps per second a small MLP loop logs, warm against cold (target
   >= 0.97x).
Interleaved rounds, medians.  `python bench/bench_warm.py [--rounds 5]`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

IMAGE = "celltrain/base:offline"
TORCH_CELL = "import torch\nx = torch.ones(3)\nlog('v', float(x.sum()))\n"
HOST_CODE = "import torch\nx = torch.ones(3)\nprint(float(x.sum()), flush=True)\n"
TRIVIAL = "x = sum(range(1000))\nprint(x)\nx\n"
TRAIN_CELL = """import time, torch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
data, target = torch.randn(256, 256), torch.randint(0, 10, (256,))
for _ in range(20):
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(data), target).backward(); opt.step()
t = time.perf_counter()
for step in range(300):
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(data), target).backward(); opt.step()
log('steps_per_s', 300 / (time.perf_counter() - t))
"""


def bare(code: str) -> float:
    t = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", IMAGE, "python3", "-u", "-c", code], check=True,
                   capture_output=True)
    return time.perf_counter() - t


def host_python() -> float:
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-u", "-c", HOST_CODE], stdout=subprocess.PIPE)
    proc.stdout.readline()
    elapsed = time.perf_counter() - t
    proc.wait()
    return elapsed


class Shell:
    def __init__(self, tmp: str):
        from IPython.testing.globalipapp import get_ipython
        self.ip = get_ipython()
        self.ip.run_cell("%load_ext celltrain")
        self.workspace = f"{tmp}/ws"
        self.ip.run_line_magic("train", f"config workspace={tmp}/ws target=docker gpus=none "
                                        f"image={IMAGE} experiment=bench")

    def warm(self, on: bool) -> None:
        self.ip.run_line_magic("train", f"config warm={'on' if on else 'off'}")

    def first_metric(self, cell: str, name: str) -> tuple[float, object]:
        """Seconds from the magic's call to the first point of ``name`` in the store."""
        from IPython.utils.capture import capture_output
        t = time.perf_counter()
        with capture_output():
            result = self.ip.run_cell(f"%%train --no-wait\n{cell}")
        assert result.error_in_exec is None, result
        run = result.result
        while not run.metrics().get(name):
            assert run.status not in ("Failed", "Canceled"), run.reason
            time.sleep(0.002)
        elapsed = time.perf_counter() - t
        run.wait(timeout=300)
        time.sleep(0.3)   # the worker back to waiting
        return elapsed, run

    def value(self, cell: str) -> tuple[float, bool]:
        """Seconds until the cell's value is back in the notebook, and whether it ran warm."""
        from IPython.utils.capture import capture_output
        t = time.perf_counter()
        with capture_output():
            result = self.ip.run_cell(f"%%train\n{cell}")
        elapsed = time.perf_counter() - t
        assert result.error_in_exec is None, result
        from celltrain import Workspace
        last = max(Workspace(self.workspace).runs(), key=lambda run: run.record["created"])
        return elapsed, last.started_warm


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ["CELLTRAIN_WARM"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        shell = Shell(tmp)
        shell.warm(True)
        shell.first_metric(TORCH_CELL, "v")       # cold: image facts cached, worker started
        time.sleep(8)                             # the worker imports torch
        cold, warm, host, warm_flags = [], [], [], []
        for _ in range(args.rounds):
            shell.warm(False)
            cold.append(shell.first_metric(TORCH_CELL, "v")[0])
            shell.warm(True)
            elapsed, run = shell.first_metric(TORCH_CELL, "v")
            warm.append(elapsed)
            warm_flags.append(run.started_warm)
            host.append(host_python())
        c, w, h = (statistics.median(x) for x in (cold, warm, host))
        print(f"torch cell, Shift+Enter to the first metric in the store, median of "
              f"{args.rounds} interleaved rounds (load {os.getloadavg()[0]:.1f})")
        print(f"  cold                  {c:6.2f} s")
        print(f"  warm                  {w:6.2f} s   {w / c:.2f}x cold (target <= 0.5 s, "
              f"<= 0.25x); started warm: {sum(warm_flags)}/{len(warm_flags)}")
        print(f"  fresh host python     {h:6.2f} s   warm is {w / h:.2f}x a fresh host python "
              "(until its first line of output)")
        times_bare, times_cell, trivial_flags = [], [], []
        bare(TRIVIAL)
        for _ in range(args.rounds):
            times_bare.append(bare(TRIVIAL))
            elapsed, started_warm = shell.value(TRIVIAL)
            times_cell.append(elapsed)
            trivial_flags.append(started_warm)
            time.sleep(0.3)
        b, t = statistics.median(times_bare), statistics.median(times_cell)
        print(f"trivial cell until its value is back, median of {args.rounds}")
        print(f"  bare docker run       {b:6.2f} s")
        print(f"  %%train cell (warm)   {t:6.2f} s   ratio {t / b:.2f} (target <= 0.6); started "
              f"warm: {sum(trivial_flags)}/{len(trivial_flags)}")
        rates = {True: [], False: []}
        for _ in range(max(3, args.rounds // 2)):
            for on in (False, True):
                shell.warm(on)
                _, run = shell.first_metric(TRAIN_CELL, "steps_per_s")
                assert run.started_warm == on
                rates[on].append(run.metrics()["steps_per_s"][0])
        rc, rw = statistics.median(rates[False]), statistics.median(rates[True])
        print(f"training throughput (MLP steps/s), median of {len(rates[True])}")
        print(f"  cold {rc:8.1f}   warm {rw:8.1f}   ratio {rw / rc:.3f} (target >= 0.97)")
        os.chdir("/")
    os.chdir("/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
