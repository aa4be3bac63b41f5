"""The served model, in the container: load it, describe it, check requests, run them batched.

Open Inference Protocol v2 tensors are ``{name, shape, datatype, data}``; this module turns
them into arrays for the model and its outputs back.  The model runtimes (numpy, onnxruntime,
torch) are imported inside functions: the image brings them, the module needs only the
standard library to be imported (tests/test_layout.py allows those three and no others here).
"""
import queue
import threading
import time

# ONNX element types and numpy dtype names, as the protocol's datatype names.
ONNX_TYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
              "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
              "tensor(int64)": "INT64", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
              "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(bool)": "BOOL",
              "tensor(string)": "BYTES"}
NUMPY_TYPES = {"FP32": "float32", "FP64": "float64", "FP16": "float16", "INT8": "int8",
               "INT16": "int16", "INT32": "int32", "INT64": "int64", "UINT8": "uint8",
               "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64", "BOOL": "bool",
               "BYTES": "object"}
DATATYPE_OF_NUMPY = {v: k for k, v in NUMPY_TYPES.items()}


class BadRequest(Exception):
    """The request does not fit the model: answered with 400 and this message."""


class LoadFailed(Exception):
    """The model could not be loaded: the deployment fails with this message as its reason."""


def _dim(d):
    return d if isinstance(d, int) and d >= 0 else -1


class OnnxModel:
    """An ONNX artifact in an ONNX Runtime session; its inputs and outputs from the graph."""

    platform = "onnxruntime_onnx"

    def __init__(self, path):
        try:
            import onnxruntime
        except ImportError:
            raise LoadFailed("onnxruntime is not installed in the deployment's image: add "
                             "pip=['onnxruntime'] to its Environment") from None
        self.runtime = f"onnxruntime {onnxruntime.__version__}"
        options = onnxruntime.SessionOptions()
        # Idle intra-op threads sleep instead of spinning: the machine is shared (a notebook,
        # training runs), and a spinning pool delays the handler that sends the answer; on 2
        # loaded cores this took resnet18's time beyond the model from 10-15 ms to 7 ms.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise LoadFailed(f"ONNX Runtime could not load {path}: {e}") from None
        self.inputs = [{"name": i.name, "datatype": ONNX_TYPES.get(i.type, i.type),
                        "shape": [_dim(d) for d in i.shape]} for i in self.session.get_inputs()]
        self.outputs = [{"name": o.name, "datatype": ONNX_TYPES.get(o.type, o.type),
                         "shape": [_dim(d) for d in o.shape]}
                        for o in self.session.get_outputs()]

    def run(self, feed):
        names = [o["name"] for o in self.outputs]
        return dict(zip(names, self.session.run(names, feed)))


class TorchModel:
    """A registered torch file holding a whole module (or TorchScript); one input, one output.

    Its input is described from the example input recorded at export, if any, else as FP32 of
    unknown shape."""

    platform = "pytorch_torchscript"

    def __init__(self, path, example_shape=None):
        try:
            import torch
        except ImportError:
            raise LoadFailed("torch is not installed in the deployment's image, and the model "
                             "has no ONNX artifact: export one (m.export_onnx(...))") from None
        try:
            try:
                module = torch.jit.load(str(path), map_location="cpu")
            except RuntimeError:
                module = torch.load(str(path), map_location="cpu", weights_only=False)
        except (AttributeError, ModuleNotFoundError) as e:
            raise LoadFailed(f"{path} is a pickled module whose class is not here ({e}): a "
                             "pickle stores the class's name, not its code; save TorchScript "
                             "(torch.jit.save) or export ONNX (m.export_onnx(...))") from None
        except Exception as e:
            raise LoadFailed(f"torch could not load {path}: {type(e).__name__}: {e}") from None
        if not isinstance(module, torch.nn.Module):
            raise LoadFailed(f"{path} holds a {type(module).__name__} (a state dict), not a "
                             "module to run: export the version to ONNX "
                             "(m.export_onnx(example, model=Net())) or deploy it with an "
                             "entry_script that builds the model")
        self.torch, self.module = torch, module.eval()
        self.runtime = f"torch {torch.__version__}"
        shape = [-1] + list(example_shape[1:]) if example_shape else [-1]
        self.inputs = [{"name": "input", "datatype": "FP32", "shape": shape}]
        self.outputs = [{"name": "output", "datatype": "FP32", "shape": [-1]}]

    def run(self, feed):
        with self.torch.no_grad():
            out = self.module(self.torch.from_numpy(feed["input"]))
        return {"output": out.detach().cpu().numpy()}


def to_arrays(model, inputs):
    """The request's ``inputs`` as {name: array}, checked against the model's; BadRequest
    names the input and what the model expects."""
    import numpy as np
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("the request needs 'inputs': a list of {name, shape, datatype, data}")
    expected = {i["name"]: i for i in model.inputs}
    feed = {}
    for tensor in inputs:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise BadRequest("each input needs a 'name'")
        name = tensor["name"]
        want = expected.get(name)
        if want is None:
            raise BadRequest(f"the model has no input {name!r}; its inputs: "
                             f"{', '.join(expected)}")
        datatype, shape = tensor.get("datatype"), tensor.get("shape")
        if datatype != want["datatype"]:
            raise BadRequest(f"input {name!r} has datatype {datatype!r}; the model expects "
                             f"{want['datatype']}")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or len(shape) != len(want["shape"]) and want["shape"] != [-1]
                or any(w not in (-1, d) for w, d in zip(want["shape"], shape))):
            raise BadRequest(f"input {name!r} has shape {shape!r}; the model expects "
                             f"{want['shape']} (-1: any size)")
        try:
            if "raw" in tensor:     # the binary data extension: the bytes after the JSON
                array = np.frombuffer(tensor["raw"], dtype=NUMPY_TYPES[datatype])
            else:
                array = np.asarray(tensor.get("data"), dtype=NUMPY_TYPES[datatype])
        except (TypeError, ValueError):
            raise BadRequest(f"input {name!r}: 'data' is not a list of {datatype} "
                             "values") from None
        size = 1
        for d in shape:
            size *= d
        if array.size != size:
            raise BadRequest(f"input {name!r} has {array.size} values in 'data' but shape "
                             f"{shape} needs {size}")
        feed[name] = array.reshape(shape)
    missing = [n for n in expected if n not in feed]
    if missing:
        raise BadRequest(f"the request lacks input {', '.join(map(repr, missing))}")
    return feed


