"""The deployment's server, in the container: the Open Inference Protocol v2 over HTTP/JSON.

``python -m celltrain.runtime.serve`` in a folder holding ``serve.json`` (written by
``celltrain.serving``) and the model's files.  Standard library only (``http.server``), Python
3.8+, so it runs on any image with Python and the model's runtime.  Routes:

- ``GET /v2/health/live``, ``/v2/health/ready``, ``GET /v2``
- ``GET /v2/models/<name>[/versions/<v>]`` (metadata), ``.../ready``, ``POST .../infer``
- ``GET .../stats``: rows, model runs and their time (the statistics extension's counts)
- the binary tensor data extension (Triton's and KServe's): JSON, then the tensors' bytes
- ``POST /score`` with an entry script: its ``run(raw_json)``, the return value JSON-encoded

Stats go through celltrain's telemetry as metrics (serve/requests, serve/errors,
serve/latency_p50_ms, serve/latency_p95_ms; serve/ready once the model is loaded), so the
store has them.  A model that fails to load is written to ``failure.txt``: the run's reason.
"""
import hmac
import importlib.util
import json
import os
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import serve_model, wire
from .serve_model import BadRequest, LoadFailed
from .wire import FAILURE_FILE, PORTS_ENV, TELEMETRY_ENV

CONFIG = "serve.json"
PORT = "8080"            # the port inside the container; PORTS_ENV says where to bind
STATS_INTERVAL_S = 1.0
LATENCY_WINDOW = 2000    # the p50/p95 are of the last this many requests
MAX_BODY = 256 << 20
BINARY_HEADER = "Inference-Header-Content-Length"   # the binary tensor data extension


