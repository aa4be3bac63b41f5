"""ONNX Runtime vs PyTorch eager: CPU inference latency of the example model (resnet18, 224x224).

The model is exported the way the registry exports it (dynamic batch axis, opset 18, parity
checked), then both run the same inputs at batch 1 and batch 32.  Printed: median latency of
each, and the ratio onnxruntime / torch eager (below 1: ONNX Runtime is faster), timed in
alternation.  Both use every core (torch's and ONNX Runtime's default thread pools).

    .venv/bin/python bench/bench_onnx.py [--repeat-1 30] [--repeat-32 5] [--threads N]
                                         [--json bench/results/onnx.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "magics"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from celltrain.registry.onnx_export import export_module, open_session  # noqa: E402


def paired_medians(fns, repeat: int, warmup: int = 2) -> list[float]:
    """Median seconds of each function, timed in alternation so that load from other
    processes on the machine falls on both alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat-1", type=int, default=30, help="timed runs at batch 1")
    p.add_argument("--repeat-32", type=int, default=5, help="timed runs at batch 32")
    p.add_argument("--threads", type=int, default=0,
                   help="threads for both (default 0: each library's default, all cores)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=2).eval()  # no downloads
    example = torch.randn(1, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        info = export_module(model, example, Path(tmp) / "onnx")
        export_s = time.perf_counter() - start
        session = open_session(Path(tmp) / "onnx" / "model.onnx", threads=args.threads)
        name = session.get_inputs()[0].name
        results = {"model": "resnet18 (random init, 2 classes)", "input": "3x224x224",
                   "cpus": os.cpu_count(), "threads": args.threads or "default",
                   "torch_threads": torch.get_num_threads(),
                   "torch": torch.__version__, "onnxruntime": info["onnxruntime"],
                   "opset": info["opset"], "exporter": info["exporter"],
                   "export_and_check_s": round(export_s, 2),
                   "max_abs_diff": info["max_abs_diff"], "batches": {}}
        print(f"exported and checked in {export_s:.1f}s: opset {info['opset']} "
              f"({info['exporter']}), max |onnx - torch| {info['max_abs_diff']:.2g}")
        print(f"{'batch':>5}  {'torch eager ms':>14}  {'onnxruntime ms':>14}  "
              f"{'ratio ort/torch':>15}")
        for batch, repeat in ((1, args.repeat_1), (32, args.repeat_32)):
            x = torch.randn(batch, 3, 224, 224)
            xn = x.numpy()

            def eager():
                with torch.inference_mode():
                    model(x)

            def ort():
                session.run(None, {name: xn})

            t_torch, t_ort = paired_medians([eager, ort], repeat)
            ratio = t_ort / t_torch
            results["batches"][str(batch)] = {"torch_ms": round(t_torch * 1e3, 2),
                                              "onnxruntime_ms": round(t_ort * 1e3, 2),
                                              "ratio_ort_over_torch": round(ratio, 3),
                                              "repeat": repeat}
            print(f"{batch:>5}  {t_torch * 1e3:>14.1f}  {t_ort * 1e3:>14.1f}  {ratio:>15.2f}")
            out = session.run(None, {name: xn})[0]
            with torch.inference_mode():
                np.testing.assert_allclose(out, model(x).numpy(), atol=1e-3)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
