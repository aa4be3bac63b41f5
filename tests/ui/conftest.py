"""Browser tests: a real JupyterLab server (started here, localhost, free port, token) and a real
Chromium driven by Playwright.  Screenshots go to the git-ignored ``screenshots/`` folder.

Chromium is Debian's (``apt-get install -y chromium``); under CI a missing one fails the test.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from missing import unavailable

CHROMIUM = os.environ.get("CELLTRAIN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tmp_path, module: str, extra_args=()):
    """Run ``python -m module`` (jupyterlab, notebook) on a free localhost port with a token."""
    root = tmp_path / "lab"
    root.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"))
    # The front end this checkout built, not whichever one the environment links to.
    built = Path(__file__).resolve().parents[2] / "magics" / "celltrain" / "labextension"
    if (built / "package.json").is_file():
        (tmp_path / "jupyter-data" / "labextensions").mkdir(parents=True)
        (tmp_path / "jupyter-data" / "labextensions" / "celltrain").symlink_to(built)
        env["JUPYTER_PATH"] = os.pathsep.join(
            p for p in (str(tmp_path / "jupyter-data"), os.environ.get("JUPYTER_PATH")) if p)
    log = open(tmp_path / f"{module}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", *extra_args,
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{module} did not start:\n"
                            + (tmp_path / f"{module}.log").read_text()[-3000:])
            time.sleep(0.3)
    try:
        yield base, token, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def lab_server(tmp_path):
    """A JupyterLab server on a free localhost port: yields (base_url, token, root_dir)."""
    yield from _serve(tmp_path, "jupyterlab", (
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=None"))


@pytest.fixture
def notebook_server(tmp_path):
    """A Notebook 7 server, like ``lab_server`` (needs the ``notebook`` package)."""
    try:
        import notebook  # noqa: F401
    except ImportError:
        message = "Notebook 7 is not installed: pip install 'notebook>=7'"
        unavailable(message)
    yield from _serve(tmp_path, "notebook")


@pytest.fixture
def page():
    """A Chromium page (Playwright, Debian's chromium)."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        message = f"no Chromium at {CHROMIUM}: apt-get install -y chromium"
        unavailable(message)
    from playwright.sync_api import sync_playwright
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        try:
            yield page
        finally:
            context.close()
            browser.close()


@pytest.fixture
def screenshots() -> Path:
    """The git-ignored folder for screenshots (``screenshots/`` at the repo root)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS
