"""The offline base image: Debian from its packages plus torch from the host's pip sources.

For machines without a registry (CI, air-gapped users).  Two stages, each cached by tag:
``celltrain/debian:<suite>`` is a debootstrap root imported into Docker; ``celltrain/base:<hash>``
adds a venv with the kernel's torch (and torchvision) installed through the host's pip settings.
``celltrain/base:offline`` points at the newest one and is what submissions fall back to.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from .images import OFFLINE_BASE, build_in_container, image_present

DEBIAN_PACKAGES = ["python3", "python3-venv", "ca-certificates", "procps"]
BASE_FORMAT = 2


def host_apt_mirror() -> str:
    """The Debian mirror the host's apt uses, so debootstrap goes where apt already goes."""
    for path in ["/etc/apt/sources.list", *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        m = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or \
            re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s", text, re.M)
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def torch_requirements() -> list[str]:
    """Pins that match this kernel: torch, plus torchvision when it is installed."""
    pins = []
    for name in ("torch", "torchvision"):
        try:
            pins.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pass
    return pins or ["torch"]


def base_tag(suite: str, pip: list[str]) -> str:
    spec = {"suite": suite, "apt": DEBIAN_PACKAGES, "pip": pip, "format": BASE_FORMAT}
    return "celltrain/base:" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()
                                              ).hexdigest()[:16]


def debian_image(client, suite: str, log) -> str:
    tag = f"celltrain/debian:{suite}"
    if image_present(client, tag):
        log(f"{tag} is present")
        return tag
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing: apt-get install debootstrap")
    with tempfile.TemporaryDirectory(prefix="celltrain-debootstrap-") as tmp:
        root = Path(tmp) / "root"
        mirror = host_apt_mirror()
        log(f"debootstrap {suite} from {mirror} (a minute or two)")
        subprocess.run(["debootstrap", "--variant=minbase",
                        "--include=" + ",".join(DEBIAN_PACKAGES), suite, str(root), mirror],
                       check=True, stdout=sys.stderr if os.environ.get("CELLTRAIN_VERBOSE")
                       else subprocess.DEVNULL)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / junk, ignore_errors=True)
        log(f"importing {tag}")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "--change", "ENV LANG=C.UTF-8", "-", tag],
                       stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrap root failed")
    return tag


def build_offline_base(client, suite: str = "bookworm", pip: list[str] | None = None,
                       log=print, log_dir: Path | None = None) -> str:
    """Build (or reuse) the offline base image and point celltrain/base:offline at it."""
    pip = list(pip) if pip is not None else torch_requirements() + ["numpy", "pillow"]
    tag = base_tag(suite, pip)
    if image_present(client, tag):
        log(f"{tag} is present (cached by content hash)")
    else:
        debian = debian_image(client, suite, log)
        log(f"installing {' '.join(pip)} into {tag} (from the host's pip sources)")
        script = ("set -eux\npython3 -m venv /opt/venv\n"
                  "/opt/venv/bin/python -m pip install --no-cache-dir "
                  + " ".join(pip))
        log_dir = log_dir or Path(tempfile.gettempdir())
        build_in_container(client, debian, script, tag, log_dir / "celltrain-base-build.log",
                           labels={"celltrain.base": tag},
                           changes=["ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:"
                                    "/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8"])
    client.images.get(tag).tag(*OFFLINE_BASE.split(":"))
    log(f"{OFFLINE_BASE} -> {tag}")
    return tag
