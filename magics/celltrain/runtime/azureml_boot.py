"""``python -m celltrain.runtime.azureml_boot SCRIPT ARGS...``: the entry of a run the Azure ML
v1 layer submitted.  It maps the ``azureml`` names (when ``CELLTRAIN_AZUREML=1``), then runs
the unchanged training script as ``__main__``; stdlib only, Python 3.8."""
import os
import runpy
import sys

from .azureml_names import install_if_asked


def main(argv):
    if not argv:
        sys.exit("usage: python -m celltrain.runtime.azureml_boot SCRIPT [ARGS...]")
    install_if_asked()
    script = argv[0]
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
