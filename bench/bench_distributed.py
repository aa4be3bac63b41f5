"""Distributed runs: a fixed CPU job on 1, 2 and 4 processes, in celltrain's containers vs the
same script under ``torchrun --standalone`` on the host, and start-up of a 2-node vs a 1-node run.

The job is DDP (gloo) over a small MLP with a fixed global batch split between the ranks, one
torch thread per rank, so its work is the same at every size.  Both sides are measured in this
run, alternating: the script reports its own training time (after init_process_group, so the
compute side of the container overhead) and the wall time from start to exit is taken around it
(for celltrain: submit() to Completed, image cached).  Start-up: the job with 0 steps (init_process_group
only), 1 node vs 2 nodes of one process, submit() to Completed.  Ratios are celltrain / host (1.0 = no overhead).

    .venv/bin/python bench/bench_distributed.py [--steps 60] [--json bench/results/distributed.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGE = "celltrain/base:offline"   # the host's torch, as the host side uses
JOB = """
import os, sys, time
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
torch.set_num_threads(1)
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
steps, global_batch = int(sys.argv[1]), 512
torch.manual_seed(0)
model = DDP(torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 256)))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
gen = torch.Generator().manual_seed(rank)
dist.barrier()
t = time.perf_counter()
for _ in range(steps):
    x = torch.randn(global_batch // world, 256, generator=gen)
    loss = ((model(x) - x) ** 2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
dist.barrier()
if rank == 0:
    os.makedirs("outputs", exist_ok=True)
    open("outputs/train_s.txt", "w").write(repr(time.perf_counter() - t))
dist.destroy_process_group()
"""


def host(src: Path, procs: int, steps: int) -> tuple[float, float]:
    work = Path(tempfile.mkdtemp())
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nnodes", "1", "--nproc-per-node", str(procs), str(src / "job.py"),
                    str(steps)], cwd=work, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    return wall, float((work / "outputs" / "train_s.txt").read_text())


def celltrain_run(ws, src: Path, procs: int, steps: int, nodes: int = 1,
                  script: str = "job.py") -> tuple[float, float | None]:
    t = time.perf_counter()
    from celltrain import Environment
    run = ws.experiment("bench").submit(script, src, args=[steps], gpus="none", nodes=nodes,
                                        procs_per_node=procs, launcher="torchrun",
                                        environment=Environment(base_image=IMAGE))
    run.wait(timeout=600)
    wall = time.perf_counter() - t
    assert run.status == "Completed", (run.reason, run.logs()[-2000:])
    timing = run.folder / "outputs" / "train_s.txt"
    return wall, float(timing.read_text()) if timing.exists() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    from celltrain import Workspace
    folder = Path(tempfile.mkdtemp())
    src = folder / "src"
    src.mkdir()
    (src / "job.py").write_text(JOB)
    (src / "hello.py").write_text("print('hello')\n")
    ws = Workspace(folder / "ws")
    celltrain_run(ws, src, 1, 2)    # image cached, SDK imported: measured runs start warm
    rows = []
    for procs in (1, 2, 4):
        best = {}
        for _ in range(args.repeat):       # alternate, keep the best of each
            for name, fn in (("host", host), ("celltrain", None)):
                wall, train = (host(src, procs, args.steps) if fn else
                               celltrain_run(ws, src, procs, args.steps))
                old = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(old[0], wall), min(old[1], train))
        row = {"procs": procs, "host_train_s": best["host"][1],
               "celltrain_train_s": best["celltrain"][1], "host_wall_s": best["host"][0],
               "celltrain_wall_s": best["celltrain"][0]}
        row["train_ratio"] = row["celltrain_train_s"] / row["host_train_s"]
        row["wall_ratio"] = row["celltrain_wall_s"] / row["host_wall_s"]
        rows.append(row)
        print(f"{procs} procs: training {row['host_train_s']:.2f}s host, "
              f"{row['celltrain_train_s']:.2f}s celltrain (ratio {row['train_ratio']:.3f}); "
              f"wall {row['host_wall_s']:.2f}s vs {row['celltrain_wall_s']:.2f}s "
              f"(ratio {row['wall_ratio']:.3f})", flush=True)
    startup = {}
    for nodes in (1, 2):
        startup[nodes] = min(celltrain_run(ws, src, 1, 0, nodes=nodes, script="job.py")[0]
                             for _ in range(args.repeat))
    ratio = startup[2] / startup[1]
    print(f"start-up to Completed, 0 training steps: 1 node {startup[1]:.2f}s, 2 nodes "
          f"{startup[2]:.2f}s (ratio {ratio:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"scaling": rows, "startup_s": startup,
                                               "startup_ratio": ratio,
                                               "cores": os.cpu_count()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
