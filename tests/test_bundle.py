"""Packaging a cell (celltrain.cell) and running it (celltrain.runtime.cellrunner), without a workspace.

The runner runs for real, in a subprocess of this Python, exactly as a run starts it: with the
bundle folder as working directory and a telemetry folder in the environment.
"""
from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from celltrain.cell import pins, python_check
from celltrain.cell.analysis import analyse, split_last_expression
from celltrain.cell.modules import import_statement
from celltrain.cell.packing import build_bundle, load_results
from celltrain.errors import BundleError
from celltrain.runtime.cellrunner import BUNDLE_DIR, META_FILE
from celltrain.runtime.wire import RESULTS_FILE
from celltrain.paths import PACKAGE_PARENT


def notebook(code: str) -> dict:
    """A namespace as a notebook kernel has it: code run in ``__main__``."""
    namespace = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(code), "<notebook>", "exec"), namespace)
    return namespace


def run_bundle(b, tmp_path, params=None):
    """Run the bundle's entry script; returns (exit code, results or None, failure text)."""
    telemetry = tmp_path / "telemetry"
    telemetry.mkdir(exist_ok=True)
    env = {**os.environ, "CELLTRAIN_TELEMETRY_DIR": str(telemetry),
           "CELLTRAIN_PARAMS": json.dumps(params or {}), "PYTHONPATH": PACKAGE_PARENT}
    proc = subprocess.run([sys.executable, b.script], cwd=b.folder, env=env,
                          capture_output=True, text=True, timeout=120)
    results = telemetry / RESULTS_FILE
    failure = telemetry / "failure.txt"
    return (proc.returncode, load_results(results) if results.exists() else None,
            failure.read_text() if failure.exists() else proc.stderr)


@pytest.fixture
def build(tmp_path):
    made = []

    def make(source, namespace, **kwargs):
        kwargs.setdefault("folder", tmp_path / "nb")
        (tmp_path / "nb").mkdir(exist_ok=True)
        b = build_bundle(textwrap.dedent(source), namespace, **kwargs)
        made.append(b)
        return b
    yield make
    for b in made:
        b.cleanup()


# -- reading the cell ------------------------------------------------------------------------
def test_reads_are_names_used_before_the_cell_assigns_them():
    a = analyse(textwrap.dedent("""
        x = x + 1
        y = 2
        print(y, z)
        total += step
        squares = [i * i for i in data]
        def f():
            return helper(k)
        class C(Base):
            size = width
        for epoch in range(n):
            pass
        import numpy as np
        np.zeros(3)
    """))
    assert a.reads[:5] == ["x", "print", "z", "total", "step"]
    assert {"data", "range", "n", "helper", "k", "Base", "width"} <= set(a.reads)
    assert not {"y", "i", "squares", "f", "C", "epoch", "np"} & set(a.reads)
    assert {"x", "y", "total", "squares", "f", "C", "epoch", "np"} <= a.assigned
    assert a.imported_modules == {"numpy"} and a.last_expr


def test_syntax_errors_name_the_cell_line_and_magics_get_a_hint():
    with pytest.raises(BundleError, match="line 3"):
        analyse("x = 1\ny = = 2\n", first_line=2)
    with pytest.raises(BundleError, match="IPython magics and shell commands"):
        analyse("x = 1\n!pip install foo\n")


def test_imports_are_recreated_with_the_same_aliases():
    import math
    import os.path
    import torch
    from torch import nn
    assert import_statement("np", np) == "import numpy as np"
    assert import_statement("nn", nn) == "from torch import nn"
    assert import_statement("torch", torch) == "import torch"
    assert import_statement("root", math.sqrt) == "from math import sqrt as root"
    assert import_statement("sqrt", math.sqrt) == "from math import sqrt"
    assert import_statement("osp", os.path) == f"import {os.path.__name__} as osp"
    assert import_statement("f", lambda: 1) is None


