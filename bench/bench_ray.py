"""Submit-to-completion of a trivial script on the Ray target vs the local Docker target.

A local Ray cluster (a head and two workers, as in the tests: tests/ray_cluster.py) is started
for the benchmark and stopped after it.  Both targets run the same image and script; the Ray
run adds the placement group, the node agent, the snapshot through the object store and the
pulls back.  Interleaved rounds, medians, one ratio (target <= 1.5).

Also the telemetry latency from a node to the run folder: a script logs a point every 0.2 s
with its wall time; the time each point's frame appears in the store, p50/p95.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

IMAGE = "celltrain/base:offline"
ROUNDS = 5
WARM: list = []       # whether each Docker run was forked from a warm worker (README "Warm starts")
SCRIPT = "print('hello')\n"
TICKS = """
import time
from celltrain import log
for i in range(40):
    log("sent", time.time(), step=i)
    time.sleep(0.2)
"""


def one(ws, src: Path, target: str) -> float:
    from celltrain import Environment
    t = time.perf_counter()
    run = ws.experiment("bench").submit("train.py", src, gpus="none", target=target,
                                        environment=Environment(base_image=IMAGE))
    status = run.wait(poll=0.02)
    elapsed = time.perf_counter() - t
    assert status == "Completed", run.reason
    if target == "docker":
        WARM.append(run.started_warm)
    return elapsed


def latency(ws, src: Path, target: str) -> list[float]:
    """Seconds from each log() in the container to its point being readable in the store."""
    from celltrain import Environment
    run = ws.experiment("bench").submit("ticks.py", src, gpus="none", target=target,
                                        environment=Environment(base_image=IMAGE))
    seen: dict[int, float] = {}
    while run.status not in ("Completed", "Failed", "Canceled"):
        now = time.time()
        for step, sent in enumerate(run.metrics().get("sent", [])):
            seen.setdefault(step, now - sent)
        time.sleep(0.02)
    assert run.status == "Completed", run.reason
    return sorted(seen.values())


def main(rounds: int = ROUNDS) -> float | None:
    try:
        import ray  # noqa: F401
    except ImportError:
        print("skipped: Ray is not installed (pip install 'celltrain[ray]')")
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from ray_cluster import start_cluster
    from celltrain import Workspace
    cluster = start_cluster()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src"
            src.mkdir()
            (src / "train.py").write_text(SCRIPT)
            (src / "ticks.py").write_text(TICKS)
            ws = Workspace(Path(tmp) / "ws")
            ws.add_target("cluster", "ray", address=cluster.address)
            one(ws, src, "docker"), one(ws, src, "cluster")          # warm both paths
            docker, ray = [], []
            for _ in range(rounds):
                docker.append(one(ws, src, "docker"))
                ray.append(one(ws, src, "cluster"))
            lags = latency(ws, src, "cluster")
    finally:
        cluster.stop()
    d, r = statistics.median(docker), statistics.median(ray)
    p50, p95 = lags[len(lags) // 2], lags[int(len(lags) * 0.95) - 1]
    print(f"trivial script, cached image {IMAGE}, median of {rounds} interleaved rounds")
    print(f"  docker target          {d:6.2f} s   ({sum(WARM[1:])} of {len(WARM) - 1} "
          "started warm)")
    print(f"  ray target (2 workers) {r:6.2f} s   ratio {r / d:.2f} (target <= 1.5)")
    print(f"  telemetry node -> store: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
          f"({len(lags)} points)")
    return r / d


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS)   # rounds: a quick try with 1
