"""Packaging a ``%%train`` cell: what it reads, how it travels, what it needs installed.

``analysis`` reads the cell (the names it needs, what it assigns, its last expression),
``modules`` tells the user's modules from installed ones and writes import statements,
``packing`` pickles what the cell reads into a source folder (``build_bundle``) and unpickles
what comes back (``load_results``), ``pins`` finds the distributions to pin, and
``python_check`` refuses an image whose Python cannot run the cell's functions.  What an image
has is the compute target's to say (``describe_environment``); nothing here touches Docker.
"""
