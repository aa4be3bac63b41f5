"""A deployment's endpoint vs ONNX Runtime in-process: latency p50/p99 and throughput.

The same ONNX export of the example model (torchvision resnet18, 2 classes, 3x224x224; or
``--model tiny``, a small CNN on 3x32x32) runs (a) in this process in an ONNX Runtime session,
(b) behind ``ModelVersion.deploy`` (Open Inference Protocol v2, JSON over HTTP, batching up to
16 within ``--latency-ms``), on the same inputs.  Printed: p50/p99 latency at batch 1 with one
client, and rows/s with 1 and 16 concurrent clients, against in-process batch 1 and batch 16;
the ratios endpoint / in-process.  Batch-1 latencies are timed in alternation with the
in-process session (the overhead is the difference of their medians).

    .venv/bin/python bench/bench_serve.py [--model resnet18|tiny] [--target docker|local]
                                          [--requests 60] [--json bench/results/serve.json]
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "magics"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from celltrain import Workspace  # noqa: E402

NETS = {
    "resnet18": ("import torchvision\n"
                 "def make():\n"
                 "    return torchvision.models.resnet18(weights=None, num_classes=2)\n",
                 (3, 224, 224)),
    "tiny": ("import torch\n"
             "def make():\n"
             "    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1),\n"
             "        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),\n"
             "        torch.nn.Linear(16, 2))\n", (3, 32, 32)),
}
TRAIN = """
import os, torch
from bench_net import make
torch.manual_seed(0)
os.makedirs("outputs", exist_ok=True)
torch.save(make().state_dict(), "outputs/model.pt")
"""


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def client_loop(url, body: bytes, n: int, out: list, headers: dict):
    """One client on one keep-alive connection, as a real client would hold it."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    for _ in range(n):
        start = time.perf_counter()
        conn.request("POST", "/v2/models/bench/infer", body, headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(data[:300])
        out.append(time.perf_counter() - start)
    conn.close()


def paired(url, body, headers: dict, session, x1, n: int):
    """Batch-1 latencies of the endpoint and of the in-process session, timed in alternation
    (one each, n times) so that load from other jobs falls on both alike."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    local, remote = [], []
    for _ in range(n):
        t = time.perf_counter()
        session.run(None, {"input": x1})
        local.append(time.perf_counter() - t)
        t = time.perf_counter()
        conn.request("POST", "/v2/models/bench/infer", body, headers)
        resp = conn.getresponse()
        data = resp.read()
        remote.append(time.perf_counter() - t)
        if resp.status != 200:
            raise RuntimeError(data[:300])
    conn.close()
    return local, remote


def endpoint(url, body, clients: int, per_client: int, headers: dict):
    """(latencies, rows/s) with ``clients`` threads each sending ``per_client`` requests."""
    lat: list[float] = []
    threads = [threading.Thread(target=client_loop, args=(url, body, per_client, lat, headers))
               for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, clients * per_client / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(NETS), default="resnet18")
    p.add_argument("--target", default="docker")
    p.add_argument("--requests", type=int, default=60, help="requests per measurement")
    p.add_argument("--latency-ms", type=float, default=5.0, help="the batcher's wait")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    code, shape = NETS[args.model]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        (src / "bench_net.py").write_text(code)
        (src / "train.py").write_text(textwrap.dedent(TRAIN))
        ws = Workspace(Path(tmp) / "ws")
        run = ws.experiment("bench").submit("train.py", src, target="local")
        assert run.wait(timeout=300) == "Completed", run.logs()
        sys.path.insert(0, str(src))
        from bench_net import make
        version = run.register_model("bench", "outputs/model.pt")
        art = version.export_onnx(torch.randn(1, *shape), model=make())
        svc = version.deploy("bench", target=args.target, max_batch_size=16,
                             max_latency_ms=args.latency_ms)
        try:
            import onnxruntime
            session = onnxruntime.InferenceSession(str(art.path),
                                                   providers=["CPUExecutionProvider"])
            x1 = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
            x16 = np.repeat(x1, 16, axis=0)
            for _ in range(3):
                session.run(None, {"input": x1})
                session.run(None, {"input": x16})
            local1 = []
            for _ in range(args.requests):
                t = time.perf_counter()
                session.run(None, {"input": x1})
                local1.append(time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(max(2, args.requests // 16)):
                session.run(None, {"input": x16})
            local16_rps = 16 * max(2, args.requests // 16) / (time.perf_counter() - t)
            json_body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                                "shape": list(x1.shape),
                                                "data": x1.ravel().tolist()}]}).encode()
            head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                           "shape": list(x1.shape),
                                           "parameters": {"binary_data_size": x1.nbytes}}],
                               "parameters": {"binary_data_output": True}}).encode()
            kinds = {"json": (json_body, {"Content-Type": "application/json"}),
                     "binary": (head + x1.tobytes(),
                                {"Inference-Header-Content-Length": str(len(head))})}
            measured = {}
            for kind, (body, headers) in kinds.items():
                endpoint(svc.url, body, 1, 3, headers)                       # warm up
                here, lat1 = paired(svc.url, body, headers, session, x1, args.requests)
                rps1 = 1 / statistics.mean(lat1)
                lat16, rps16 = endpoint(svc.url, body, 16, max(2, args.requests // 16),
                                        headers)
                measured[kind] = (len(body), here, lat1, rps1, lat16, rps16)
        finally:
            svc.stop()
    ms = 1000.0
    res = {
        "model": args.model, "target": args.target, "input": list(shape),
        "inproc_b1_p50_ms": quantile(local1, .5) * ms,
        "inproc_b1_p99_ms": quantile(local1, .99) * ms,
        "inproc_b1_rows_s": 1 / statistics.mean(local1), "inproc_b16_rows_s": local16_rps,
    }
    for kind, (size, here, lat1, rps1, lat16, rps16) in measured.items():
        res.update({
            f"{kind}_body_bytes": size,
            f"{kind}_paired_inproc_b1_p50_ms": quantile(here, .5) * ms,
            f"{kind}_c1_p50_ms": quantile(lat1, .5) * ms,
            f"{kind}_c1_p99_ms": quantile(lat1, .99) * ms,
            f"{kind}_c1_rows_s": rps1, f"{kind}_c16_rows_s": rps16,
            f"{kind}_c16_p50_ms": quantile(lat16, .5) * ms,
            f"{kind}_c16_p99_ms": quantile(lat16, .99) * ms,
            f"{kind}_p50_overhead_ms": (quantile(lat1, .5) - quantile(here, .5)) * ms,
            f"{kind}_ratio_c1_p50": quantile(lat1, .5) / quantile(here, .5),
            f"{kind}_ratio_c16_vs_inproc_b16": rps16 / local16_rps,
        })
    for k, v in res.items():
        print(f"{k:38} {v:.3f}" if isinstance(v, float) else f"{k:38} {v}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
