"""The settings of a saved ray target (``ws.add_target(name, "ray", ...)``), checked."""
from __future__ import annotations

from . import cluster
from .cluster import require_ray
from .images import IMAGE_FROM

SETTINGS = ("address", "scale_timeout", "image_from", "resources")


def check_settings(settings: dict) -> dict:
    """A ray target's settings, checked: refused naming the value and the fix."""
    require_ray()
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"a ray target takes {', '.join(SETTINGS)}, not "
                         f"{', '.join(unknown)}")
    address = settings.get("address", "auto")
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"address={address!r} is not a Ray address: give 'auto', a GCS "
                         "address 'host:6379' or a client address 'ray://host:10001'")
    checked = {"address": address.strip()}
    if "scale_timeout" in settings:
        checked["scale_timeout"] = _seconds(settings["scale_timeout"])
    if "image_from" in settings:
        if settings["image_from"] not in IMAGE_FROM:
            raise ValueError(f"image_from={settings['image_from']!r}: give 'submitter' "
                             "(made where the run is submitted, sent to nodes lacking it) "
                             "or 'nodes' (each node builds it)")
        checked["image_from"] = settings["image_from"]
    if "resources" in settings:
        checked["resources"] = cluster.custom_resources(settings["resources"])
    return checked


def _seconds(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"scale_timeout={value!r} is not a number of seconds: give how long "
                         "a run waits for room on the cluster, e.g. scale_timeout=600")
    return float(value)

