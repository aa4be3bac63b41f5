"""The host's pip settings and CA bundle, made available to an image build without baking them in.

Corporate users sit behind intercepting proxies and private indexes: pip inside a build container
needs the same index URLs, constraints and certificate as pip on the host.  We read the merged
settings with ``pip config list`` (files and PIP_* variables alike), write them to a pip.conf in a
temporary folder, and bind-mount that folder, the CA bundle and every local path the settings name
(find-links folders, file:// indexes, constraint files) read-only into the build container.
Nothing of it lands in an image layer.
"""
from __future__ import annotations

import configparser
import os
import shutil
import ssl
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

MOUNT_DIR = "/celltrain-host"
CA_IN_CONTAINER = f"{MOUNT_DIR}/ca-certificates.crt"
CONF_IN_CONTAINER = f"{MOUNT_DIR}/pip.conf"
PATH_KEYS = {"cert", "client-cert", "constraint", "requirement", "find-links",
             "index-url", "extra-index-url"}
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


@dataclass
class HostPip:
    settings: dict[str, dict[str, str]] = field(default_factory=dict)
    ca_bundle: str | None = None

    @classmethod
    def read(cls, python: str = sys.executable) -> "HostPip":
        try:
            out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True,
                                 text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        return cls(settings=parse_config_list(out), ca_bundle=find_ca_bundle())

    def local_paths(self) -> list[str]:
        """Host folders and files the settings point at, to be mounted at the same place."""
        paths = []
        for section in self.settings.values():
            for key, value in section.items():
                if key not in PATH_KEYS:
                    continue
                for item in value.split():
                    path = item[len("file://"):] if item.startswith("file://") else item
                    path = path.rstrip("/")
                    if path.endswith("/simple"):
                        # a local index links its files relative to its root: mount the root
                        path = path[:-len("/simple")]
                    if path.startswith("/") and os.path.exists(path):
                        paths.append(path)
        return sorted(set(paths))

    def write_conf(self, folder: Path) -> Path:
        """pip.conf for the container; the certificate points at the mounted CA bundle."""
        conf = configparser.ConfigParser(interpolation=None)
        for section, values in self.settings.items():
            conf[section] = dict(values)
        if self.ca_bundle:
            conf.setdefault("global", {})
            conf["global"]["cert"] = CA_IN_CONTAINER
        path = folder / "pip.conf"
        with open(path, "w") as f:
            conf.write(f)
        return path

    def mounts_and_env(self, folder: Path) -> tuple[list, dict]:
        """docker-py ``mounts`` (read-only binds) and the variables for a build container.

        The pip.conf and a copy of the CA bundle share one folder, mounted at MOUNT_DIR; local
        paths named by the settings are mounted where the settings expect them.
        """
        import docker
        folder.mkdir(parents=True, exist_ok=True)
        self.write_conf(folder)
        env = {"PIP_CONFIG_FILE": CONF_IN_CONTAINER, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
               "PIP_ROOT_USER_ACTION": "ignore", "PIP_BREAK_SYSTEM_PACKAGES": "1"}
        if self.ca_bundle:
            shutil.copyfile(self.ca_bundle, folder / "ca-certificates.crt")
            env.update(PIP_CERT=CA_IN_CONTAINER, SSL_CERT_FILE=CA_IN_CONTAINER,
                       REQUESTS_CA_BUNDLE=CA_IN_CONTAINER, CURL_CA_BUNDLE=CA_IN_CONTAINER)
        mounts = [docker.types.Mount(MOUNT_DIR, str(folder), type="bind", read_only=True)]
        for path in self.local_paths():
            if path != self.ca_bundle:
                mounts.append(docker.types.Mount(path, path, type="bind", read_only=True))
        for var in PROXY_VARS:
            if os.environ.get(var):
                env[var] = os.environ[var]
        return mounts, env


def parse_config_list(text: str) -> dict[str, dict[str, str]]:
    """``global.cert='/x'`` and ``:env:.cert='/x'`` lines into {section: {key: value}}.

    Variables (``:env:``) override files, as they do for pip itself.
    """
    files: dict[str, dict[str, str]] = {}
    env: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if "=" not in line or "." not in line.split("=", 1)[0]:
            continue
        name, value = line.split("=", 1)
        value = value.strip().strip("'\"")
        if name.startswith(":env:."):
            env.setdefault("global", {})[name[len(":env:."):]] = value
        else:
            section, key = name.split(".", 1)
            if section.startswith(":"):   # other pseudo sections
                continue
            files.setdefault(section, {})[key] = value
    for section, values in env.items():
        files.setdefault(section, {}).update(values)
    return files


def find_ca_bundle() -> str | None:
    """The CA bundle the host trusts: the usual variables first, then OpenSSL's default file."""
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        value = os.environ.get(var)
        if value and os.path.isfile(value):
            return value
    for candidate in (ssl.get_default_verify_paths().cafile,
                      "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None