class Stats:
    """Request count, errors and recent latencies, logged as metrics every second."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = self.errors = 0
        self.latencies = []
        self.logged = (0, 0)
        self.batcher = None

    def add(self, seconds: float, error: bool) -> None:
        with self.lock:
            self.requests += 1
            self.errors += error
            self.latencies.append(seconds * 1000.0)
            if len(self.latencies) > LATENCY_WINDOW:
                del self.latencies[:len(self.latencies) - LATENCY_WINDOW]

    def report(self, log, step: int) -> None:
        with self.lock:
            if (self.requests, self.errors) == self.logged:
                return
            self.logged = (self.requests, self.errors)
            ordered = sorted(self.latencies)
            counts = self.logged
        log("serve/requests", counts[0], step)
        log("serve/errors", counts[1], step)
        log("serve/latency_p50_ms", _quantile(ordered, 0.50), step)
        log("serve/latency_p95_ms", _quantile(ordered, 0.95), step)
        if self.batcher is not None:
            log("serve/max_batch", self.batcher.largest, step)


def _quantile(ordered, q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Service:
    """What the handler serves: the model (or None), the entry script, the batcher, the token."""

    def __init__(self, config: dict, token):
        self.config, self.token = config, token
        self.name, self.version = config["name"], str(config["version"])
        self.model = self.script = self.batcher = None
        self.ready = False
        self.stats = Stats()
        self.counts = serve_model.Counts()     # the model's runs and the answered requests

    def model_stats(self) -> dict:
        """The statistics extension's answer (Triton's GET .../stats): inference_count rows in
        execution_count model runs (their ratio: the mean batch), the requests answered and
        the model runs with their total time in ns (the rest of a request's time is HTTP,
        parsing and waiting for its batch)."""
        return {"model_stats": [{"name": self.name, "version": self.version,
                                 **self.counts.stats()}]}

    def load(self) -> None:
        config = self.config
        model_dir = os.path.abspath(config["model_dir"])
        os.environ[wire.MODEL_DIR_ENV] = os.environ["AZUREML_MODEL_DIR"] = model_dir
        if config.get("onnx"):
            self.model = serve_model.OnnxModel(config["onnx"])
        elif config.get("torch") and not config.get("entry_script"):
            self.model = serve_model.TorchModel(config["torch"], config.get("example_shape"))
        if config.get("entry_script"):
            self.script = _load_script(config["entry_script"])
        if self.model is not None and config["max_batch_size"] > 1 \
                and serve_model.has_batch_axis(self.model):
            self.batcher = serve_model.Batcher(self.model, config["max_batch_size"],
                                               config["max_latency_ms"], self.counts)
            self.stats.batcher = self.batcher
        self.ready = True

    def metadata(self) -> dict:
        model = self.model
        return {"name": self.name, "versions": [self.version],
                "platform": model.platform if model else "python_entry_script",
                "inputs": model.inputs if model else [],
                "outputs": model.outputs if model else []}

    def infer(self, body: dict) -> tuple:
        if self.model is None:
            raise BadRequest("this deployment has no model for /infer (it has no ONNX "
                             "artifact): POST its entry script's requests to /score")
        feed = serve_model.to_arrays(self.model, body.get("inputs"))
        if self.batcher:
            results = self.batcher.run(feed)
        else:
            results = serve_model.timed_run(self.model, feed, self.counts)
        binary = bool((body.get("parameters") or {}).get("binary_data_output")) or any(
            (o.get("parameters") or {}).get("binary_data") for o in body.get("outputs") or ()
            if isinstance(o, dict))
        outputs, blob = serve_model.to_outputs(self.model, results, binary)
        out = {"model_name": self.name, "model_version": self.version, "outputs": outputs}
        if "id" in body:
            out["id"] = body["id"]
        return out, blob


def _load_script(path: str):
    """Import the entry script and run its ``init()`` once (Azure ML's score.py contract)."""
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)
    from .azureml_names import install_if_asked
    install_if_asked()     # an Azure ML v1 score.py deployed through celltrain.azureml
    try:
        spec = importlib.util.spec_from_file_location("score", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not callable(getattr(module, "run", None)):
            raise LoadFailed(f"the entry script {os.path.basename(path)} defines no run(raw_data)")
        if callable(getattr(module, "init", None)):
            module.init()
    except LoadFailed:
        raise
    except Exception as e:
        traceback.print_exc()
        raise LoadFailed(f"the entry script {os.path.basename(path)} failed to load: "
                         f"{type(e).__name__}: {e}") from None
    return module


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"          # keep-alive: no new connection per request
    disable_nagle_algorithm = True         # else headers, then body: 40 ms of delayed ACK
    service = None                         # set by serve()

    def log_message(self, format, *args):  # one line per request would cost more than a request
        pass

    def _send(self, code: int, body, blob: bytes = b"") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        if blob:   # the binary data extension: JSON, then the outputs' bytes
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header(BINARY_HEADER, str(len(data)))
            data += blob
        else:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        token = self.service.token
        if not token:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        self._send(401, {"error": "this deployment needs a bearer token: send the header "
                                  "'Authorization: Bearer <token>' (Deployment.token)"})
        return False

    def _model_path(self, parts):
        """For /v2/models/<name>[/versions/<v>][/<action>]: the action, or raise LookupError."""
        service = self.service
        if len(parts) < 3 or parts[2] != service.name:
            raise LookupError(f"no model {parts[2] if len(parts) > 2 else ''!r} here; this "
                              f"deployment serves {service.name!r}")
        rest = parts[3:]
        if rest[:1] == ["versions"]:
            if len(rest) < 2 or rest[1] != service.version:
                raise LookupError(f"model {service.name!r} has no version "
                                  f"{rest[1] if len(rest) > 1 else ''!r} here; it serves "
                                  f"version {service.version}")
            rest = rest[2:]
        return rest[0] if rest else ""

    def do_GET(self):
        if not self._authorized():
            return
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        service = self.service
        if parts == ["v2", "health", "live"]:
            return self._send(200, {"live": True})
        if parts == ["v2", "health", "ready"]:
            return self._send(200 if service.ready else 503, {"ready": service.ready})
        if parts == ["v2"]:
            return self._send(200, {"name": "celltrain", "version": "2",
                                    "extensions": ["binary_tensor_data", "statistics"]})
        if parts[:2] == ["v2", "models"]:
            try:
                action = self._model_path(parts)
            except LookupError as e:
                return self._send(404, {"error": str(e)})
            if action == "":
                return self._send(200, service.metadata())
            if action == "ready":
                return self._send(200 if service.ready else 503, {"name": service.name,
                                                                 "ready": service.ready})
            if action == "stats":
                return self._send(200, service.model_stats())
        self._send(404, {"error": f"no route GET {self.path}"})

    def do_POST(self):
        started = time.perf_counter()
        error = True
        batcher = None
        try:
            if not self._authorized():
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._send(413, {"error": f"the request body is {length} bytes; at "
                                                 f"most {MAX_BODY} are taken"})
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            if parts[-1:] == ["infer"]:
                # in flight from its headers on, not from its last byte: the batcher waits
                # for a request whose body is still arriving (600 KB for one 224x224 image)
                batcher = self.service.batcher
                if batcher is not None:
                    batcher.arrive()
            raw = self.rfile.read(length)
            if parts == ["score"]:
                error = not self._score(raw)
                return
            if parts[:2] == ["v2", "models"]:
                try:
                    action = self._model_path(parts)
                except LookupError as e:
                    return self._send(404, {"error": str(e)})
                if action == "infer":
                    error = not self._answer(raw)
                    if not error:
                        self.service.counts.answered(int((time.perf_counter() - started) * 1e9))
                    return
            self._send(404, {"error": f"no route POST {self.path}"})
        finally:
            if batcher is not None:
                batcher.leave()
            self.service.stats.add(time.perf_counter() - started, error)

    def _answer(self, raw: bytes) -> bool:
        try:
            body = json.loads(_split_binary(raw, self.headers.get(BINARY_HEADER)))
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object with 'inputs'")
            _attach_binary(body, raw, self.headers.get(BINARY_HEADER))
            answer, blob = self.service.infer(body)
        except json.JSONDecodeError as e:
            self._send(400, {"error": f"the request body is not JSON: {e}"})
            return False
        except BadRequest as e:
            self._send(400, {"error": str(e)})
            return False
        except Exception as e:  # the model failed: 500, the traceback in the logs
            traceback.print_exc()
            self._send(500, {"error": f"the model failed: {type(e).__name__}: {e}"})
            return False
        self._send(200, answer, blob)
        return True

    def _score(self, raw: bytes) -> bool:
        script = self.service.script
        if script is None:
            self._send(404, {"error": "this deployment has no entry script: /score needs "
                                      "deploy(entry_script='score.py'); use /v2/models/"
                                      f"{self.service.name}/infer"})
            return False
        try:
            answer = json.dumps(script.run(raw.decode("utf-8", errors="replace")))
        except Exception as e:
            print(f"run() of the entry script failed on a /score request:", file=sys.stderr)
            traceback.print_exc()
            sys.stderr.flush()
            self._send(500, {"error": f"run() failed: {type(e).__name__}: {e} (the traceback "
                                      "is in the deployment's logs)"})
            return False
        self._send(200, answer.encode())
        return True


def _split_binary(raw: bytes, header) -> bytes:
    """The JSON part of a request: all of it, or its first Inference-Header-Content-Length
    bytes when binary tensor data follows."""
    if header is None:
        return raw
    if not header.isdigit() or int(header) > len(raw):
        raise BadRequest(f"{BINARY_HEADER} is {header!r}: it takes the JSON part's length "
                         f"in bytes, at most the body's {len(raw)}")
    return raw[:int(header)]


def _attach_binary(body: dict, raw: bytes, header) -> None:
    """Give each input with parameters.binary_data_size its bytes, in order, as "raw"."""
    if header is None:
        return
    at = int(header)
    for tensor in body.get("inputs") or ():
        size = (tensor.get("parameters") or {}).get("binary_data_size") \
            if isinstance(tensor, dict) else None
        if size is None:
            continue
        if not isinstance(size, int) or size < 0 or at + size > len(raw):
            raise BadRequest(f"input {tensor.get('name')!r}: binary_data_size {size!r} runs "
                             f"past the {len(raw) - at} bytes left in the body")
        tensor["raw"] = memoryview(raw)[at:at + size]    # no copy: numpy reads it in place
        at += size


class Server(ThreadingHTTPServer):
    request_queue_size = 128       # concurrent clients connecting at once are not refused
    daemon_threads = True


def _fail(reason: str) -> int:
    """Say why in failure.txt (the run's reason) and on stderr, and end with exit code 1."""
    print(f"celltrain serve: {reason}", file=sys.stderr, flush=True)
    telemetry = os.environ.get(TELEMETRY_ENV)
    if telemetry:
        with open(os.path.join(telemetry, FAILURE_FILE), "w") as f:
            f.write(reason)
    return 1


def main(argv=None) -> int:
    with open(CONFIG) as f:
        config = json.load(f)
    host, port = json.loads(os.environ.get(PORTS_ENV) or "{}").get(
        PORT, ["127.0.0.1", int(PORT)])
    service = Service(config, os.environ.get(wire.SERVE_TOKEN_ENV) or None)
    Handler.service = service
    try:
        server = Server((host, int(port)), Handler)
    except OSError as e:
        return _fail(f"the server could not listen on {host}:{port}: {e.strerror}")
    threading.Thread(target=server.serve_forever, daemon=True, name="celltrain-http").start()
    try:
        service.load()           # live answers while loading; ready once loaded
    except LoadFailed as e:
        return _fail(f"the model failed to load: {e}")
    from celltrain import log
    log("serve/ready", 1, 0)
    runtime = f" ({service.model.runtime})" if service.model is not None else ""
    print(f"celltrain serve: {service.name} version {service.version} ready on "
          f"{host}:{port}{runtime}", flush=True)
    step = 0
    while True:
        time.sleep(STATS_INTERVAL_S)
        step += 1
        service.stats.report(log, step)


if __name__ == "__main__":
    sys.exit(main())
