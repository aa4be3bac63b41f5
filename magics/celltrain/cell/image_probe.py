"""Asking a Docker image for its Python version and packages, before a ``%%train`` run starts.

The only module of ``celltrain.cell`` that touches Docker; it imports the SDK inside its functions.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import BundleError

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


def check_python(image: str, facts: dict) -> None:
    have = tuple(facts["python"][:2])
    want = tuple(sys.version_info[:2])
    if have != want:
        raise BundleError(
            f"the image {image} runs Python {have[0]}.{have[1]}, but this kernel runs "
            f"{want[0]}.{want[1]}: functions and classes defined in the notebook travel as "
            f"Python {want[0]}.{want[1]} bytecode, which only the same Python version can run. "
            f"Use an image with Python {want[0]}.{want[1]} (--image), or a kernel with Python "
            f"{have[0]}.{have[1]}. Nothing was started.")


def candidate_image(client, image: str | None) -> str | None:
    """The base image a Docker run will most likely use, if it is here already (no pulls)."""
    import docker
    from ..environment import OFFLINE_BASE, default_base_image
    names = [image] if image else [default_base_image(), OFFLINE_BASE]
    for name in names:
        try:
            client.images.get(name)
            return name
        except docker.errors.ImageNotFound:
            continue
    return None
