"""A deployment's endpoint vs ONNX Runtime in-process: batch-1 latency overhead, throughput.

The same ONNX export (torchvision resnet18 with random weights, 2 classes, 3x224x224, the
example model; ``--model tiny``, a small CNN on 3x32x32; ``--model io224``, resnet18's input
and output with next to no compute, which shows the endpoint's own cost at that request size)
runs (a) in this process through the server's own ``OnnxModel`` (the same ONNX Runtime
session options as the server's), (b) behind ``ModelVersion.deploy`` (batching up to 16
within ``--latency-ms``), and with ``--target docker`` also (c) at the container's own address,
past Docker's userland proxy on the published port, and (d) a second deployment of it on the
host's network (``deploy(..., network="host")``: the server binds 127.0.0.1:port itself).

With the Docker target the in-process side also runs inside the deployment's container
(``serve_inproc.py`` through ``docker exec``): with cgroup v1 all containers share one CPU
group that competes with each host process alone, so on a loaded machine a container gets less
CPU than this process, whatever it serves.  Ratios are given against both; batch-1 pairs use
the in-container session.

The machine is shared and noisy, so the sides are measured interleaved, in ``--rounds``
rounds, each side's turn rotating, and ratios are taken within a round; the medians of those
are reported, with their spread and the load average.  Throughput: 16 clients (one process of
their own, ``serve_load.py``: pre-encoded requests, one thread, so their Python costs little
and none of it here) send batch 1 back to back for ``--seconds``, against the in-process
session running batch 16 as long.  Batch-1 overhead: each endpoint request is paired with an
in-process run of the same input (the order alternating); the overhead is the median of the
pairs' differences.  As the server also counts its model runs' time (``GET .../stats``), the
same requests give the endpoint's cost beyond its own model run, which the load does not blur
(round medians of per-round means).

    .venv/bin/python bench/bench_serve.py [--model resnet18|tiny|io224] [--target docker|local]
                                          [--rounds 5] [--seconds 4] [--pairs 10]
                   [--body binary json] [--endpoints published hostnet direct]
                   [--json bench/results/serve.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "magics"))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from serve_load import Client, http_request  # noqa: E402

from celltrain import Workspace  # noqa: E402
from celltrain.runtime.serve_model import OnnxModel  # noqa: E402

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
    "io224": ("import torch\n"
              "def make():\n"
              "    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1),\n"
              "        torch.nn.Flatten(), torch.nn.Linear(3, 2))\n", (3, 224, 224)),
}
TRAIN = """
import os, torch
from bench_net import make
torch.manual_seed(0)
os.makedirs("outputs", exist_ok=True)
torch.save(make().state_dict(), "outputs/model.pt")
"""
PATH = "/v2/models/bench/infer"
MS = 1000.0


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bodies(x1) -> dict:
    """Per kind, (body, headers) of one batch-1 request."""
    plain = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x1.shape),
                                    "data": x1.ravel().tolist()}]}).encode()
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x1.shape),
                                   "parameters": {"binary_data_size": x1.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return {"json": (plain, {"Content-Type": "application/json"}),
            "binary": (head + x1.tobytes(), {"Inference-Header-Content-Length": str(len(head)),
                                             "Content-Type": "application/octet-stream"})}


def container_url(run_id: str) -> str | None:
    """The deployment container's own address on Docker's bridge (no userland proxy)."""
    out = subprocess.run(["docker", "inspect", "-f",
                          "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                          f"celltrain-{run_id}"], capture_output=True, text=True)
    ips = out.stdout.split()
    return f"http://{ips[0]}:8080" if out.returncode == 0 and ips else None


def model_stats(url: str) -> tuple:
    """(rows, model runs, their ns, requests answered, their ns in the server) so far."""
    with urllib.request.urlopen(url + "/v2/models/bench/stats", timeout=60) as r:
        s = json.load(r)["model_stats"][0]
    done = s["inference_stats"]
    return (s["inference_count"], s["execution_count"], done["compute_infer"]["ns"],
            done["success"]["count"], done["success"]["ns"])


def stats_delta(url: str, before: tuple) -> tuple:
    return tuple(a - b for a, b in zip(model_stats(url), before))


class Endpoint:
    """One address and body kind: a load process of 16 clients, and one client for pairs."""

    def __init__(self, url: str, kind: str, body: bytes, headers: dict, clients: int,
                 tmp: Path):
        self.url, self.kind = url, kind
        host, port = url.split("//")[1].split(":")
        request = http_request(host, int(port), PATH, body, headers)
        req_file = tmp / f"request-{len(os.listdir(tmp))}"
        req_file.write_bytes(request)
        self.load = subprocess.Popen(
            [sys.executable, str(HERE / "serve_load.py"), host, port, str(req_file), str(clients)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.one = Client(host, int(port), request)

    def run_load(self, seconds: float) -> dict:
        self.load.stdin.write(f"{seconds}\n")
        self.load.stdin.flush()
        line = self.load.stdout.readline()
        if not line:
            raise RuntimeError("the load process ended (its error is above)")
        return json.loads(line)

    def close(self) -> None:
        self.one.close()
        self.load.stdin.close()
        self.load.wait(timeout=60)


class ContainerSession:
    """The in-process session inside the deployment's container (serve_inproc.py)."""

    def __init__(self, run_id: str):
        self.proc = subprocess.Popen(
            ["docker", "exec", "-i", f"celltrain-{run_id}", "python3", "-c",
             (HERE / "serve_inproc.py").read_text()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.runtime = self._ask(None)["ready"]

    def _ask(self, command):
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the in-container session ended (its error is above)")
        return json.loads(line)

    def rows_s(self, seconds: float) -> float:
        return self._ask(f"b16 {seconds}")

    def once(self) -> float:
        return self._ask("b1")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class HostSession:
    """The in-process session in this process."""

    def __init__(self, model, x1, x16):
        self.model, self.x1, self.x16, self.runtime = model, x1, x16, model.runtime

    def rows_s(self, seconds: float) -> float:
        return inproc_rows_s(self.model, self.x16, seconds)

    def once(self) -> float:
        t = time.perf_counter()
        self.model.run({"input": self.x1})
        return time.perf_counter() - t

    def close(self) -> None:
        pass


def inproc_rows_s(model, x16, seconds: float) -> float:
    start, n = time.perf_counter(), 0
    while True:
        model.run({"input": x16})
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 2:
            return n * len(x16) / elapsed


def pairs(session, ep: Endpoint, n: int, flip: bool) -> list:
    """n (in-process, endpoint) batch-1 latencies, each pair timed back to back."""
    out = []
    for i in range(n):
        order = (i + flip) % 2
        if order:
            remote = ep.one.once()
        local = session.once()
        if not order:
            remote = ep.one.once()
        out.append((local, remote))
    return out


def measure(args, sessions: dict, endpoints: dict) -> list:
    """The rounds: per round, the load average, every side's throughput and the pairs (each
    endpoint's with the baseline session: the in-container one where there is one)."""
    rounds = []
    sides = [*sessions, *endpoints]
    base = sessions.get("inproc_container") or sessions["inproc"]
    for r in range(args.rounds):
        rnd = {"load": os.getloadavg()[0], "rows_s": {}, "c16": {}, "mean_batch": {},
               "pairs": {}}
        for side in sides[r % len(sides):] + sides[:r % len(sides)]:
            if side in sessions:
                rnd["rows_s"][side] = sessions[side].rows_s(args.seconds)
                continue
            ep = endpoints[side]
            before = model_stats(ep.url)
            got = ep.run_load(args.seconds)
            rows, runs = stats_delta(ep.url, before)[:2]
            rnd["rows_s"][side] = got["answered"] / got["seconds"]
            rnd["c16"][side] = got["latencies"]
            rnd["mean_batch"][side] = rows / max(1, runs)
        rnd["server_ms"] = {}
        for side, ep in endpoints.items():
            before = model_stats(ep.url)
            rnd["pairs"][side] = pairs(base, ep, args.pairs, flip=r % 2 == 1)
            for _ in range(100):   # the server counts a request just after its answer is out
                _, runs, run_ns, answered, answered_ns = stats_delta(ep.url, before)
                if answered >= args.pairs:
                    break
                time.sleep(0.02)
            # per request, in the server: its model run, and all its time from headers to answer
            rnd["server_ms"][side] = (run_ns / runs / 1e6, answered_ns / answered / 1e6)
        rnd["load_after"] = os.getloadavg()[0]
        rounds.append(rnd)
        print(f"round {r + 1}/{args.rounds}: load {rnd['load']:.1f}; rows/s " + ", ".join(
            f"{k} {v:.1f}" for k, v in rnd["rows_s"].items()), flush=True)
    return rounds


def summarize(rounds: list, sessions: dict, endpoints: dict) -> dict:
    res = {"load_min": min(min(r["load"], r["load_after"]) for r in rounds),
           "load_max": max(max(r["load"], r["load_after"]) for r in rounds)}
    for name in sessions:
        res[f"{name}_b16_rows_s"] = statistics.median(r["rows_s"][name] for r in rounds)
    all_pairs = [p for r in rounds for side in r["pairs"] for p in r["pairs"][side]]
    base = "inproc_container" if "inproc_container" in sessions else "inproc"
    res["paired_baseline"] = base
    res["paired_b1_p50_ms"] = quantile([p[0] for p in all_pairs], .5) * MS
    for side in endpoints:
        if base != "inproc":
            ratios = [r["rows_s"][side] / r["rows_s"]["inproc"] for r in rounds]
            res[f"{side}_c16_ratio_to_host_inproc"] = statistics.median(ratios)
        ratios = [r["rows_s"][side] / r["rows_s"][base] for r in rounds]
        c16 = [x for r in rounds for x in r["c16"][side]]
        prs = [p for r in rounds for p in r["pairs"][side]]
        per_round = [statistics.median(b - a for a, b in r["pairs"][side]) * MS for r in rounds]
        res.update({
            f"{side}_c16_rows_s": statistics.median(r["rows_s"][side] for r in rounds),
            f"{side}_c16_ratio": statistics.median(ratios),
            f"{side}_c16_ratio_min": min(ratios), f"{side}_c16_ratio_max": max(ratios),
            f"{side}_c16_mean_batch": statistics.median(r["mean_batch"][side] for r in rounds),
            f"{side}_c16_p50_ms": quantile(c16, .5) * MS,
            f"{side}_c16_p99_ms": quantile(c16, .99) * MS,
            f"{side}_c1_p50_ms": quantile([p[1] for p in prs], .5) * MS,
            f"{side}_c1_p99_ms": quantile([p[1] for p in prs], .99) * MS,
            f"{side}_paired_inproc_b1_p50_ms": quantile([p[0] for p in prs], .5) * MS,
            f"{side}_b1_overhead_ms": statistics.median(b - a for a, b in prs) * MS,
            f"{side}_b1_overhead_round_min_ms": min(per_round),
            f"{side}_b1_overhead_round_max_ms": max(per_round),
            # the same requests' own model time, as the server measured it: the endpoint's
            # cost beyond its model run, and the server's own part of that
            f"{side}_b1_server_model_mean_ms": statistics.median(
                r["server_ms"][side][0] for r in rounds),
            f"{side}_b1_beyond_model_mean_ms": statistics.median(
                statistics.mean(b for _, b in r["pairs"][side]) * MS - r["server_ms"][side][0]
                for r in rounds),
            f"{side}_b1_in_server_beyond_model_mean_ms": statistics.median(
                r["server_ms"][side][1] - r["server_ms"][side][0] for r in rounds),
        })
    return res


def deploy(tmp: Path, args):
    code, shape = NETS[args.model]
    src = tmp / "src"
    src.mkdir()
    (src / "bench_net.py").write_text(code)
    (src / "train.py").write_text(textwrap.dedent(TRAIN))
    ws = Workspace(tmp / "ws")
    run = ws.experiment("bench").submit("train.py", src, target="local")
    assert run.wait(timeout=300) == "Completed", run.logs()
    sys.path.insert(0, str(src))
    from bench_net import make
    version = run.register_model("bench", "outputs/model.pt")
    art = version.export_onnx(torch.randn(1, *shape), model=make())
    svcs = {"published": version.deploy("bench", target=args.target, max_batch_size=16,
                                        max_latency_ms=args.latency_ms)}
    if "hostnet" in args.endpoints and args.target == "docker":
        svcs["hostnet"] = version.deploy("bench-hostnet", target=args.target, network="host",
                                         max_batch_size=16, max_latency_ms=args.latency_ms)
    return art, svcs, shape


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(NETS), default="resnet18")
    p.add_argument("--target", default="docker")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=4.0, help="each side's turn in a round")
    p.add_argument("--pairs", type=int, default=10, help="batch-1 pairs per round and side")
    p.add_argument("--body", nargs="+", choices=["binary", "json"], default=["binary"])
    p.add_argument("--endpoints", nargs="+", choices=["published", "hostnet", "direct"],
                   default=["published", "hostnet", "direct"],
                   help="Docker target: the published port (through Docker's proxy), a second "
                        "deployment on the host's network, the first's container address")
    p.add_argument("--latency-ms", type=float, default=2.0, help="the batcher's wait")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        art, svcs, shape = deploy(tmp, args)
        endpoints, sessions = {}, {}
        try:
            model = OnnxModel(str(art.path))
            server_runtime = next((line for line in svcs["published"].logs().splitlines()
                                   if "ready on" in line), "?")
            x1 = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
            x16 = np.repeat(x1, 16, axis=0)
            urls = {name: svc.url for name, svc in svcs.items()}
            if "direct" in args.endpoints and args.target == "docker":
                urls["direct"] = container_url(svcs["published"].run_id)
            (tmp / "req").mkdir()
            for kind in args.body:
                body, headers = bodies(x1)[kind]
                for where, url in urls.items():
                    endpoints[f"{kind}_{where}"] = Endpoint(url, kind, body, headers, 16,
                                                            tmp / "req")
            sessions["inproc"] = HostSession(model, x1, x16)
            if args.target == "docker":
                sessions["inproc_container"] = ContainerSession(svcs["published"].run_id)
            for _ in range(3):                                       # warm up
                model.run({"input": x16})
            for ep in endpoints.values():
                ep.run_load(min(1.0, args.seconds))
                pairs(sessions["inproc"], ep, 3, False)
            rounds = measure(args, sessions, endpoints)
        finally:
            for closing in [*endpoints.values(), *sessions.values()]:
                closing.close()
            for svc in svcs.values():
                svc.stop()
    res = {"model": args.model, "target": args.target, "input": list(shape),
           "rounds": args.rounds, "seconds": args.seconds, "pairs": args.pairs,
           "server": server_runtime,
           **{f"{k}_runtime": v.runtime for k, v in sessions.items()},
           **summarize(rounds, sessions, endpoints)}
    for k, v in res.items():
        print(f"{k:40} {v:.3f}" if isinstance(v, float) else f"{k:40} {v}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"summary": res, "rounds": rounds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