# -- round trips ------------------------------------------------------------------------------
def test_round_trip_of_functions_closures_classes_and_aliases(build, tmp_path):
    ns = notebook("""
        import numpy as np
        from math import sqrt as root
        scale = 3
        def inner(x):
            return x * scale
        def outer(x):                      # calls another notebook function
            return inner(x) + 1
        def make_adder(n):
            def add(x):
                return x + n
            return add
        add5 = make_adder(5)               # a closure
        class Counter:
            def __init__(self):
                self.total = 0
            def add(self, v):
                self.total += v
                return self
        counter = Counter().add(2)
    """)
    b = build("""
        scale = 10                         # notebook functions see the cell's globals
        y = outer(2)
        z = add5(root(16))
        counter.add(y)
        a = np.arange(3) * 2
        c2 = Counter().add(1)
        (y, z)
    """, ns, out=["y", "z", "counter", "a", "c2"], first_line=2)
    assert "import numpy as np" in b.imports and "from math import sqrt as root" in b.imports
    assert set(b.variables) == {"outer", "add5", "counter", "Counter"}
    code, (values, value, has_value), failure = run_bundle(b, tmp_path)
    assert code == 0, failure
    assert values["y"] == 21 and values["z"] == 9.0 and values["counter"].total == 23
    assert values["a"].tolist() == [0, 2, 4] and values["c2"].total == 1
    assert has_value and value == (21, 9.0)


def test_params_are_bound_in_the_cell_and_win_over_notebook_values(build, tmp_path):
    ns = notebook("lr = 1.0\n")
    b = build("result = (lr, epochs, flags)\n", ns, out=["result"],
              params={"lr": 0.01, "epochs": 3, "flags": [True, "x"]})
    assert "lr" not in b.variables
    code, (values, _, _), failure = run_bundle(
        b, tmp_path, params={"lr": 0.01, "epochs": 3, "flags": [True, "x"]})
    assert code == 0, failure
    assert values["result"] == (0.01, 3, [True, "x"])


def test_large_array_round_trip(build, tmp_path):
    big = np.random.default_rng(0).random(6_000_000)   # 48 MB
    b = build("total = float(big.sum())\nbig2 = big[:10]\n", {"big": big, "__name__": "x"},
              out=["total", "big2"])
    assert b.size > 48_000_000
    code, (values, _, _), failure = run_bundle(b, tmp_path)
    assert code == 0, failure
    assert values["total"] == pytest.approx(big.sum())
    assert np.array_equal(values["big2"], big[:10])


def test_data_frames_round_trip(build, tmp_path):
    import pandas as pd
    ns = notebook("import pandas as pd\n")
    frame = pd.DataFrame({"lr": [0.1, 0.01], "name": ["a", "b"]})
    ns["frame"] = frame
    b = build("best = frame.loc[frame.lr.idxmin()]\nsummary = frame.assign(x=pd.Series([1, 2]))\n",
              ns, out=["best", "summary"])
    code, (values, _, _), failure = run_bundle(b, tmp_path)
    assert code == 0, failure
    assert values["best"]["name"] == "b"
    pd.testing.assert_frame_equal(values["summary"], frame.assign(x=[1, 2]))


def test_tensors_and_modules_come_back(build, tmp_path):
    import torch
    from torch import nn
    ns = notebook("import torch\nfrom torch import nn\n")
    b = build("model = nn.Linear(2, 1)\nw = torch.ones(3) * 2\n", ns, out=["model", "w"])
    code, (values, _, _), failure = run_bundle(b, tmp_path)
    assert code == 0, failure
    assert isinstance(values["model"], nn.Linear)
    assert values["w"].device.type == "cpu" and values["w"].tolist() == [2.0, 2.0, 2.0]
    assert torch.is_tensor(values["w"])


def test_local_modules_of_the_notebook_folder_travel(build, tmp_path, monkeypatch):
    folder = tmp_path / "nb"
    folder.mkdir()
    (folder / "helpers_ct.py").write_text("def double(x):\n    return 2 * x\n")
    pkg = folder / "pkg_ct"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "maths.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(folder))
    import helpers_ct
    from pkg_ct import maths
    try:
        ns = {"__name__": "__main__", "maths": maths, "double": helpers_ct.double}
        b = build("import helpers_ct\nr = (helpers_ct.double(2), double(3), maths.triple(2))\n",
                  ns, out=["r"], folder=folder)
        assert {"helpers_ct.py", "pkg_ct/maths.py", "pkg_ct/__init__.py"} <= set(
            b.meta["local_files"])
        code, (values, _, _), failure = run_bundle(b, tmp_path)
        assert code == 0, failure
        assert values["r"] == (4, 6, 6)
    finally:
        sys.modules.pop("helpers_ct", None)
        sys.modules.pop("pkg_ct", None)
        sys.modules.pop("pkg_ct.maths", None)


