"""The deployment server's batcher and request checks, in this process: a real numpy model
(a matrix product that records the batches it is given), real threads; no HTTP here (the
container tests in test_serving.py cover that)."""
from __future__ import annotations

import http.client
import json
import socket
import threading

import numpy as np
import pytest
from procs import until

from celltrain.runtime.serve import Handler, Server, Service
from celltrain.runtime.serve_model import BadRequest, Batcher, to_arrays, to_outputs


class Doubler:
    """A model with a batch axis: output = 2 * input, any inner shape; records batch sizes."""

    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]
    outputs = [{"name": "y", "datatype": "FP32", "shape": [-1, -1]}]

    def __init__(self, fail_on=None):
        self.batches, self.fail_on = [], fail_on

    def run(self, feed):
        x = feed["x"]
        self.batches.append(x.shape[0])
        if self.fail_on is not None and (x == self.fail_on).any():
            raise RuntimeError("the model failed on this batch")
        return {"y": x * 2}


class Gated(Doubler):
    """Its first run waits for ``release``: the requests that come meanwhile queue up."""

    def __init__(self):
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def run(self, feed):
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(60)
        return super().run(feed)


def concurrently(batcher, feeds):
    results, errors = [None] * len(feeds), [None] * len(feeds)
    barrier = threading.Barrier(len(feeds))

    def client(i):
        batcher.arrive()
        barrier.wait()
        try:
            results[i] = batcher.run(feeds[i])
        except Exception as e:  # noqa: BLE001
            errors[i] = e
        finally:
            batcher.leave()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(feeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_concurrent_requests_share_batches_and_get_their_own_rows_back():
    model = Doubler()
    batcher = Batcher(model, max_batch_size=8, max_latency_ms=200)
    # two inner shapes: rows of 3 and rows of 5 never share a batch
    feeds = [{"x": np.full((1, 3 if i % 2 else 5), i, np.float32)} for i in range(12)]
    results, errors = concurrently(batcher, feeds)
    assert errors == [None] * 12
    for feed, result in zip(feeds, results):
        np.testing.assert_array_equal(result["y"], feed["x"] * 2)
    # How many requests share a batch depends on how the threads are scheduled (on a loaded
    # machine each may come alone); what never varies: every row answered once, no batch over
    # the limit, none mixing inner shapes.
    assert sum(model.batches) == 12
    assert max(model.batches) <= 8 and batcher.largest == max(model.batches)
    assert batcher.inflight == 0


def test_a_failing_batch_fails_its_requests_and_the_batcher_goes_on():
    model = Doubler(fail_on=7)
    batcher = Batcher(model, max_batch_size=4, max_latency_ms=200)
    results, errors = concurrently(batcher, [{"x": np.full((1, 2), 7, np.float32)}])
    assert isinstance(errors[0], RuntimeError) and results == [None]
    results, errors = concurrently(batcher, [{"x": np.ones((2, 2), np.float32)}])
    assert errors == [None] and results[0]["y"].tolist() == [[2, 2], [2, 2]]


def test_requests_are_checked_against_the_model_naming_the_input():
    model = Doubler()
    ok = to_arrays(model, [{"name": "x", "datatype": "FP32", "shape": [2, 2],
                            "data": [[1, 2], [3, 4]]}])          # nested data is taken too
    assert ok["x"].shape == (2, 2) and ok["x"].dtype == np.float32
    with pytest.raises(BadRequest, match=r"input 'x' has shape \[4\]; the model expects "
                                         r"\[-1, -1\]"):
        to_arrays(model, [{"name": "x", "datatype": "FP32", "shape": [4], "data": [1] * 4}])
    with pytest.raises(BadRequest, match="'data' is not a list of FP32 values"):
        to_arrays(model, [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": ["a"]}])
    two = Doubler()
    two.inputs = [*Doubler.inputs, {"name": "mask", "datatype": "BOOL", "shape": [-1]}]
    with pytest.raises(BadRequest, match="the request lacks input 'mask'"):
        to_arrays(two, [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1]}])
    with pytest.raises(BadRequest, match="the request needs 'inputs'"):
        to_arrays(model, None)


def test_outputs_go_back_as_json_numbers_or_raw_bytes():
    model = Doubler()
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensors, blob = to_outputs(model, {"y": y})
    assert tensors == [{"name": "y", "shape": [2, 3], "datatype": "FP32",
                        "data": [0, 1, 2, 3, 4, 5]}] and blob == b""
    tensors, blob = to_outputs(model, {"y": y}, binary=True)
    assert tensors[0]["parameters"] == {"binary_data_size": 24} and "data" not in tensors[0]
    assert np.frombuffer(blob, "<f4").tolist() == [0, 1, 2, 3, 4, 5]


def test_requests_that_queue_while_the_model_runs_are_its_next_batches_up_to_the_limit():
    model = Gated()
    batcher = Batcher(model, max_batch_size=8, max_latency_ms=0)   # no waiting at all
    feeds = [{"x": np.full((1, 2), i, np.float32)} for i in range(16)]
    results = [None] * 16

    def client(i):
        batcher.arrive()
        try:
            results[i] = batcher.run(feeds[i])
        finally:
            batcher.leave()

    first = threading.Thread(target=client, args=(0,))
    first.start()
    assert model.entered.wait(60)            # the model runs the first request alone ...
    rest = [threading.Thread(target=client, args=(i,)) for i in range(1, 16)]
    for t in rest:
        t.start()
    until(lambda: batcher.queue.qsize() == 15, "15 requests queued behind the running batch")
    model.release.set()                      # ... and the 15 that queued meanwhile run next
    for t in [first, *rest]:
        t.join()
    assert model.batches == [1, 8, 7]        # as many as were waiting, none over the limit
    for feed, result in zip(feeds, results):
        np.testing.assert_array_equal(result["y"], feed["x"] * 2)
    assert (batcher.counts.runs, batcher.counts.rows) == (3, 16) and batcher.inflight == 0
    assert batcher.counts.run_ns > 0


def infer_request(x, port):
    head = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    body = head + x.tobytes()
    return (f"POST /v2/models/dbl/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Length: {len(body)}\r\nInference-Header-Content-Length: {len(head)}"
            "\r\n\r\n").encode() + body


def test_a_request_whose_body_is_still_arriving_is_waited_for_and_joins_the_batch():
    """The server counts a request in flight from its headers: a large body still on its way
    (a 224x224 image is 600 KB) is not left out of the batch that forms meanwhile."""
    model = Doubler()
    service = Service({"name": "dbl", "version": 1}, None)
    service.model, service.ready = model, True
    service.batcher = Batcher(model, max_batch_size=8, max_latency_ms=30_000,
                              counts=service.counts)

    class Serving(Handler):
        pass
    Serving.service = service
    server = Server(("127.0.0.1", 0), Serving)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    xa, xb = np.full((1, 4), 1, np.float32), np.full((1, 4), 2, np.float32)
    try:
        slow = socket.create_connection(("127.0.0.1", port), timeout=60)
        request_a = infer_request(xa, port)
        slow.sendall(request_a[:-8])         # headers and all but the last 8 bytes of A's body
        until(lambda: service.batcher.inflight == 1, "request A counted in flight")
        answers = {}

        def client_b():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            body = infer_request(xb, port).split(b"\r\n\r\n", 1)[1]
            head_len = len(body) - xb.nbytes
            conn.request("POST", "/v2/models/dbl/infer", body,
                         {"Inference-Header-Content-Length": str(head_len)})
            answers["b"] = json.loads(conn.getresponse().read())
        b = threading.Thread(target=client_b)
        b.start()
        # B is queued and taken by the batcher, which now waits for A rather than run B alone
        until(lambda: service.batcher.queue.unfinished_tasks == 1
              and service.batcher.queue.qsize() == 0, "request B taken by the batcher")
        slow.sendall(request_a[-8:])
        resp = http.client.HTTPResponse(slow)
        resp.begin()
        answers["a"] = json.loads(resp.read())
        b.join()
        assert model.batches == [2]
        assert answers["a"]["outputs"][0]["data"] == [2.0] * 4
        assert answers["b"]["outputs"][0]["data"] == [4.0] * 4
        stats = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        stats.request("GET", "/v2/models/dbl/stats")
        counts = json.loads(stats.getresponse().read())["model_stats"][0]
        assert (counts["inference_count"], counts["execution_count"]) == (2, 1)
        done = counts["inference_stats"]
        assert done["success"]["count"] == 2 and done["compute_infer"]["count"] == 1
        assert done["success"]["ns"] > done["compute_infer"]["ns"] > 0
    finally:
        server.shutdown()
        server.server_close()
