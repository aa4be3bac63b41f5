"""Loading a version's weights with torch (a part of ``ModelVersion``)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from .names import FILES, TORCH_SUFFIXES, ModelLoadError, ModelNotFound


class TorchLoading:
    """``ModelVersion.load`` and ``module``: the registered weights into a model."""

    def _weights_file(self, file: str | None) -> Path:
        path = self.path
        if path.is_file():
            return path
        candidates = [f for f in self.files() if f.endswith(TORCH_SUFFIXES)]
        if file is not None:
            chosen = self.folder / FILES / file
            if not chosen.is_file():
                raise ModelNotFound(f"{self.name}:{self.version} has no file {file!r}; its "
                                    f"files: {', '.join(self.files())}")
            return chosen
        if len(candidates) != 1:
            raise ModelLoadError(f"{self.name}:{self.version} is a folder with "
                                 f"{len(candidates)} weight files "
                                 f"({', '.join(candidates) or 'none'}): pass file=")
        return self.folder / FILES / candidates[0]

    def load(self, model=None, weights_only: bool = True, map_location: Any = "cpu",
             file: str | None = None):
        """Load the registered weights.

        With ``model`` (an ``nn.Module``), the state dict is loaded into it and the module
        returned in eval mode; without, the loaded object itself (a state dict, usually).
        A file holding a whole pickled module loads only with ``weights_only=False``:
        unpickling can run any code, so it is an explicit choice (torch >= 2.6 agrees).
        ``file`` picks the file when a folder was registered.
        """
        import pickle

        import torch
        path = self._weights_file(file)
        try:
            obj = torch.load(path, map_location=map_location, weights_only=weights_only)
        except (AttributeError, ModuleNotFoundError) as e:
            if weights_only:
                raise
            raise ModelLoadError(
                f"{self.name}:{self.version} ({path.name}) is a pickled object whose class "
                f"cannot be found here ({e}): a pickle stores the class's module and name, not "
                "its code. Import or define that class (a class from the training script "
                "lives in '__main__') before load(), or register a state dict instead") from e
        except pickle.UnpicklingError as e:
            if not weights_only:
                raise
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            what = f" (it references {found.group(1)})" if found else ""
            raise ModelLoadError(
                f"{self.name}:{self.version} ({path.name}) is not a plain state dict but a "
                f"pickled object{what}, and loading pickles can run any code, so it needs "
                "your explicit consent: load(weights_only=False) if you trust the run "
                f"{self.run_id} that saved it. Saving model.state_dict() avoids this.") from e
        if model is None:
            return obj
        state = obj.state_dict() if isinstance(obj, torch.nn.Module) else obj
        if not isinstance(state, Mapping):
            raise ModelLoadError(f"{self.name}:{self.version} holds a {type(obj).__name__}, "
                                 "not a state dict to load into the model: call load() "
                                 "without model=")
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            keys = ", ".join(list(state)[:8])
            raise ModelLoadError(
                f"the weights of {self.name}:{self.version} do not fit "
                f"{type(model).__name__}: {str(e).splitlines()[0]} {_first_mismatch(e)} "
                f"(the file's first keys: {keys})") from e
        return model.eval()

    def module(self, model=None, weights_only: bool = True):
        """An ``nn.Module`` to run: ``model`` with these weights, or the pickled module."""
        import torch
        obj = self.load(model=model, weights_only=weights_only)
        if not isinstance(obj, torch.nn.Module):
            raise ModelLoadError(
                f"{self.name}:{self.version} holds a {type(obj).__name__} (a state dict), "
                "not a module: pass model=YourNet() so the weights have somewhere to go")
        return obj


def _first_mismatch(error: BaseException) -> str:
    lines = [ln.strip() for ln in str(error).splitlines()[1:] if ln.strip()]
    return lines[0] if lines else ""
