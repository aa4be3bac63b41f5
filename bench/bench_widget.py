"""The live widget: how fast a logged point reaches it, and what watching costs the kernel.

1. Latency from ``log()`` in the container to the widget's model (``RunView``), p50 and p95
   (target p95 <= 0.5 s).  The script logs its own wall-clock time as the value, 100 points a
   second; container and host share the clock.  Baseline, same run: the arrival in the store,
   seen by a poller that looks every 2 ms (the floor any store-fed view can reach).
2. Kernel CPU while watching a run that logs 1,000 points a second: a real ipykernel runs
   ``run.show()``; CPU seconds of the kernel process per wall second, against the same kernel
   idle over an equal window (baseline).
3. One chart redraw with 4 series of 2,000 points: the inline SVG the widget sends against a
   matplotlib PNG (what a kernel-side raster chart would pay per frame).

    .venv/bin/python bench/bench_widget.py [--target docker|local] [--seconds 15] [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "magics"))

import numpy as np  # noqa: E402

from celltrain import Environment, Workspace, states  # noqa: E402
from celltrain.views.widget import RunWidget  # noqa: E402

LATENCY_SCRIPT = """
import time
from celltrain import log
end = time.time() + {seconds}
while time.time() < end:
    log("sent", time.time())
    time.sleep(0.01)
"""

LOAD_SCRIPT = """
import time
from celltrain import log, progress
start = time.time()
for i in progress(range({seconds} * 10), desc="load"):
    for _ in range(50):
        log("loss", 1.0 / (i + 1)); log("val_loss", 1.1 / (i + 1))
    time.sleep(max(0.0, start + (i + 1) * 0.1 - time.time()))
"""


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def submit(ws: Workspace, folder: Path, code: str, target: str, name: str):
    src = folder / name
    src.mkdir()
    (src / "train.py").write_text(textwrap.dedent(code))
    kwargs = {"target": target}
    if target == "docker":
        kwargs.update(environment=Environment(base_image="celltrain/base:offline"), gpus="none")
    return ws.experiment(name).submit("train.py", src, **kwargs)


def wait_running(run, timeout=300):
    deadline = time.monotonic() + timeout
    while run.status not in (states.RUNNING, *states.TERMINAL):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run.id} still {run.status}")
        time.sleep(0.05)


def bench_latency(ws, folder, target, seconds):
    run = submit(ws, folder, LATENCY_SCRIPT.format(seconds=seconds), target, "latency")
    widget_lat, store_lat = [], []
    w = RunWidget(run)
    w.model.on_points = lambda rows, received: widget_lat.extend(
        received - value for _, _, _, value, _ in rows)
    stop = threading.Event()

    def store_poller():
        last = 0
        while not stop.is_set():
            rows = ws.store.metric_series(run.id, after_id=last)
            if rows:
                now = time.time()
                last = rows[-1][0]
                store_lat.extend(now - value for _, _, _, value, _ in rows)
            time.sleep(0.002)
    poller = threading.Thread(target=store_poller, daemon=True)
    poller.start()
    w.start()
    run.wait(timeout=seconds + 300)
    w.wait(30)
    stop.set()
    poller.join()
    w.close()
    return {"points": len(widget_lat),
            "widget_p50_s": percentile(widget_lat, 50), "widget_p95_s": percentile(widget_lat, 95),
            "store_p50_s": percentile(store_lat, 50), "store_p95_s": percentile(store_lat, 95)}


def _kernel_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_kernel_cpu(ws, folder, target, seconds):
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        pid = km.provisioner.process.pid

        def execute(code):
            reply = kc.execute_interactive(code, timeout=120, output_hook=lambda msg: None)
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"kernel: {reply['content']}")
        execute("import celltrain, celltrain.views.widget, ipywidgets")
        time.sleep(2)
        c0, t0 = _kernel_cpu(pid), time.monotonic()
        time.sleep(seconds)
        idle = (_kernel_cpu(pid) - c0) / (time.monotonic() - t0)

        src = folder / "load"
        src.mkdir()
        (src / "train.py").write_text(textwrap.dedent(LOAD_SCRIPT.format(seconds=seconds + 15)))
        env = ("Environment(base_image='celltrain/base:offline'), gpus='none'"
               if target == "docker" else "None")
        execute(textwrap.dedent(f"""
            from celltrain import Workspace, Environment
            ws = Workspace({str(ws.path)!r})
            run = ws.experiment("load").submit("train.py", {str(src)!r}, target={target!r},
                                               environment={env})
            w = run.show()
            run_id = run.id
        """))
        run = ws.run(ws.store.list_runs(experiment="load", limit=1)[0]["id"])
        wait_running(run)
        while not run.metric("loss"):
            time.sleep(0.05)
        time.sleep(2)                       # past the first draw of the whole history
        p0, c0, t0 = len(run.metric("loss")), _kernel_cpu(pid), time.monotonic()
        time.sleep(seconds)
        watching = (_kernel_cpu(pid) - c0) / (time.monotonic() - t0)
        rate = 2 * (len(run.metric("loss")) - p0) / (time.monotonic() - t0)
        execute("print(w.model.redraws, w.chart_renders)")
        execute("run.cancel(grace=2)\nw.close()")
        return {"idle_cpu_per_s": idle, "watching_cpu_per_s": watching,
                "points_per_s": rate, "seconds": seconds}
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def bench_redraw():
    from celltrain.views import charts
    x = np.arange(2000.0)
    panels = [("loss", [("loss", x, np.exp(-x / 500)), ("val_loss", x, np.exp(-x / 400))]),
              ("acc", [("acc", x, 1 - np.exp(-x / 300)), ("val_acc", x, 1 - np.exp(-x / 350))])]
    charts.png_panels(panels)     # imports and font cache out of the timing
    out = {}
    for name, fn in (("svg", lambda: charts.svg_panels(panels)),
                     ("matplotlib png", lambda: charts.png_panels(panels))):
        times = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=("docker", "local"), default="docker")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ws = Workspace(folder / "ws")
        results = {"target": args.target,
                   "latency": bench_latency(ws, folder, args.target, args.seconds),
                   "kernel": bench_kernel_cpu(ws, folder, args.target, args.seconds),
                   "redraw_s": bench_redraw()}
    lat, k, r = results["latency"], results["kernel"], results["redraw_s"]
    print(f"widget bench, target={args.target}, {os.cpu_count()} cores")
    print(f"  latency log() -> widget model ({lat['points']} points): "
          f"p50 {lat['widget_p50_s']:.3f}s  p95 {lat['widget_p95_s']:.3f}s  (target p95 <= 0.5s)")
    print(f"  baseline log() -> store (2 ms poller):        p50 {lat['store_p50_s']:.3f}s  "
          f"p95 {lat['store_p95_s']:.3f}s;  widget/store p95 "
          f"{lat['widget_p95_s'] / lat['store_p95_s']:.2f}x")
    print(f"  kernel CPU watching {k['points_per_s']:.0f} points/s: "
          f"{k['watching_cpu_per_s'] * 1000:.0f} ms/s; idle kernel {k['idle_cpu_per_s'] * 1000:.0f}"
          f" ms/s; extra {(k['watching_cpu_per_s'] - k['idle_cpu_per_s']) * 1000:.0f} ms/s")
    print(f"  one chart redraw (4 x 2,000 points): svg {r['svg'] * 1000:.1f} ms, matplotlib png "
          f"{r['matplotlib png'] * 1000:.0f} ms ({r['matplotlib png'] / r['svg']:.0f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
