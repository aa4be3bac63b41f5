"""Export a PyTorch module to ONNX and prove the export computes what the module computes.

An ONNX file that loads is not an ONNX file that is right: an exporter can bake in the example's
batch size, drop a branch or translate an operator differently.  So every export here is run
with ONNX Runtime on the example input, and on a batch one larger (to prove the batch axis is
dynamic), and compared with eager PyTorch; the largest absolute difference is reported and a
tolerance enforced.  The file is written into a temporary folder that the caller renames into
place only once the check passed, so a failed export leaves nothing behind.

Exporters: torch's own default (``dynamo=True``, torch.export based) for opset 18 and later; the
older TorchScript exporter (``dynamo=False``) for opsets below 18, which the new exporter cannot
produce.
"""
from __future__ import annotations

import contextlib
import io
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Sequence

from ..errors import CelltrainError

DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4
ONNX_FILE = "model.onnx"
EXPORTERS = ("auto", "dynamo", "torchscript")


class OnnxExportError(CelltrainError):
    """The module could not be exported (an unsupported operator, say)."""


class OnnxParityError(OnnxExportError):
    """The exported model runs but does not compute what the PyTorch module computes."""

    def __init__(self, message: str, max_abs_diff: float):
        super().__init__(message)
        self.max_abs_diff = max_abs_diff


def _as_inputs(example_input: Any) -> tuple:
    import torch
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        kinds = ", ".join(type(x).__name__ for x in inputs) or "nothing"
        raise TypeError(f"example_input takes a tensor or a tuple of tensors, not {kinds}: "
                        "e.g. example_input=torch.randn(1, 3, 224, 224)")
    for x in inputs:
        if x.dim() == 0:
            raise ValueError("example_input needs a batch axis (dimension 0); got a scalar tensor")
    return tuple(x.detach().cpu() for x in inputs)


def _flatten(output: Any) -> list:
    import torch
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _flatten(item)]
    raise OnnxExportError(f"the module returns a {type(output).__name__}; ONNX export here "
                          "takes modules that return a tensor or a tuple/list of tensors")


