"""Environment: the packages and setup steps a run's image holds, as a value.

What the content names (an image tag from its hash) and how it is built belong to the compute
target that builds images (``celltrain.targets.docker.images``); this module is only the value
that ``submit()``, ``%%train`` and the run spec carry.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

BUILD_FORMAT = 2  # bump when the build steps change meaning


@dataclass
class Environment:
    """pip and apt packages and setup commands on top of a base image.

    ``base_image=None`` means: an official PyTorch image matching this kernel's torch, or the
    offline base image (``celltrain base-image``) where no registry can be reached.
    """
    pip: list[str] = field(default_factory=list)
    apt: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)
    base_image: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("pip", "apt", "setup"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
            for item in getattr(self, name):
                if not isinstance(item, str) or not item.strip():
                    raise ValueError(f"Environment({name}=...) takes strings, not {item!r}")

    def to_dict(self) -> dict:
        return {"pip": list(self.pip), "apt": list(self.apt), "setup": list(self.setup),
                "base_image": self.base_image, "env": dict(self.env)}

    @classmethod
    def from_dict(cls, d: dict) -> "Environment":
        return cls(**{k: d[k] for k in ("pip", "apt", "setup", "base_image", "env") if k in d})

    def needs_build(self) -> bool:
        return bool(self.pip or self.apt or self.setup)

    def content_hash(self, base_image_id: str) -> str:
        spec = {"base": base_image_id, "pip": self.pip, "apt": self.apt, "setup": self.setup,
                "format": BUILD_FORMAT}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def install_script(self) -> str:
        steps = ["set -eux"]
        if self.apt:
            steps.append("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
                         "--no-install-recommends " + " ".join(map(_quote, self.apt)) +
                         " && rm -rf /var/lib/apt/lists/*")
        if self.pip:
            steps.append("PY=$(command -v python3 || command -v python); "
                         "$PY -m pip install --no-cache-dir " + " ".join(map(_quote, self.pip)))
        steps.extend(self.setup)
        return "\n".join(steps)


def _quote(s: str) -> str:
    import shlex
    return shlex.quote(s)