def test_user_code_outside_the_notebook_folder_travels_by_value(build, tmp_path, monkeypatch):
    elsewhere = tmp_path / "src"
    elsewhere.mkdir()
    (elsewhere / "faraway_ct.py").write_text("def f(x):\n    return x + 100\n")
    monkeypatch.syspath_prepend(str(elsewhere))
    import faraway_ct
    try:
        b = build("r = f(1)\n", {"__name__": "__main__", "f": faraway_ct.f}, out=["r"])
        assert "faraway_ct.py" not in b.meta["local_files"]
        sys.modules.pop("faraway_ct")  # the run cannot import it: it must travel by value
        code, (values, _, _), failure = run_bundle(b, tmp_path)
        assert code == 0, failure
        assert values["r"] == 101
    finally:
        sys.modules.pop("faraway_ct", None)


# -- what cannot go ---------------------------------------------------------------------------
@pytest.mark.parametrize("make, why", [
    (lambda tmp: (i for i in range(3)), "generator"),
    (lambda tmp: open(tmp / "f.txt", "w"), "open file"),
    (lambda tmp: threading.Lock(), "lock"),
    (lambda tmp: socket.socket(), "socket"),
])
def test_unpicklable_variables_are_refused_by_name(build, tmp_path, make, why):
    value = make(tmp_path)
    try:
        with pytest.raises(BundleError) as info:
            build("print(thing)\n", {"__name__": "__main__", "thing": value})
        assert "'thing'" in str(info.value) and why in str(info.value)
        assert "Nothing was started" in str(info.value)
    finally:
        if hasattr(value, "close"):
            value.close()


def test_an_object_holding_a_lock_is_refused_with_the_reason(build):
    ns = notebook("import threading\nclass Holder:\n    def __init__(self):\n"
                  "        self.lock = threading.Lock()\nholder = Holder()\n")
    with pytest.raises(BundleError, match="'holder'.*lock"):
        build("holder\n", ns)


def test_too_much_data_says_how_to_mount_it(build):
    big = np.zeros(300_000)   # 2.4 MB
    with pytest.raises(BundleError) as info:
        build("big.sum()\n", {"big": big}, max_mb=1)
    assert "big 2.3 MB" in str(info.value) and "--mount" in str(info.value)


def test_out_names_the_cell_never_assigns_are_refused(build):
    with pytest.raises(BundleError, match="--out acc: the cell never assigns 'acc'"):
        build("x = 1\n", {}, out=["acc"])


# -- failures in the run ----------------------------------------------------------------------
def test_traceback_points_at_the_cells_own_lines(build, tmp_path):
    ns = notebook("def divide(a, b):\n    return a / b\n")
    b = build("x = 1\ny = 0\nz = divide(x, y)\n", ns, first_line=2, label="Cell In[7]",
              cell_text="%%train\nx = 1\ny = 0\nz = divide(x, y)\n",
              labels={"<notebook>": "Cell In[3]"},
              sources={"<notebook>": "def divide(a, b):\n    return a / b\n"})
    code, _, failure = run_bundle(b, tmp_path)
    assert code == 1
    assert failure.startswith("the cell raised ZeroDivisionError: division by zero "
                              "(Cell In[3], line 2)")
    assert "Cell In[7], line 4, in <module>\n    z = divide(x, y)" in failure
    assert "Cell In[3], line 2, in divide\n    return a / b" in failure
    assert "celltrain_cell.py" not in failure


def test_missing_out_variable_at_the_end_fails_the_run(build, tmp_path):
    b = build("if False:\n    acc = 1\n", {}, out=["acc"])
    code, _, failure = run_bundle(b, tmp_path)
    assert code == 1 and "--out acc: the cell finished but did not define acc" in failure


def test_a_python_the_bytecode_cannot_run_on_is_explained(build, tmp_path):
    ns = notebook("def f():\n    return 1\n")
    b = build("f()\n", ns)
    meta_path = b.folder / BUNDLE_DIR / META_FILE
    meta = json.loads(meta_path.read_text())
    assert meta["code_by_value"]
    meta["python"] = [3, 7]    # as if the kernel ran 3.7: this Python cannot load its bytecode
    meta_path.write_text(json.dumps(meta))
    code, _, failure = run_bundle(b, tmp_path)
    assert code == 1 and "kernel runs 3.7" in failure and "--image" in failure


