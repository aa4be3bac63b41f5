"""``python -m celltrain.demo``: run the example notebook end to end through a real kernel.

It executes ``notebooks/01-chickens-vs-turkeys.ipynb`` with nbclient in the notebook's own
folder (so its workspace is ``notebooks/.celltrain`` and its data ``notebooks/data/``), and saves
the executed copy under ``build/notebooks/`` (git-ignored).  ``make demo`` runs it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "01-chickens-vs-turkeys.ipynb"
OUT_DIR = ROOT / "build" / "notebooks"


def execute(notebook: Path = NOTEBOOK, out_dir: Path = OUT_DIR, kernel: str = "python3",
            timeout: int = 1800, log=print) -> Path:
    """Execute ``notebook`` in its folder; returns the path of the executed copy.

    Raises nbclient's CellExecutionError (with the failing cell's output) when a cell fails;
    the partly executed copy is saved all the same.
    """
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel,
                            resources={"metadata": {"path": str(notebook.parent)}})
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / notebook.name
    start = time.monotonic()
    log(f"executing {notebook} with kernel {kernel} ...")
    try:
        client.execute()
    finally:
        nbformat.write(nb, out)
        log(f"executed copy: {out} ({time.monotonic() - start:.0f}s)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m celltrain.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", nargs="?", default=str(NOTEBOOK))
    parser.add_argument("--kernel", default="python3")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)
    from nbclient.exceptions import CellExecutionError
    try:
        out = execute(Path(args.notebook).resolve(), kernel=args.kernel, timeout=args.timeout)
    except CellExecutionError as e:
        print(f"the notebook failed:\n{e}", file=sys.stderr)
        return 1
    import nbformat
    nb = nbformat.read(out, as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and cell.source.startswith("_, val"):
                print(output.get("text", "").rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
