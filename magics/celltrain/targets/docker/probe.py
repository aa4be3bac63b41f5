"""Asking a Docker image for its Python version and packages, before a ``%%train`` run starts.

``%%train`` pins the packages a cell uses to the kernel's versions where the image differs, and
refuses an image whose Python cannot run the cell's functions; the Docker target answers what
the image has (``DockerTarget.describe_environment``), cached per image id.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ...errors import BundleError
from . import engine
from .images import OFFLINE_BASE, default_base_image

PROBE = ("import json,sys\n"
         "try:\n from importlib import metadata\n"
         " pk={d.metadata['Name']:d.version for d in metadata.distributions() if d.metadata['Name']}\n"
         "except Exception:\n pk={}\n"
         "print(json.dumps({'python':list(sys.version_info[:3]),'packages':pk}))")


def image_facts(client, image: str, cache_dir: str | os.PathLike) -> dict:
    """The image's Python version and packages, asked once per image id and cached."""
    import docker
    image_id = client.images.get(image).id
    cache = Path(cache_dir) / f"{image_id.replace(':', '-')}.json"
    if cache.exists():
        try:
            return json.loads(cache.read_text())
        except ValueError:
            pass
    try:
        output = client.containers.run(
            image, ["sh", "-c", 'exec "$(command -v python3 || command -v python)" -c "$0"',
                    PROBE], entrypoint=[], remove=True, network_disabled=True,
            stdout=True, stderr=False)
        facts = json.loads(output.decode().strip().splitlines()[-1])
    except (docker.errors.ContainerError, ValueError, IndexError) as e:
        raise BundleError(f"the image {image} has no working Python (python3 or python), "
                          f"which a %%train run needs: {str(e).strip()[:300]}") from None
    except docker.errors.DockerException as e:
        raise BundleError(f"could not ask the image {image} for its Python version and "
                          f"packages: {str(e).strip()[:300]}") from None
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(facts))
    return facts


def candidate_image(client, image: str | None) -> str | None:
    """The base image a Docker run will most likely use, if it is here already (no pulls)."""
    import docker
    names = [image] if image else [default_base_image(), OFFLINE_BASE]
    for name in names:
        try:
            client.images.get(name)
            return name
        except docker.errors.ImageNotFound:
            continue
    return None


def describe(image: str | None, cache_dir: str | os.PathLike) -> dict:
    """{"image", "python", "packages"} of the image a run would use; None values where that
    image is not here yet (it will be pulled or built: nothing to ask before the run)."""
    client = engine.client()
    candidate = candidate_image(client, image)
    if candidate is None:
        return {"image": image, "python": None, "packages": None}
    return {"image": candidate, **image_facts(client, candidate, cache_dir)}
