"""ONNX export of registered versions: dynamic batch axis, chosen opset, onnxruntime parity.

The versions come from a real local run that saved a small CNN.  The broken exports are real
too: a model that computes something else while being exported, an operator ONNX has no
translation for, a reshape that bakes in the batch size.
"""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from celltrain import Workspace
from celltrain.registry.onnx_export import OnnxExportError, OnnxParityError
from celltrain.registry import ModelLoadError

TINYNET = """
import torch

class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3)))
"""

TRAIN = """
import os, torch
from onnx_tinynet import TinyNet
torch.manual_seed(0)
net = TinyNet()
os.makedirs("outputs", exist_ok=True)
torch.save(net.state_dict(), "outputs/model.pt")
torch.save(net, "outputs/full.pt")
"""

EXAMPLE = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    src = root / "src"
    src.mkdir()
    (src / "onnx_tinynet.py").write_text(TINYNET)
    (src / "train.py").write_text(textwrap.dedent(TRAIN))
    ws = Workspace(root / "ws")
    run = ws.experiment("onnx").submit("train.py", src, target="local")
    assert run.wait(timeout=120) == "Completed", run.logs()
    sys.path.insert(0, str(src))
    yield ws, run
    sys.path.remove(str(src))


def net_class():
    from onnx_tinynet import TinyNet
    return TinyNet


def test_export_checks_parity_and_is_stored_with_the_version(trained):
    ws, run = trained
    m = run.register_model("onnx-good", "outputs/model.pt")
    art = m.export_onnx(example_input=EXAMPLE, model=net_class()())
    assert art.path.is_file() and art.path.is_relative_to(m.folder)
    assert art.opset == 18 and 0 <= art.max_abs_diff <= 1e-4
    stored = ws.model("onnx-good").artifacts["onnx"]
    assert stored["path"] == "artifacts/onnx/model.onnx" and stored["opset"] == 18
    assert stored["max_abs_diff"] == art.max_abs_diff and stored["tolerance"] == 1e-4
    assert ws.model("onnx-good").onnx.path == art.path

    proto = art.load()
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    session = art.session()
    assert isinstance(session.get_inputs()[0].shape[0], str)  # the batch axis is dynamic
    batch = torch.randn(5, 3, 32, 32)
    expected = m.load(model=net_class()())(batch).detach().numpy()
    np.testing.assert_allclose(art.run(batch)[0], expected, atol=1e-4)
    assert "onnx" in m._repr_html_()


def test_chosen_opset_and_a_full_pickled_model(trained):
    ws, run = trained
    m = run.register_model("onnx-full", "outputs/full.pt")
    with pytest.raises(ModelLoadError, match="weights_only=False"):
        m.export_onnx(EXAMPLE)
    art = m.export_onnx(EXAMPLE, opset=17, weights_only=False)
    assert art.opset == 17 and art.info["exporter"] == "torchscript"
    assert [o.version for o in art.load().opset_import if o.domain in ("", "ai.onnx")] == [17]
    with pytest.raises(ValueError, match="dynamo exporter writes opset 18 or later, not 16"):
        m.export_onnx(EXAMPLE, opset=16, exporter="dynamo", weights_only=False)


def test_a_state_dict_needs_a_module_and_inputs_must_be_tensors(trained):
    ws, run = trained
    m = run.register_model("onnx-args", "outputs/model.pt")
    with pytest.raises(ModelLoadError, match="pass model=YourNet()"):
        m.export_onnx(EXAMPLE)
    with pytest.raises(TypeError, match="example_input takes a tensor"):
        m.export_onnx([[1.0, 2.0]], model=net_class()())
    assert m.artifacts == {}


def test_parity_check_catches_a_broken_export(trained):
    """A model that computes something else while it is being exported (a real way exports go
    wrong: code paths that differ under export) fails the check; the version keeps no file."""
    ws, run = trained

    class Sneaky(net_class()):
        def forward(self, x):
            out = super().forward(x)
            return out + 0.5 if torch.onnx.is_in_onnx_export() else out

    m = run.register_model("onnx-broken", "outputs/model.pt")
    with pytest.raises(OnnxParityError, match=r"max absolute difference 0\.5 .* tolerance "
                                              r"0\.0001") as info:
        m.export_onnx(EXAMPLE, model=Sneaky())
    assert info.value.max_abs_diff == pytest.approx(0.5, abs=1e-5)
    assert ws.model("onnx-broken").artifacts == {}
    assert not (m.folder / "artifacts").exists() or not any((m.folder / "artifacts").iterdir())
    # a loose enough tolerance accepts it, and says how far off it is
    art = m.export_onnx(EXAMPLE, model=Sneaky(), tolerance=1.0)
    assert art.max_abs_diff == pytest.approx(0.5, abs=1e-5)


def test_unsupported_operator_is_a_clear_error_and_keeps_the_previous_export(trained):
    ws, run = trained

    @torch.library.custom_op("celltrain_test::mystery", mutates_args=())
    def mystery(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @mystery.register_fake
    def _(x):
        return torch.empty_like(x)

    class Mysterious(net_class()):
        def forward(self, x):
            return mystery(super().forward(x))

    m = run.register_model("onnx-unsupported", "outputs/model.pt")
    good = m.export_onnx(EXAMPLE, model=net_class()())
    before = (good.path.read_bytes(), m.artifacts)
    with pytest.raises(OnnxExportError, match=r"could not export Mysterious to ONNX opset 18.*"
                                              r"celltrain_test.mystery"):
        m.export_onnx(EXAMPLE, model=Mysterious())
    assert (good.path.read_bytes(), m.artifacts) == before
    assert sorted(p.name for p in (m.folder / "artifacts").iterdir()) == ["onnx"]


def test_a_batch_size_baked_into_the_graph_is_caught(trained):
    ws, run = trained

    class FixedBatch(net_class()):
        def forward(self, x):
            x = torch.relu(self.bn(self.conv(x))).mean((2, 3))
            return self.fc(x.reshape(1, -1))  # names the batch size

    m = run.register_model("onnx-fixed-batch", "outputs/model.pt")
    with pytest.raises(OnnxExportError, match="batch axis is not dynamic"):
        m.export_onnx(EXAMPLE, model=FixedBatch(), opset=17)
    assert m.artifacts == {}
