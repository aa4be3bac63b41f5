"""The in-process side of bench_serve.py inside the deployment's container (``docker exec``).

On a machine shared through cgroup v1, every container shares the one ``/docker`` CPU group,
which competes with each host process on its own: under load, a container gets less CPU than
a host process.  Running the in-process session in the deployment's own container gives the
endpoint's baseline the same CPU share, ONNX Runtime build and session options (the server's
``OnnxModel``).  Reads ``serve.json`` from the snapshot; commands on stdin, one a line:
``b16 <seconds>`` answers rows/s of batch 16, ``b1`` the seconds of one batch-1 run.
"""
import json
import os
import sys
import time

import numpy as np

from celltrain.runtime.serve_model import OnnxModel

os.chdir("/celltrain-run/snapshot")
with open("serve.json") as f:
    config = json.load(f)
model = OnnxModel(config["onnx"])
shape = [d if d > 0 else 1 for d in model.inputs[0]["shape"][1:]]
x1 = np.random.default_rng(0).random((1, *shape), dtype=np.float32)   # bench_serve's input
x16 = np.repeat(x1, 16, axis=0)
name = model.inputs[0]["name"]
for _ in range(3):
    model.run({name: x16})
print(json.dumps({"ready": model.runtime}), flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "b1":
        t = time.perf_counter()
        model.run({name: x1})
        print(json.dumps(time.perf_counter() - t), flush=True)
        continue
    seconds, start, n = float(cmd[1]), time.perf_counter(), 0
    while True:
        model.run({name: x16})
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 2:
            break
    print(json.dumps(n * 16 / elapsed), flush=True)
