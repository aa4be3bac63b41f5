"""The Jupyter Server extension: a REST API over the workspace store for the JupyterLab sidebar.

Enabled by ``jupyter-config/jupyter_server_config.d/celltrain.json`` (installed with the
package); ``jupyter server extension list`` shows it.  Which workspace it shows:

    c.CelltrainConfig.workspace = "/path/to/.celltrain"   # 1. configuration
    CELLTRAIN_WORKSPACE=/path/to/.celltrain               # 2. environment
    <server root_dir>/.celltrain                          # 3. what a notebook there opens
"""
from __future__ import annotations

from traitlets import Bool, Unicode
from traitlets.config import Configurable

from .manager import CelltrainManager, find_workspace
from .routes import setup_route_handlers


class CelltrainConfig(Configurable):
    """Settings of the celltrain server extension (``c.CelltrainConfig.*``)."""

    workspace = Unicode("", config=True,
                        help="Workspace folder the sidebar shows (default: $CELLTRAIN_WORKSPACE, "
                             "else .celltrain in the server's root folder)")
    reconcile = Bool(True, config=True,
                     help="Adopt runs whose supervisor died when the server opens the workspace, "
                          "so they finish even when no kernel has it open")


def _load_jupyter_server_extension(server_app) -> None:
    config = CelltrainConfig(parent=server_app)
    path, source = find_workspace(config.workspace or None, server_app.root_dir)
    manager = CelltrainManager(path, source=source, reconcile=config.reconcile)
    setup_route_handlers(server_app.web_app, manager)
    server_app.log.info(f"celltrain: showing workspace {path} ({source})")


__all__ = ["CelltrainConfig", "CelltrainManager", "_load_jupyter_server_extension"]
