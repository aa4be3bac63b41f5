"""Azure ML SDK v1 notebooks and scripts on celltrain, with one added line.

``%load_ext celltrain.azureml`` (or ``celltrain.azureml.install()`` in a script) maps the v1
module names (``azureml.core``, ``azureml.train.dnn``, ``azureml.train.hyperdrive``, ...) onto
the modules of this package; nothing is mapped until then, and it refuses where the real
``azureml-core`` is importable.  Runs submitted through the layer get the same mapping inside
their container (``CELLTRAIN_AZUREML=1``, read by ``celltrain.runtime.azureml_boot``).
This package is also what ``import azureml`` gives once installed.
"""
from ..runtime.azureml_names import (MODULES, NotCovered, RealSdkPresent, install,
                                     uninstall)
from .uncovered import not_covered

__all__ = ["install", "uninstall", "MODULES", "NotCovered", "RealSdkPresent",
           "load_ipython_extension"]


def load_ipython_extension(ipython):
    """``%load_ext celltrain.azureml``: install the mapping, and celltrain's magics."""
    install()
    from .. import load_ipython_extension as load_celltrain
    load_celltrain(ipython)


__getattr__ = not_covered("azureml")
