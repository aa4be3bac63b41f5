"""The code that runs in a run's process, inside the container: standard library only (plus
cloudpickle for ``%%train`` cells), Python 3.8 and later, since users bring their own images.

``context`` is the logging API (``from celltrain import Run, log, progress``), ``checks`` what it
is given, ``cellrunner`` the entry script of a ``%%train`` run, and ``wire`` the contract with the
host: environment variable names, telemetry file names and the frame format.  Nothing here is
imported on package import: the host imports ``wire`` without the rest.
"""
