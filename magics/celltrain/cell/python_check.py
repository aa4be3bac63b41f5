"""Whether an image's Python can run a cell's functions (they travel as bytecode)."""
from __future__ import annotations

import sys

from ..errors import BundleError


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
