"""The Docker compute target: one hardened container per run on a Docker engine.

``target.py`` carries a run (``DockerTarget``), ``images.py`` pulls and builds the images,
``engine.py`` connects with errors that say how to fix a missing engine, ``hostpip.py`` lends
builds the host's pip settings, ``baseimage.py`` makes the offline base image, ``leftovers.py``
removes what runs left behind when the engine went away.  Nothing outside this package imports
the docker SDK or knows about images.
"""
from .target import DockerTarget

__all__ = ["DockerTarget"]
