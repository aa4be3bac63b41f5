"""Packaging a ``%%train`` cell: what it reads, how it travels, what it needs installed.

``analysis`` reads the cell (the names it needs, what it assigns, its last expression),
``modules`` tells the user's modules from installed ones and writes import statements,
``packing`` pickles what the cell reads into a source folder (``build_bundle``) and unpickles
what comes back (``load_results``), ``pins`` finds the distributions to pin, and
``image_probe`` asks a Docker image for its Python and packages (the only module here that
touches Docker).
"""