def test_a_package_the_image_lacks_is_named_with_the_fix(build, tmp_path):
    b = build("x = 1\n", {})
    meta_path = b.folder / BUNDLE_DIR / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["imports"] = ["import not_installed_ct as nic"]
    meta["module_dists"] = {"not_installed_ct": "not-installed-ct"}
    meta["packages"] = {"not-installed-ct": "1.2"}
    meta_path.write_text(json.dumps(meta))
    code, _, failure = run_bundle(b, tmp_path)
    assert code == 1
    assert "import not_installed_ct as nic" in failure
    assert "--pip not-installed-ct==1.2" in failure


def test_python_check_before_launch_explains_the_mismatch():
    with pytest.raises(BundleError, match=r"runs Python 3\.8, but this kernel runs"):
        python_check.check_python("old/image", {"python": [3, 8, 10]})
    python_check.check_python("same/image", {"python": list(sys.version_info[:3])})


# -- the environment --------------------------------------------------------------------------
def test_packages_the_cell_uses_are_found_with_kernel_versions(build):
    import torch  # noqa: F401
    ns = notebook("import numpy as np\nimport torch\ndef f():\n    return torch.zeros(1)\n")
    b = build("import PIL\nx = np.zeros(2)\nf()\n", ns)
    assert {"numpy", "torch", "pillow"} <= {k.lower() for k in b.distributions}
    assert "celltrain" not in b.distributions and "cloudpickle" not in b.distributions


def test_auto_pins_only_what_differs_and_leave_user_pins_alone():
    kernel = {"torch": "2.14.1+cpu", "numpy": "2.4.6", "pandas": "2.2.0", "tqdm": "4.70.1"}
    image = {"torch": "2.14.1+cu128", "numpy": "1.26.0", "tqdm": "4.70.1"}
    assert pins.auto_pins(kernel, image, explicit=["Pandas>=2"]) == ["numpy==2.4.6"]
    assert pins.auto_pins(kernel, None) == [
        "torch==2.14.1", "numpy==2.4.6", "pandas==2.2.0", "tqdm==4.70.1"]


def test_requirements_files_are_read_and_options_refused(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# deps\ntimm==1.0.0  # models\n\npandas\n")
    assert pins.read_requirements(req) == ["timm==1.0.0", "pandas"]
    req.write_text("--index-url http://x\n")
    with pytest.raises(BundleError, match="line 1.*pip option"):
        pins.read_requirements(req)
    with pytest.raises(BundleError, match="no such file"):
        pins.read_requirements(tmp_path / "missing.txt")


def test_results_file_keeps_an_unpicklable_last_value_as_its_repr(build, tmp_path):
    b = build("import threading\nthreading.Lock()\n", {})
    code, (values, value, has_value), failure = run_bundle(b, tmp_path)
    assert code == 0, failure
    assert has_value and "lock" in repr(value)
    assert pickle.loads(pickle.dumps(values)) == {}


def test_last_expression_split_keeps_the_cells_line_numbers(build, tmp_path):
    body, expression = split_last_expression("a = 1; (a +\n  2)\n", 2, True)
    assert body == "\na = 1; " and expression == "\n(a +\n  2)"
    assert split_last_expression("x = 1\nx;\n", 1, analyse("x = 1\nx;\n").last_expr) \
        == ("x = 1\nx;\n", None)   # a trailing ; hides the value, as in IPython
    b = build("t = 'é'; (t +\n 'x')\n", {})
    code, (_, value, has_value), failure = run_bundle(b, tmp_path)
    assert code == 0 and has_value and value == "éx", failure


def test_runner_is_python_38_and_standard_library_plus_cloudpickle():
    """It runs inside user images: Python 3.8 syntax, no third-party imports of its own."""
    import ast
    from celltrain.runtime import cellrunner
    tree = ast.parse(open(cellrunner.__file__).read(), feature_version=(3, 8))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"cloudpickle", "celltrain", "tqdm"}
    assert imported <= allowed, imported - allowed