def to_outputs(model, results, binary: bool = False):
    """The model's results as protocol output tensors, flattened row-major; with ``binary``
    their bytes follow the JSON (the binary data extension): (tensors, those bytes)."""
    out, blobs = [], []
    for spec in model.outputs:
        array = results[spec["name"]]
        tensor = {"name": spec["name"], "shape": list(array.shape),
                  "datatype": DATATYPE_OF_NUMPY.get(array.dtype.name, spec["datatype"])}
        if binary and array.dtype.kind in "fiub":
            blob = array.astype(array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = array.ravel().tolist()
        out.append(tensor)
    return out, b"".join(blobs)


class Counts:
    """What GET .../stats answers: model runs, their rows and time; successful requests and
    their time in the server (from headers in to answer out)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.runs = self.rows = self.run_ns = self.requests = self.request_ns = 0

    def add(self, rows: int, ns: int) -> None:
        with self.lock:
            self.runs += 1
            self.rows += rows
            self.run_ns += ns

    def answered(self, ns: int) -> None:
        with self.lock:
            self.requests += 1
            self.request_ns += ns

    def stats(self) -> dict:
        """Triton's statistics extension's fields for these."""
        with self.lock:
            return {"inference_count": self.rows, "execution_count": self.runs,
                    "inference_stats": {
                        "success": {"count": self.requests, "ns": self.request_ns},
                        "compute_infer": {"count": self.runs, "ns": self.run_ns}}}


def timed_run(model, feed, counts: Counts):
    """model.run(feed), counted with its rows and time."""
    start = time.perf_counter_ns()
    results = model.run(feed)
    counts.add(rows(feed), time.perf_counter_ns() - start)
    return results


def has_batch_axis(model) -> bool:
    return bool(model.inputs) and all(i["shape"] and i["shape"][0] == -1 for i in model.inputs)


class Batcher:
    """Runs concurrent requests as one batch: up to ``max_batch_size`` rows, waiting at most
    ``max_latency_ms`` after the first for more, and only while more requests are in flight
    (a lone client never waits).  Requests whose inner shapes differ from the first's wait for
    the next batch.  A request counts as in flight from ``arrive()`` (the server calls it once
    the headers are in, before the body is read) until its batch has run, or ``leave()`` if
    it never got to ``run``.  The model runs in the batcher's thread; the requests that arrive
    meanwhile queue up and are the next batch, taken at once when the model is free."""

    def __init__(self, model, max_batch_size: int, max_latency_ms: float, counts=None):
        self.model, self.max_rows = model, max_batch_size
        self.wait_s = max_latency_ms / 1000.0
        self.queue = queue.Queue()
        self.largest = 0        # the most rows one batch has had (logged as serve/max_batch)
        self.counts = counts or Counts()    # its runs, rows and time: GET .../stats
        self.inflight = 0
        self.lock = threading.Lock()
        self.local = threading.local()
        threading.Thread(target=self._loop, daemon=True, name="celltrain-batcher").start()

    def arrive(self) -> None:
        with self.lock:
            self.inflight += 1
        self.local.queued = False

    def leave(self) -> None:
        """The request ends: if it never reached the queue, it is no longer awaited."""
        if not getattr(self.local, "queued", True):
            self.local.queued = True
            with self.lock:
                self.inflight -= 1

    def run(self, feed):
        done, slot = threading.Event(), {}
        self.local.queued = True
        self.queue.put((feed, done, slot))
        done.wait()
        if "error" in slot:
            raise slot["error"]
        return slot["result"]

    def _loop(self):
        held = None
        while True:
            first = held or self.queue.get()
            held = None
            batch = [first]
            key = _inner_shapes(first[0])
            taken = rows(first[0])
            deadline = time.monotonic() + self.wait_s
            while taken < self.max_rows and self.inflight > len(batch):
                left = deadline - time.monotonic()
                try:
                    item = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if _inner_shapes(item[0]) != key or taken + rows(item[0]) > self.max_rows:
                    held = item
                    break
                batch.append(item)
                taken += rows(item[0])
            self.largest = max(self.largest, taken)
            self._run(batch)

    def _run(self, batch):
        import numpy as np
        with self.lock:
            self.inflight -= len(batch)
        try:
            if len(batch) == 1:
                results = [timed_run(self.model, batch[0][0], self.counts)]
            else:
                feed = {n: np.concatenate([b[0][n] for b in batch]) for n in batch[0][0]}
                joined = timed_run(self.model, feed, self.counts)
                results, at = [], 0
                for b in batch:
                    n = rows(b[0])
                    results.append({k: v[at:at + n] for k, v in joined.items()})
                    at += n
            for (_, done, slot), result in zip(batch, results):
                slot["result"] = result
                done.set()
        except Exception as e:  # every waiting request gets the error, the loop goes on
            for _, done, slot in batch:
                slot["error"] = e
                done.set()


def rows(feed) -> int:
    return next(iter(feed.values())).shape[0]


def _inner_shapes(feed):
    return tuple((n, a.shape[1:]) for n, a in sorted(feed.items()))