def _opset_of(path: Path) -> int:
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _summary(error: BaseException) -> str:
    """The lines of an exporter's error that name the problem, without its long advice."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    useful = [ln for ln in lines if any(k in ln for k in (
        "No ONNX function found", "Unsupported", "unsupported", "not supported",
        "unrecognized namespace", "Error:", "error:"))]
    picked = (useful or lines or [type(error).__name__])[:3]
    picked = [re.sub(r"<class '[\w.]+'>: ", "", ln)[:400] for ln in picked]
    return " | ".join(picked).rstrip(".")


def export_module(module, example_input: Any, folder: str | Path, *,
                  opset: int = DEFAULT_OPSET, tolerance: float = DEFAULT_TOLERANCE,
                  exporter: str = "auto") -> dict:
    """Export ``module`` into ``folder/model.onnx`` (plus external data, if torch writes any)
    with a dynamic batch axis, then check it with ONNX Runtime.  Returns what was measured.

    Raises OnnxExportError when torch cannot export the module, OnnxParityError when the
    exported model's outputs differ from the module's by more than ``tolerance``.
    """
    import torch
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"ONNX export needs a torch.nn.Module, not {type(module).__name__}")
    if not isinstance(opset, int) or not 7 <= opset <= 23:
        raise ValueError(f"opset takes an ONNX opset version between 7 and 23, not {opset!r}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter takes one of {', '.join(EXPORTERS)}, not {exporter!r}")
    if exporter == "auto":
        exporter = "dynamo" if opset >= 18 else "torchscript"
    if exporter == "dynamo" and opset < 18:
        raise ValueError(f"the dynamo exporter writes opset 18 or later, not {opset}: "
                         "pass exporter='torchscript' (or 'auto') for older opsets")
    inputs = _as_inputs(example_input)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ONNX_FILE

    module = module.cpu().eval()
    with torch.no_grad():
        expected = [t.detach().cpu().numpy() for t in _flatten(module(*inputs))]
    input_names = [f"input_{i}" if len(inputs) > 1 else "input" for i in range(len(inputs))]
    output_names = [f"output_{i}" if len(expected) > 1 else "output"
                    for i in range(len(expected))]
    kwargs: dict[str, Any] = dict(input_names=input_names, output_names=output_names,
                                  opset_version=opset, verbose=False,
                                  dynamo=exporter == "dynamo")
    if exporter == "dynamo":
        batch = torch.export.Dim("batch")
        kwargs["dynamic_shapes"] = tuple({0: batch} for _ in inputs)
    else:
        kwargs["dynamic_axes"] = {n: {0: "batch"} for n in input_names + output_names}
    # The exporters print progress and, on failure, whole graphs; the error says what matters.
    chatter = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), \
                contextlib.redirect_stderr(chatter):
            warnings.simplefilter("ignore")
            with torch.no_grad():
                torch.onnx.export(module, inputs, str(path), **kwargs)
    except Exception as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise OnnxExportError(
            f"torch could not export {type(module).__name__} to ONNX opset {opset} "
            f"({exporter} exporter): {_summary(e)}. An operator without an ONNX translation "
            "needs a replacement in the model or a custom translation "
            "(torch.onnx.export(custom_translation_table=...))") from e
    try:
        written = _opset_of(path)
        if written != opset:
            raise OnnxExportError(f"asked for ONNX opset {opset} but the {exporter} exporter "
                                  f"wrote opset {written}: choose opset={written}")
        max_diff = check_parity(path, inputs, expected, tolerance)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    import onnxruntime
    return {"file": ONNX_FILE, "opset": opset, "exporter": exporter,
            "max_abs_diff": max_diff, "tolerance": tolerance,
            "example_shapes": [list(x.shape) for x in inputs],
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def open_session(path: Path, threads: int = 0):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: warnings go to stderr otherwise
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's default (all cores)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_parity(path: str | Path, inputs: Sequence, expected: Sequence,
                 tolerance: float = DEFAULT_TOLERANCE) -> float:
    """Run the ONNX file on ``inputs`` and on a batch one larger; return the max |difference|.

    ``expected`` are the module's outputs for ``inputs`` (numpy arrays).  The larger batch
    repeats the first example, so its expected outputs are known without the module.
    """
    import numpy as np
    session = open_session(Path(path))
    names = [i.name for i in session.get_inputs()]
    feed = {n: x.numpy() for n, x in zip(names, inputs)}
    got = session.run(None, feed)
    max_diff = _compare(got, expected, "the example input")
    bigger = {n: np.concatenate([a, a[:1]]) for n, a in feed.items()}
    try:
        got_big = session.run(None, bigger)
    except Exception as e:
        raise OnnxExportError(
            f"the exported model runs on the example's batch size but not on batch size "
            f"{len(next(iter(bigger.values())))}: its batch axis is not dynamic ({_summary(e)}). "
            "A reshape that names the batch size (x.view(1, -1)) is the usual cause: "
            "use x.flatten(1) or x.view(x.size(0), -1)") from e
    expected_big = [np.concatenate([e, e[:1]]) for e in expected]
    max_diff = _worst(max_diff, _compare(got_big, expected_big, "a larger batch"))
    if not max_diff <= tolerance:  # also catches NaN
        raise OnnxParityError(
            f"the exported ONNX model does not match the PyTorch model: max absolute "
            f"difference {max_diff:.3g} on the example input is over the tolerance "
            f"{tolerance:g}. The export is wrong (a branch taken differently while exporting, "
            "an operator translated differently) or the model is numerically sensitive: pass "
            "a larger tolerance= only if the difference is expected", max_diff)
    return float(max_diff)


def _compare(got: Sequence, expected: Sequence, what: str) -> float:
    import numpy as np
    if len(got) != len(expected):
        raise OnnxParityError(f"the exported model gives {len(got)} outputs on {what}, the "
                              f"PyTorch model {len(expected)}", float("inf"))
    worst = 0.0
    for i, (g, e) in enumerate(zip(got, expected)):
        g, e = np.asarray(g), np.asarray(e)
        if g.shape != e.shape:
            raise OnnxParityError(f"output {i} of the exported model has shape {list(g.shape)} "
                                  f"on {what}; the PyTorch model's has {list(e.shape)}",
                                  float("inf"))
        if g.size:
            diff = np.abs(g.astype(np.float64) - e.astype(np.float64))
            worst = _worst(worst, float(diff.max()))  # max() is NaN if any element is
    return worst


def _worst(a: float, b: float) -> float:
    """The larger difference, where NaN (a broken output) beats every number."""
    return a if a != a else b if b != b else max(a, b)
