"""Submit-to-completion of a trivial script on the Ray target vs the local Docker target.

A local Ray cluster (a head and two workers, as in the tests: tests/ray_cluster.py) is started
for the benchmark and stopped after it.  Both targets run the same image and script; the Ray
run adds the placement group, the node agent, the snapshot through the object store and the
pulls back.  Both start warm where they can (a worker container waits on the node where the
environment last ran).  Interleaved rounds, medians, one ratio (target <= 1.5).  Each submission waits
until the workspace's spare supervisor is ready (as when a user submits a while after the last
run).  A third column: the Ray run with the spare not connected to the cluster ahead of the run
(CELLTRAIN_SPARE_CONNECT=0, how it was before), and each Ray run's time in each state.

Also the telemetry latency from a node to the run folder: a script logs a point every 0.2 s
with its wall time; the time each point's frame appears in the store, p50/p95.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

IMAGE = "celltrain/base:offline"
ROUNDS = 5
WARM: list = []       # (target, whether the run started warm: README "Warm starts")
SCRIPT = "print('hello')\n"
TICKS = """
import time
from celltrain import log
for i in range(40):
    log("sent", time.time(), step=i)
    time.sleep(0.2)
"""


PHASES: dict = {}     # (column, state) -> seconds in that state, one per Ray run
SPARE_WAIT_S = 120


def spare_ready(ws) -> bool:
    """Wait until the workspace's spare supervisor reads its fifo (its warm-up done)."""
    from celltrain.spare import SPARE_FIFO
    deadline = time.monotonic() + SPARE_WAIT_S
    while time.monotonic() < deadline:
        try:
            os.close(os.open(ws.path / SPARE_FIFO, os.O_WRONLY | os.O_NONBLOCK))
            return True
        except OSError:
            time.sleep(0.05)
    return False


def one(ws, src: Path, target: str, column: str | None = None, connect: bool = True) -> float:
    """One trivial run, submitted once the spare is ready; ``connect``: whether the spare
    started after it connects to the saved Ray target (the next run's)."""
    from celltrain import Environment
    spare_ready(ws)
    os.environ["CELLTRAIN_SPARE_CONNECT"] = "1" if connect else "0"
    t = time.perf_counter()
    run = ws.experiment("bench").submit("train.py", src, gpus="none", target=target,
                                        environment=Environment(base_image=IMAGE))
    status = run.wait(poll=0.02)
    elapsed = time.perf_counter() - t
    assert status == "Completed", run.reason
    WARM.append((target, run.started_warm))
    if column:
        history = ws.store.status_history(run.id)
        for now, then in zip(history, history[1:]):
            if now["status"] != then["status"]:
                PHASES.setdefault((column, now["status"]), []).append(then["time"] - now["time"])
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
            docker, ray, unconnected = [], [], []
            for _ in range(rounds):
                docker.append(one(ws, src, "docker"))                # its spare connects
                ray.append(one(ws, src, "cluster", "connected", connect=False))
                unconnected.append(one(ws, src, "cluster", "unconnected"))
            spare_ready(ws)
            lags = latency(ws, src, "cluster")
    finally:
        cluster.stop()
    d, r = statistics.median(docker), statistics.median(ray)
    u = statistics.median(unconnected)
    p50, p95 = lags[len(lags) // 2], lags[int(len(lags) * 0.95) - 1]
    print(f"trivial script, cached image {IMAGE}, median of {rounds} interleaved rounds, "
          f"load {os.getloadavg()[0]:.1f}")
    warm = {t: [w for tt, w in WARM[2:] if tt == t] for t in ("docker", "cluster")}
    print(f"  docker target          {d:6.2f} s   ({sum(warm['docker'])} of "
          f"{len(warm['docker'])} started warm)")
    print(f"  ray target (2 workers) {r:6.2f} s   ratio {r / d:.2f} (target <= 1.5; "
          f"{sum(warm['cluster'])} of {len(warm['cluster'])} Ray runs started warm)")
    print(f"  ray, spare unconnected {u:6.2f} s   ratio {u / d:.2f} "
          "(CELLTRAIN_SPARE_CONNECT=0)")
    for column in ("connected", "unconnected"):
        print(f"  {column:>11} ray run, median s per state: " + ", ".join(
            f"{state} {statistics.median(v):.2f}" for (c, state), v in PHASES.items()
            if c == column))
    print(f"  telemetry node -> store: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
          f"({len(lags)} points)")
    return r / d


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS)   # rounds: a quick try with 1
