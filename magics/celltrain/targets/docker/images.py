"""Images for runs: the base image (pulled, or the offline one) and environments built on it.

The image tag is a hash of the resolved base image's id and of the pip and apt packages and setup
steps, so the same environment never builds twice.  Images are built without a Dockerfile: a
container from the base image runs the install steps with the host's pip settings mounted
(``hostpip``), and is committed with the base image's own configuration, so no setting, proxy or
credential of the build is left in the image.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

from ...environment import Environment
from ...errors import ImageBuildError
from ..base import PrepareStopped
from .engine import LABEL_BUILD, LABEL_ENV
from .hostpip import HostPip

OFFLINE_BASE = "celltrain/base:offline"
ENV_REPO = "celltrain/env"


def default_base_image() -> str:
    """The official PyTorch image that matches the torch of this kernel.

    Read from package metadata and ``torch/version.py`` rather than by importing torch, which
    takes seconds.
    """
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "pytorch/pytorch:latest"
    release = version.split("+")[0]
    cuda = "12.8"
    try:
        text = Path(str(metadata.distribution("torch").locate_file("torch/version.py"))
                    ).read_text()
        found = re.search(r"^cuda(?::[^=]*)?=\s*'([0-9.]+)'", text, re.M)
        cuda = found.group(1) if found else cuda
    except OSError:
        pass
    cudnn = "9"
    for dist in ("nvidia-cudnn-cu13", "nvidia-cudnn-cu12"):
        try:
            cudnn = metadata.version(dist).split(".")[0]
            break
        except metadata.PackageNotFoundError:
            continue
    return f"pytorch/pytorch:{release}-cuda{cuda}-cudnn{cudnn}-runtime"


PULL_RETRY_S = 3600
STOP_POLL_S = 0.25  # how often a pull or build asks whether to stop


class BuildCanceled(PrepareStopped):
    """The run was canceled while its image was being pulled or built; nothing was committed."""


def resolve_base(client, requested: str | None, notify: Callable[[str], None],
                 pull_failures: Path | None = None,
                 stop_requested: Callable[[], float | None] = lambda: None) -> str:
    """Make sure the base image is present; fall back to the offline base for the default.

    A failed pull of the default image is remembered for an hour in ``pull_failures`` (a JSON
    file in the workspace), so machines without a registry don't pay for it on every run.
    """
    import docker
    name = requested or default_base_image()
    if image_present(client, name):
        return name
    failed = _read_json(pull_failures)
    if (requested is None and time.time() - failed.get(name, 0) < PULL_RETRY_S
            and image_present(client, OFFLINE_BASE)):
        notify(f"notice: ran on the offline base image {OFFLINE_BASE}: {name} could not be "
               f"pulled in the last hour")
        return OFFLINE_BASE
    try:
        notify(f"pulling {name}")
        repo, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "latest")
        _pull(client, repo, tag, stop_requested)
        return name
    except docker.errors.APIError as e:
        if pull_failures is not None:
            failed[name] = time.time()
            _write_json(pull_failures, failed)
        if requested is None and image_present(client, OFFLINE_BASE):
            notify(f"notice: ran on the offline base image {OFFLINE_BASE}: {name} cannot be "
                   f"pulled ({pull_failure_words(e)})")
            return OFFLINE_BASE
        fix = ("build the offline base image with `celltrain base-image`, or pass "
               "Environment(base_image=...) with an image that is present"
               if requested is None else "check the name, or `docker pull` it first")
        raise ImageBuildError(f"base image {name} is not present and cannot be pulled "
                              f"({pull_failure_words(e)}): {fix}") from e


def _pull(client, repo: str, tag: str, stop_requested: Callable[[], float | None]) -> None:
    """``docker pull`` in a thread, so that a cancel does not wait for a slow registry.

    A canceled pull's thread is left to die with the supervisor, which exits right after;
    the engine drops a pull whose client went away.
    """
    import threading
    failure: list[BaseException] = []

    def pull():
        try:
            client.images.pull(repo, tag=tag)
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    thread = threading.Thread(target=pull, daemon=True, name="celltrain-pull")
    thread.start()
    while thread.is_alive():
        if stop_requested() is not None:
            raise BuildCanceled(f"canceled while pulling {repo}:{tag}")
        thread.join(STOP_POLL_S)
    if failure:
        raise failure[0]


def _read_json(path: Path | None) -> dict:
    try:
        return json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def image_present(client, name: str) -> bool:
    import docker
    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


_UNREACHABLE = re.compile(r"no such host|dial tcp|connection refused|i/o timeout|network is "
                          r"unreachable|name resolution|TLS handshake timeout", re.IGNORECASE)
_NO_IMAGE = re.compile(r"manifest unknown|not found|pull access denied|does not exist",
                       re.IGNORECASE)


def pull_failure_words(e: BaseException) -> str:
    """Why a pull failed, in words, not the engine's "500 Server Error for http+docker://..."."""
    text = str(e)
    if _UNREACHABLE.search(text):
        return "the registry cannot be reached from this machine"
    if _NO_IMAGE.search(text):
        return "the registry has no such image, or it needs a login"
    if re.search(r"toomanyrequests|rate limit", text, re.IGNORECASE):
        return "the registry's pull rate limit was reached"
    return _first_line(e)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def build_in_container(client, base: str, script: str, tag: str, log_path: Path,
                       labels: dict | None = None, changes: list[str] | None = None,
                       on_line: Callable[[str], None] | None = None,
                       container_labels: dict | None = None,
                       stop_requested: Callable[[], float | None] = lambda: None) -> str:
    """Run ``script`` in a container of ``base`` with the host's pip settings, commit it as ``tag``.

    The build container is hardened like a run's (``init``, ``no-new-privileges``) and sits on
    Docker's default bridge: it reaches package indexes, not the host's loopback services.
    ``labels`` go on the container and the image; ``container_labels`` (the run, the workspace)
    only on the container, so an orphan can be found and removed.  ``stop_requested`` is asked
    every STOP_POLL_S: a number is the grace in seconds to stop the build within, and then
    nothing is committed and BuildCanceled is raised.

    Returns the new image id; on failure raises ImageBuildError with the build log.
    """
    import threading
    base_image = client.images.get(base)
    base_config = base_image.attrs["Config"] or {}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="celltrain-build-") as tmp, \
            open(log_path, "w") as log:
        log.write(f"# base {base} ({base_image.id})\n# {time.ctime()}\n{script}\n\n")
        log.flush()
        mounts, env = HostPip.read().mounts_and_env(Path(tmp))
        # Settings go in through `env` on the command line and mounts, not the container's
        # config: a commit keeps the container's Env and Volumes, so they would be baked in.
        command = ["env", *(f"{k}={v}" for k, v in env.items()), "sh", "-c", script]
        container = client.containers.create(
            base, command, entrypoint=[], mounts=mounts, network_mode="bridge", init=True,
            security_opt=["no-new-privileges"],
            labels={LABEL_ENV: tag, LABEL_BUILD: tag, **(labels or {}),
                    **(container_labels or {})})
        try:
            container.start()

            def follow():  # the log, in a thread, so a cancel need not wait for output
                try:
                    for chunk in container.logs(stream=True, follow=True):
                        text = chunk.decode(errors="replace")
                        log.write(text)
                        log.flush()
                        if on_line:
                            on_line(text)
                except Exception:  # the engine went away: the poll below says so
                    pass

            follower = threading.Thread(target=follow, daemon=True, name="celltrain-build-log")
            follower.start()
            while True:
                grace = stop_requested()
                if grace is not None:
                    container.stop(timeout=int(max(grace, 0)))
                    follower.join(timeout=5)
                    log.write("\n# canceled: the build was stopped, nothing committed\n")
                    raise BuildCanceled(f"canceled while building {tag}")
                container.reload()
                if container.status not in ("created", "running", "restarting", "paused"):
                    break
                follower.join(STOP_POLL_S)
            follower.join(timeout=10)
            code = container.wait()["StatusCode"]
            if code != 0:
                log.flush()
                raise ImageBuildError(
                    f"image build failed (exit code {code}); build log: {log_path}\n"
                    + tail(log_path.read_text(), 25), build_log=log_path.read_text())
            conf = {"Env": base_config.get("Env"), "Cmd": base_config.get("Cmd") or ["sh"],
                    "Entrypoint": base_config.get("Entrypoint"),
                    "WorkingDir": base_config.get("WorkingDir") or "",
                    "User": base_config.get("User") or "",
                    "Labels": {**(base_config.get("Labels") or {}), LABEL_ENV: tag,
                               **(labels or {})}}
            repo, _, version = tag.rpartition(":")
            image = container.commit(repository=repo, tag=version, conf=conf, changes=changes)
            log.write(f"\n# committed {tag} ({image.id})\n")
            return image.id
        finally:
            try:
                container.remove(force=True)
            except Exception:  # the engine is gone: reconcile removes it by its labels later
                pass


def tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def ensure_image(client, env: Environment, log_path: Path,
                 notify: Callable[[str], None] = lambda s: None,
                 pull_failures: Path | None = None, container_labels: dict | None = None,
                 stop_requested: Callable[[], float | None] = lambda: None
                 ) -> tuple[str, str, bool]:
    """The image for ``env``: (tag, image id, whether it was built now).

    ``stop_requested`` and ``container_labels`` as for build_in_container; a pull is
    cancellable too.
    """
    base = resolve_base(client, env.base_image, notify, pull_failures, stop_requested)
    if not env.needs_build():
        image = client.images.get(base)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(f"# no packages to install: the base image {base} is used as is\n")
        return base, image.id, False
    base_id = client.images.get(base).id
    tag = f"{ENV_REPO}:{env.content_hash(base_id)[:20]}"
    if image_present(client, tag):
        notify(f"image cached: {tag}")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(f"# image cached: {tag} (content hash of base, pip, apt, setup)\n")
        return tag, client.images.get(tag).id, False
    notify(f"building image {tag}")
    image_id = build_in_container(client, base, env.install_script(), tag, log_path,
                                  container_labels=container_labels,
                                  stop_requested=stop_requested)
    return tag, image_id, True
