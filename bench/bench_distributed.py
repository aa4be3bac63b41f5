"""Distributed runs: a fixed CPU job on 1, 2 and 4 processes, in celltrain's containers vs the
same script under ``torchrun --standalone`` on the host, and start-up of a 2-node vs a 1-node run.

The job is DDP (gloo) over a small MLP with a fixed global batch split between the ranks, one
torch thread per rank, so its work is the same at every size.  The primary number is the
script's own training time between two barriers (after init_process_group: the compute side of
the container overhead); the wall time from start to exit is taken around it (for celltrain:
submit() to Completed, image cached).  Each size runs ``--pairs`` pairs, host and celltrain
back to back, the order alternating between pairs (so a load that drifts falls on both
sides); each pair gives a ratio celltrain / host (1.0 = no overhead), and the median and the
minimum of those ratios are reported with the 1-minute load average taken before each run.
Start-up: the job with 0 steps (init_process_group only), 1 node vs 2 nodes of one process.

``--default-cpu-shares`` sets each celltrain container back to Docker's default CPU weight
(1024) right after it starts, as celltrain ran them before it weighed a node's container by its
ranks: the comparison that shows what that weight does under load.

    .venv/bin/python bench/bench_distributed.py [--steps 150] [--pairs 5] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
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
                    str(steps)], cwd=work, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    return wall, float((work / "outputs" / "train_s.txt").read_text())


def default_shares(run_id: str, stop: threading.Event) -> None:
    """Set the run's containers back to Docker's default CPU weight as they appear."""
    import docker
    client, done = docker.from_env(), set()
    while not stop.is_set():
        for c in client.containers.list(filters={"label": f"celltrain.run={run_id}"}):
            if c.id not in done:
                c.update(cpu_shares=1024)
                done.add(c.id)
        stop.wait(0.2)


def celltrain_run(ws, src: Path, procs: int, steps: int, nodes: int = 1,
                  shares_as_before: bool = False) -> tuple[float, float | None]:
    from celltrain import Environment
    t = time.perf_counter()
    run = ws.experiment("bench").submit("job.py", src, args=[steps], gpus="none", nodes=nodes,
                                        procs_per_node=procs, launcher="torchrun",
                                        environment=Environment(base_image=IMAGE))
    stop = threading.Event()
    if shares_as_before:
        threading.Thread(target=default_shares, args=(run.id, stop), daemon=True).start()
    run.wait(timeout=900)
    wall = time.perf_counter() - t
    stop.set()
    assert run.status == "Completed", (run.reason, run.logs()[-2000:])
    timing = run.folder / "outputs" / "train_s.txt"
    return wall, float(timing.read_text()) if timing.exists() else None


def size(ws, src: Path, procs: int, args) -> dict:
    """``args.pairs`` host/celltrain pairs at ``procs`` processes, the order alternating."""
    pairs = []
    for i in range(args.pairs):
        pair = {}
        for side in (("host", "celltrain") if i % 2 == 0 else ("celltrain", "host")):
            load = os.getloadavg()[0]
            wall, train = (host(src, procs, args.steps) if side == "host" else
                           celltrain_run(ws, src, procs, args.steps,
                                         shares_as_before=args.default_cpu_shares))
            pair[side] = {"wall_s": wall, "train_s": train, "load": load}
        pair["train_ratio"] = pair["celltrain"]["train_s"] / pair["host"]["train_s"]
        pair["wall_ratio"] = pair["celltrain"]["wall_s"] / pair["host"]["wall_s"]
        pairs.append(pair)
        print(f"  {procs} procs, pair {i + 1}: training {pair['host']['train_s']:.2f} s host, "
              f"{pair['celltrain']['train_s']:.2f} s celltrain ({pair['train_ratio']:.3f}); "
              f"wall {pair['host']['wall_s']:.1f} s vs {pair['celltrain']['wall_s']:.1f} s "
              f"({pair['wall_ratio']:.3f}); load {pair['host']['load']:.1f}", flush=True)
    loads = [p[side]["load"] for p in pairs for side in ("host", "celltrain")]
    train = [p["train_ratio"] for p in pairs]
    wall = [p["wall_ratio"] for p in pairs]
    return {"procs": procs, "pairs": pairs,
            "host_train_s": statistics.median(p["host"]["train_s"] for p in pairs),
            "celltrain_train_s": statistics.median(p["celltrain"]["train_s"] for p in pairs),
            "train_ratio_median": statistics.median(train), "train_ratio_min": min(train),
            "train_ratio_max": max(train), "wall_ratio_median": statistics.median(wall),
            "wall_ratio_min": min(wall), "load_median": statistics.median(loads),
            "load_min": min(loads), "load_max": max(loads)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--sizes", default="1,2,4", help="process counts, e.g. 1,2,4")
    parser.add_argument("--startup-repeat", type=int, default=2,
                        help="runs of each start-up case (0: skip the start-up part)")
    parser.add_argument("--default-cpu-shares", action="store_true",
                        help="celltrain containers at Docker's default CPU weight (as before)")
    parser.add_argument("--json")
    args = parser.parse_args()
    from celltrain import Workspace
    folder = Path(tempfile.mkdtemp())
    src = folder / "src"
    src.mkdir()
    (src / "job.py").write_text(JOB)
    ws = Workspace(folder / "ws")
    began = time.perf_counter()
    celltrain_run(ws, src, 1, 2)    # image cached, SDK imported: measured runs start warm
    host(src, 1, 2)                 # the host's torch in the page cache too
    rows = []
    for procs in (int(p) for p in args.sizes.split(",")):
        row = size(ws, src, procs, args)
        rows.append(row)
        print(f"{procs} procs: training ratio median {row['train_ratio_median']:.3f} "
              f"(min {row['train_ratio_min']:.3f}, max {row['train_ratio_max']:.3f}); "
              f"wall ratio median {row['wall_ratio_median']:.3f}; load "
              f"{row['load_min']:.1f}-{row['load_max']:.1f} (median {row['load_median']:.1f})",
              flush=True)
    startup, ratio = {}, None
    if args.startup_repeat:
        for nodes in (1, 2):
            startup[nodes] = min(celltrain_run(ws, src, 1, 0, nodes=nodes)[0]
                                 for _ in range(args.startup_repeat))
        ratio = startup[2] / startup[1]
        print(f"start-up to Completed, 0 training steps: 1 node {startup[1]:.2f}s, 2 nodes "
              f"{startup[2]:.2f}s (ratio {ratio:.2f}); load {os.getloadavg()[0]:.1f}")
    print(f"bench time {time.perf_counter() - began:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"scaling": rows, "startup_s": startup, "startup_ratio": ratio,
             "steps": args.steps, "default_cpu_shares": args.default_cpu_shares,
             "cores": os.cpu_count()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
