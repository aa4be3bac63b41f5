"""The deployment server's batcher and request checks, in this process: a real numpy model
(a matrix product that records the batches it is given), real threads; no HTTP here (the
container tests in test_serving.py cover that)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

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
