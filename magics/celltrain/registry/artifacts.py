"""A version's ONNX artifact: export into the version's folder (a part of ``ModelVersion``)
and ``OnnxArtifact``, the stored export."""
from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .hashing import content_hash
from .leftovers import hold_work_lock
from .names import ARTIFACTS, TMP_PREFIX, ModelNotFound

if TYPE_CHECKING:
    from .version import ModelVersion


class OnnxExporting:
    """``ModelVersion.export_onnx`` and ``onnx``."""

    def export_onnx(self, example_input, opset: int | None = None, model=None,
                    tolerance: float | None = None, weights_only: bool = True,
                    exporter: str = "auto") -> "OnnxArtifact":
        """Export to ONNX with a dynamic batch axis, check it with ONNX Runtime against
        PyTorch on ``example_input``, and store it with this version (format ``onnx``).

        ``model``: the module to load the registered state dict into (not needed when a whole
        module was registered and ``weights_only=False``).  A failed export or parity check
        raises and leaves the version as it was.

        In [1]: onnx_model = m.export_onnx(torch.randn(1, 3, 224, 224), model=resnet18())
        In [2]: onnx_model.max_abs_diff, onnx_model.run(x)
        """
        from . import onnx_export
        opset = onnx_export.DEFAULT_OPSET if opset is None else opset
        tolerance = onnx_export.DEFAULT_TOLERANCE if tolerance is None else tolerance
        module = self.module(model=model, weights_only=weights_only)
        self._record()
        store = self.workspace.store
        final = self.folder / ARTIFACTS / "onnx"
        tmp = self.folder / ARTIFACTS / f"{TMP_PREFIX}onnx-{secrets.token_hex(4)}"
        old = self.folder / ARTIFACTS / f"{TMP_PREFIX}old-onnx-{secrets.token_hex(4)}"
        work = hold_work_lock(store)
        try:
            info = onnx_export.export_module(module, example_input, tmp, opset=opset,
                                             tolerance=tolerance, exporter=exporter)
            info["path"] = f"{ARTIFACTS}/onnx/{info.pop('file')}"
            info["sha256"] = content_hash(tmp)  # model.onnx and its external data
            info["created"] = time.time()
            with store.write() as conn:
                if not store.add_model_artifact(self.name, self.version, "onnx", info, conn):
                    raise ModelNotFound(f"model {self.name!r} version {self.version} was "
                                        "deleted during the export")
                if final.exists():
                    os.rename(final, old)
                os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if old.exists():  # put the previous export back
                shutil.rmtree(final, ignore_errors=True)
                os.rename(old, final)
            raise
        else:
            shutil.rmtree(old, ignore_errors=True)
        finally:
            work.close()
        return OnnxArtifact(self, info)

    @property
    def onnx(self) -> "OnnxArtifact | None":
        """The stored ONNX export of this version, if one was made."""
        info = self.artifacts.get("onnx")
        return OnnxArtifact(self, info) if info else None


class OnnxArtifact:
    """A version's stored ONNX export: its file, how it was made, and a way to run it."""

    def __init__(self, version: "ModelVersion", info: dict):
        self.version, self.info = version, info

    def __repr__(self) -> str:
        return (f"<OnnxArtifact {self.version.name}:{self.version.version} opset "
                f"{self.opset} max_abs_diff={self.max_abs_diff:.3g} {self.path}>")

    @property
    def path(self) -> Path:
        return self.version.folder / self.info["path"]

    @property
    def opset(self) -> int:
        return self.info["opset"]

    @property
    def max_abs_diff(self) -> float:
        return self.info["max_abs_diff"]

    def load(self):
        """The ONNX model as an ``onnx.ModelProto``."""
        import onnx
        return onnx.load(str(self.path))

    def session(self):
        """An ONNX Runtime inference session on the CPU."""
        from .onnx_export import open_session
        return open_session(self.path)

    def run(self, *inputs):
        """Run the exported model on tensors or arrays; returns a list of numpy arrays."""
        import numpy as np
        session = self.session()
        names = [i.name for i in session.get_inputs()]
        feed = {n: (x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x))
                for n, x in zip(names, inputs)}
        return session.run(None, feed)
