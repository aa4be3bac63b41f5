"""Finding versions: by name, version number or alias, and the list of models."""
from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from .names import LATEST, ModelNotFound, latest_version
from .version import ModelVersion

if TYPE_CHECKING:
    from ..workspace import Workspace


def model_names(ws: "Workspace") -> list[str]:
    return ws.store.model_names()


def get_model(ws: "Workspace", name: str, version: int | str | None = None,
              alias: str | None = None) -> "ModelVersion":
    """Version ``version``, or the one ``alias`` points at, or the latest (not archived)."""
    if version is not None and alias is not None:
        raise ValueError(f"pass version= or alias=, not both (got version={version!r}, "
                         f"alias={alias!r})")
    if not isinstance(name, str) or not name:
        raise ValueError(f"a model name is a non-empty string, not {name!r}")
    store = ws.store
    versions = store.model_versions(name)
    if not versions:
        names = model_names(ws)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ModelNotFound(f"no model named {name!r} in workspace {ws.path}.{hint} "
                            f"Registered: {', '.join(names) or 'none yet'} "
                            "(run.register_model(name, path) registers one)")
    if isinstance(version, str) and version.isdigit():
        version = int(version)
    if alias == LATEST or version == LATEST:
        alias = version = None
    if alias is not None:
        aliases = store.model_aliases(name)
        if alias not in aliases:
            known = ", ".join(f"{a} -> v{v}" for a, v in aliases.items()) or "none set"
            raise ModelNotFound(f"model {name!r} has no alias {alias!r} (its aliases: {known}; "
                                f"'latest' is v{latest_version(versions)}). Set one with "
                                f"ws.model({name!r}, version=N).set_alias({alias!r})")
        return ModelVersion(ws, name, aliases[alias])
    if version is None:
        latest = latest_version(versions)
        if latest is None:
            raise ModelNotFound(f"every version of model {name!r} is archived "
                                f"({', '.join(str(v) for v, _ in versions)}): ask for one "
                                "with version=N")
        return ModelVersion(ws, name, latest)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"version takes a number (1, 2, ...), not {version!r}; "
                         "for a name like 'production' use alias=")
    if version not in [v for v, _ in versions]:
        raise ModelNotFound(f"model {name!r} has no version {version}; its versions: "
                            f"{', '.join(str(v) for v, _ in versions)}")
    return ModelVersion(ws, name, version)


def list_models(ws: "Workspace") -> "ModelList":
    """One entry per model name: its versions, the latest, its aliases, archived versions."""
    out = ModelList()
    for name in model_names(ws):
        versions = ws.store.model_versions(name)
        out.append({"name": name, "latest": latest_version(versions),
                    "versions": [v for v, a in versions if not a],
                    "archived": [v for v, a in versions if a],
                    "aliases": ws.store.model_aliases(name)})
    return out


def models_of_run(ws: "Workspace", run_id: str) -> list["ModelVersion"]:
    """The versions registered from one run, oldest first (for the run widget's summary)."""
    return [ModelVersion(ws, name, version)
            for name, version in ws.store.model_versions_of_run(run_id)]


class ModelList(list):
    """``ws.models()``: a list of dicts that shows itself as a table in a notebook."""

    def __repr__(self) -> str:
        from ..views.model_cards import models_text
        return models_text(self)

    def _repr_html_(self) -> str:
        from ..views.model_cards import models_html
        return models_html(self)
