"""Notebooks executed by a real kernel (nbclient): the magics as a notebook user meets them,
and the example notebook end to end in a real container."""
from __future__ import annotations

import shutil
from pathlib import Path

import docker
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "notebooks" / "01-chickens-vs-turkeys.ipynb"


def execute(nb, folder: Path, allow_errors: bool = False, timeout: int = 600):
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            allow_errors=allow_errors,
                            resources={"metadata": {"path": str(folder)}})
    client.execute()
    return nb


def text_of(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            parts.append(output["data"].get("text/plain", ""))
        elif output["output_type"] == "error":
            parts.append("\n".join(output["traceback"]))
    return "\n".join(parts)


def test_train_magic_in_a_real_kernel(tmp_path):
    """Round trip, a failing cell's traceback, and the cell number as the kernel counts."""
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell
    nb.cells = [
        code(f"%load_ext celltrain\n%train config workspace={tmp_path / 'ws'} target=local"),
        code("import numpy as np\nscale = 2\ndef double(x):\n    return x * scale\n"
             "class Box:\n    def __init__(self, v):\n        self.v = v"),
        code("%%train --param n=3 --out box arr\narr = double(np.arange(n))\nbox = Box(arr.sum())"
             "\nlog('sum', box.v)\nbox.v * 10"),
        code("print('back:', box.v, arr.tolist())"),
        code("def explode(v):\n    raise RuntimeError(f'exploded at {v}')"),
        code("%%train\nvalue = 7\nexplode(value)"),
    ]
    execute(nb, tmp_path, allow_errors=True)
    run_cell, back, failing = nb.cells[2], nb.cells[3], nb.cells[5]
    assert "60" in text_of(run_cell) and "box, arr now in the notebook" in text_of(run_cell)
    assert "back: 6 [0, 2, 4]" in text_of(back)
    error = text_of(failing)
    number = failing["execution_count"]
    assert f"Cell In[{number}], line 3, in <module>" in error and "explode(value)" in error
    assert f"Cell In[{number - 1}], line 2, in explode" in error
    assert "RuntimeError: exploded at 7" in error


def test_a_failing_train_cell_stops_the_notebook(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"%load_ext celltrain\n%train config "
                                          f"workspace={tmp_path / 'ws'} target=local"),
                nbformat.v4.new_code_cell("%%train\n1 / 0"),
                nbformat.v4.new_code_cell("print('not reached')")]
    with pytest.raises(CellExecutionError, match="ended Failed"):
        execute(nb, tmp_path)
    assert nb.cells[2].get("outputs") == []
    # The cause is in the saved notebook once, in the run's view (its static copy), not
    # repeated by the error output (issue 15 item 4).
    saved = "\n".join(output["data"].get("text/html", "") + output["data"].get("text/plain", "")
                      for output in nb.cells[1]["outputs"] if "data" in output)
    assert "ZeroDivisionError" in saved


@pytest.mark.docker
def test_example_notebook_end_to_end(tmp_path, docker_client, offline_image):
    """The chickens-vs-turkeys notebook, as `make demo` runs it: real kernel, real Docker."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / EXAMPLE.name)
    nb = nbformat.read(folder / EXAMPLE.name, as_version=4)
    try:
        execute(nb, folder, timeout=1200)
    finally:
        label = {"label": f"celltrain.workspace={folder / '.celltrain'}"}
        for c in docker_client.api.containers(all=True, filters=label):
            try:
                docker_client.api.remove_container(c["Id"], force=True)
            except docker.errors.APIError:    # its supervisor removed it meanwhile
                pass
    text = "\n".join(text_of(c) for c in nb.cells)
    assert "synthetic stand-in" in text
    assert "model, classes now in the notebook" in text
    accuracy = next(line for line in text.splitlines()
                    if line.startswith("validation accuracy in the notebook"))
    assert float(accuracy.split(":")[1].split("%")[0]) > 80, accuracy
    assert "'val_acc'" in text and "outputs/model.pt" in text
    assert "registered chickens-vs-turkeys version 1" in text
    assert "the endpoint says" in text                # served, one image classified through it
    assert (folder / "model" / "model.pt").exists()             # downloaded by the notebook
    from celltrain import Workspace
    version = Workspace(folder / ".celltrain", reconcile=False).model("chickens-vs-turkeys",
                                                                      alias="production")
    assert version.version == 1 and version.artifacts["onnx"]["max_abs_diff"] < 1e-3
    layout = folder / "data" / "chickens-vs-turkeys"
    for split, count in (("train", 120), ("val", 100)):
        for label in ("chickens", "turkeys"):
            assert len(list((layout / split / label).glob("*.jpg"))) == count
