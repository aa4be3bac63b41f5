"""``%%train`` and ``%train`` driven through a real IPython shell.

Most tests use ``--target local`` (a real run, supervisor and store; a subprocess instead of a
container), which has the same semantics and is fast.  The ``docker`` ones use real containers
of the offline base image.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from IPython.testing import globalipapp
from IPython.utils.capture import capture_output

from celltrain import states
from celltrain.cell_wait import CellRunFailed, StoppedWaiting
from celltrain.magic_args import parse_param
from celltrain.run import Run


@pytest.fixture(scope="module")
def shell():
    ip = globalipapp.get_ipython()   # the attribute: another module may have started it
    ip.run_cell("%load_ext celltrain")
    return ip


@pytest.fixture
def ip(shell, tmp_path, monkeypatch):
    """The shell, with a fresh workspace and the test's folder as the notebook's folder."""
    monkeypatch.chdir(tmp_path)
    shell.run_line_magic("train", f"config workspace={tmp_path / 'ws'} target=local "
                                  f"experiment=magics")
    before = set(shell.user_ns)
    yield shell
    shell.run_line_magic("train", "config workspace= target= experiment= image=")
    for name in set(shell.user_ns) - before:
        shell.user_ns.pop(name, None)


def cell(ip, source: str):
    """Run a cell as the notebook would (history on, so it gets a number); returns
    (result, captured stdout + stderr)."""
    with capture_output() as out:
        result = ip.run_cell(source, store_history=True)
    return result, out.stdout + out.stderr


def workspace(ip):
    return ip.magics_manager.registry["TrainMagics"].workspace()


NOTEBOOK = """
import numpy as np
from math import sqrt as root
scale = 3
def inner(x):
    return x * scale
def outer(x):
    return inner(x) + 1
def make_adder(n):
    def add(x):
        return x + n
    return add
add5 = make_adder(5)
class Counter:
    def __init__(self):
        self.total = 0
    def add(self, v):
        self.total += v
        return self
"""


def test_round_trip_brings_out_values_and_the_last_expression_back(ip):
    cell(ip, NOTEBOOK)
    result, out = cell(ip, """%%train --param n=4 lr=0.5 tags=[1,2] fast=true --out y c arr -o r
scale = 10
y = outer(n)
c = Counter().add(add5(root(16)))
arr = np.arange(n) * lr
log("loss", 0.25)
(y, tags, fast)
""")
    assert result.error_in_exec is None, out
    assert result.result == (41, [1, 2], True)
    assert ip.user_ns["y"] == 41 and ip.user_ns["c"].total == 9.0
    assert isinstance(ip.user_ns["c"], ip.user_ns["Counter"])   # the notebook's own class
    assert ip.user_ns["arr"].tolist() == [0.0, 0.5, 1.0, 1.5]
    run = ip.user_ns["r"]
    assert isinstance(run, Run) and run.status == states.COMPLETED
    assert run.params == {"n": 4, "lr": 0.5, "tags": [1, 2], "fast": True}
    assert run.metrics() == {"loss": [0.25]}
    assert "y, c, arr now in the notebook" in out


def test_failure_shows_the_cells_traceback_with_its_own_line_numbers(ip):
    defined, _ = cell(ip, "def divide(a, b):\n    return a / b\n")
    result, out = cell(ip, "%%train\nx = 1\nz = divide(x, 0)\n")
    number = ip.execution_count - 1  # the %%train cell's own number
    assert isinstance(result.error_in_exec, CellRunFailed)
    assert f"Cell In[{number}], line 3, in <module>\n    z = divide(x, 0)" in out
    assert f"Cell In[{number - 1}], line 2, in divide\n    return a / b" in out
    assert "ZeroDivisionError: division by zero" in out
    assert result.error_in_exec.run.status == states.FAILED


def test_a_non_zero_exit_shows_the_foundation_reason(ip):
    result, out = cell(ip, "%%train\nimport sys\nprint('bye', file=sys.stderr)\nsys.exit(3)\n")
    assert isinstance(result.error_in_exec, CellRunFailed)
    assert "exit code 3" in out and "bye" in out


def test_a_dead_supervisor_does_not_leave_the_cell_waiting(ip, monkeypatch):
    """Kill the run's supervisor mid-run: the waiting cell has a new one adopt the run."""
    from celltrain import cell_wait
    monkeypatch.setattr(cell_wait.Adopter, "EVERY_S", 0.5)
    ws = workspace(ip)
    killed = []

    def kill_supervisor():
        deadline = time.time() + 60
        while time.time() < deadline:
            runs = ws.runs()
            if runs and "started" in runs[0].logs():
                for pid in os.listdir("/proc"):
                    try:
                        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
                    except OSError:
                        continue
                    if b"celltrain.supervisor" in cmdline and runs[0].id.encode() in cmdline:
                        os.kill(int(pid), signal.SIGKILL)
                        killed.append(int(pid))
                        return
            time.sleep(0.05)
    thread = threading.Thread(target=kill_supervisor, daemon=True)
    thread.start()
    result, out = cell(ip, "%%train --out done\nimport time\nprint('started', flush=True)\n"
                           "time.sleep(3)\ndone = True\n")
    thread.join()
    assert killed, "the run's supervisor was not found"
    assert result.error_in_exec is None, out
    assert ip.user_ns["done"] is True


def test_outputs_folder_files_are_in_the_run_folder(ip):
    result, out = cell(ip, "%%train -o r\nimport os\nos.makedirs('outputs', exist_ok=True)\n"
                           "open('outputs/weights.txt', 'w').write('w')\n")
    assert result.error_in_exec is None, out
    assert "outputs/weights.txt" in ip.user_ns["r"].files()


@pytest.mark.parametrize("line, message", [
    ("%%train --bogus 1", "unrecognized arguments: --bogus"),
    ("%%train --param lr", "--param 'lr' is not NAME=VALUE"),
    ("%%train --param 2x=1", "'2x' cannot be a variable name"),
    ("%%train --param s=[1,", "is not a valid list"),
    ("%%train --out nothere", "--out nothere: the cell never assigns 'nothere'"),
    ("%%train --mount /no/such/dir:/data", "/no/such/dir does not exist"),
    ("%%train --mount data", "is not HOST:CONTAINER"),
    ("%%train --requirements missing.txt", "no such file"),
])
def test_bad_input_is_refused_before_anything_starts(ip, line, message):
    result, out = cell(ip, f"{line}\nx = 1\n")
    assert message in out
    assert "UsageError" in out
    assert workspace(ip).runs() == []


@pytest.mark.parametrize("setup, why", [
    ("gen = (i for i in range(3))", "generator"),
    ("import threading\ngen = threading.Lock()", "lock"),
    ("gen = open('f.txt', 'w')", "open file"),
])
def test_unpicklable_variables_are_named_before_anything_starts(ip, setup, why):
    cell(ip, setup)
    result, out = cell(ip, "%%train\nfor g in gen:\n    pass\n")
    gen = ip.user_ns["gen"]
    if hasattr(gen, "close"):
        gen.close()
    assert "notebook variable 'gen'" in out and why in out
    assert workspace(ip).runs() == []


def test_params_are_typed():
    assert parse_param("lr=0.01") == ("lr", 0.01)
    assert parse_param("epochs=30") == ("epochs", 30)
    assert parse_param("aug=True") == ("aug", True) and parse_param("aug=false")[1] is False
    assert parse_param("name=resnet") == ("name", "resnet")
    assert parse_param("sizes=[64,128]") == ("sizes", [64, 128])
    assert parse_param("sizes=64,128") == ("sizes", [64, 128])
    assert parse_param("path=/data/x") == ("path", "/data/x")
    assert parse_param("w=None") == ("w", None)


def test_no_wait_returns_the_handle_and_attach_brings_values_back(ip):
    result, out = cell(ip, "%%train --no-wait --out total\nimport time\ntime.sleep(1)\n"
                           "total = 42\n")
    run = result.result
    assert isinstance(run, Run) and "%train attach" in out
    assert "total" not in ip.user_ns
    result, out = cell(ip, f"%train attach {run.id}")
    assert result.error_in_exec is None, out
    assert ip.user_ns["total"] == 42 and run.status == states.COMPLETED


def test_a_results_file_the_run_made_a_link_is_refused_not_followed(ip, tmp_path):
    """The container can write its telemetry folder: a cell-results.pkl that is a link (here to
    a results file of the attacker's choosing outside the run) is not read, and says so."""
    result, out = cell(ip, "%%train --out total\ntotal = 42\n")
    assert result.error_in_exec is None, out
    run = workspace(ip).runs()[0]
    results = run.folder / "telemetry" / "cell-results.pkl"
    elsewhere = tmp_path / "elsewhere.pkl"
    os.rename(results, elsewhere)
    os.symlink(elsewhere, results)
    ip.user_ns["total"] = 0
    result, out = cell(ip, f"%train attach {run.id}")
    assert "is a link or not a plain file: it is not read" in out
    assert str(results) in out
    assert ip.user_ns["total"] == 0                    # nothing came back through the link


def _interrupt_when_running(ws, delay=0.3):
    """Send SIGINT to this process (as Jupyter's interrupt does) once a run is Running."""
    def fire():
        deadline = time.time() + 60
        while time.time() < deadline:
            runs = ws.runs()
            if runs and runs[0].status == states.RUNNING and "started" in runs[0].logs():
                time.sleep(delay)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)
    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


SLOW = "%%train{opts}\nimport time\nprint('started', flush=True)\ntime.sleep(30)\n"


def test_interrupt_stops_the_waiting_not_the_run(ip):
    thread = _interrupt_when_running(workspace(ip))
    result, out = cell(ip, SLOW.format(opts=""))
    thread.join()
    assert isinstance(result.error_in_exec, StoppedWaiting)
    run = workspace(ip).runs()[0]
    assert "stopped waiting" in out and f"%train attach {run.id}" in out
    assert f"%train cancel {run.id}" in out
    assert run.status == states.RUNNING
    result, out = cell(ip, f"%train cancel {run.id}")
    assert run.status == states.CANCELED


def test_cancel_on_interrupt_cancels_the_run(ip):
    thread = _interrupt_when_running(workspace(ip))
    result, out = cell(ip, SLOW.format(opts=" --cancel-on-interrupt"))
    thread.join()
    assert isinstance(result.error_in_exec, StoppedWaiting)
    assert workspace(ip).runs()[0].status == states.CANCELED
    assert "was canceled" in out


def test_tqdm_and_progress_report_to_the_run(ip):
    result, out = cell(ip, """%%train -o r
from tqdm import tqdm
for i in tqdm(range(40)):
    pass
for j in progress(range(7)):
    log("j", j)
""")
    assert result.error_in_exec is None, out
    run = ip.user_ns["r"]
    assert run.metrics() == {"j": [float(j) for j in range(7)]}
    assert run.record["progress"]["done"] is True


def test_tqdm_bar_reports_its_progress(ip):
    result, out = cell(ip, """%%train -o r
from tqdm import tqdm
for i in tqdm(range(25), desc="batches"):
    pass
""")
    assert result.error_in_exec is None, out
    progress = ip.user_ns["r"].record["progress"]
    assert progress["n"] == 25 and progress["total"] == 25 and progress["done"] is True


def test_line_magic_list_show_logs_config_and_rerun(ip):
    cell(ip, "%%train --param k=2 --out v -o first\nv = k * 10\nprint('value', v)\n")
    first = ip.user_ns["first"]
    _, out = cell(ip, "%train list")
    assert first.id in out and "Completed" in out
    _, out = cell(ip, f"%train show {first.id}")
    assert "status      Completed" in out and '"k": 2' in out
    _, out = cell(ip, f"%train logs {first.id}")
    assert "value 20" in out
    result, out = cell(ip, f"%train rerun {first.id} --param k=5")
    assert result.error_in_exec is None, out
    assert ip.user_ns["v"] == 50
    second = workspace(ip).runs()[0]
    assert second.params == {"k": 5} and second.tags["rerun_of"] == first.id
    _, out = cell(ip, "%train config")
    assert "experiment  magics" in out
    _, out = cell(ip, "%train config colour=red")
    assert "KEY=VALUE with KEY one of" in out
    _, out = cell(ip, "%train frobnicate")
    assert "use one of list, show, logs, attach, cancel, rerun, config" in out
    _, out = cell(ip, "%train show nosuchrun")
    assert "no run 'nosuchrun'" in out


def test_help_shows_options_with_examples(ip):
    doc = ip.find_cell_magic("train").__doc__
    for text in ("--param", "--out", "--no-wait", "--cancel-on-interrupt", "--target",
                 "--pip", "--requirements", "--image", "In [2]: %%train", "%train rerun"):
        assert text in doc
    _, out = cell(ip, "%%train?")
    assert "--param NAME=VALUE" in out and "In [2]: %%train --experiment birds" in out


def test_local_modules_of_the_notebook_folder_travel(ip, tmp_path):
    (tmp_path / "helpers_mg.py").write_text("def double(x):\n    return 2 * x\n")
    result, out = cell(ip, "%%train --out d\nimport helpers_mg\nd = helpers_mg.double(21)\n")
    assert result.error_in_exec is None, out
    assert ip.user_ns["d"] == 42


# -- real Docker ------------------------------------------------------------------------------
@pytest.mark.docker
def test_docker_round_trip_with_torch_module_on_the_cpu(ip, docker_workspace):
    ip.run_line_magic("train", f"config workspace={docker_workspace.path} target=docker")
    cell(ip, "import torch\nfrom torch import nn\ndef make_model():\n"
             "    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))\n")
    result, out = cell(ip, """%%train --gpus none --param epochs=3 --out model losses -o r
torch.manual_seed(0)
model = make_model()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(32, 3), torch.randn(32, 1)
losses = []
for epoch in progress(range(epochs)):
    loss = nn.functional.mse_loss(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
    losses.append(loss.item())
    log("loss", loss.item(), step=epoch)
len(losses)
""")
    assert result.error_in_exec is None, out
    assert result.result == 3
    model = ip.user_ns["model"]
    assert isinstance(model, ip.user_ns["nn"].Sequential)
    assert next(model.parameters()).device.type == "cpu"
    run = ip.user_ns["r"]
    assert run.record["target"] == "docker" and run.record["image"]
    assert len(run.metrics()["loss"]) == 3


@pytest.mark.docker
def test_docker_failure_traceback_and_pre_launch_python_check(ip, docker_workspace,
                                                             docker_client):
    import json
    import sys
    ip.run_line_magic("train", f"config workspace={docker_workspace.path} target=docker")
    cell(ip, "def boom(v):\n    raise ValueError(f'bad value {v}')\n")
    result, out = cell(ip, "%%train --gpus none\nx = 3\nboom(x)\n")
    number = ip.execution_count - 1  # the %%train cell's own number
    assert isinstance(result.error_in_exec, CellRunFailed), out
    assert f"Cell In[{number}], line 3, in <module>\n    boom(x)" in out
    assert "ValueError: bad value 3" in out
    # The image's Python is asked once per image id and cached in the workspace: make the
    # cache say the image has another Python and the cell is refused before anything starts.
    image_id = docker_client.images.get("celltrain/base:offline").id
    cache = docker_workspace.path / "cache" / "images" / f"{image_id.replace(':', '-')}.json"
    facts = json.loads(cache.read_text())
    assert facts["python"][:2] == list(sys.version_info[:2])
    cache.write_text(json.dumps({**facts, "python": [3, 8, 18]}))
    count = len(docker_workspace.runs())
    result, out = cell(ip, "%%train --gpus none --image celltrain/base:offline\nboom(1)\n")
    assert "runs Python 3.8, but this kernel runs" in out and "--image" in out
    assert len(docker_workspace.runs()) == count


def test_docker_down_is_a_clear_error_and_starts_nothing(ip, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result, out = cell(ip, "%%train --target docker\nx = 1\n")
    assert "Docker is not reachable at unix:///nonexistent/docker.sock" in out
    assert workspace(ip).runs() == []


@pytest.mark.docker
def test_docker_pins_what_the_image_lacks_and_tqdm_reports(ip, docker_workspace):
    """tqdm is in the kernel, not in the offline image: it is pinned, built once, cached."""
    from importlib.metadata import version
    ip.run_line_magic("train", f"config workspace={docker_workspace.path} target=docker")
    result, out = cell(ip, """%%train --gpus none -o r
import torch
from tqdm import tqdm
for i in tqdm(range(30), desc="batches"):
    pass
""")
    assert result.error_in_exec is None, out
    assert f"pinning to this kernel's versions: tqdm=={version('tqdm')}" in out
    assert "torch==" not in out   # the image has the kernel's torch: not reinstalled
    run = ip.user_ns["r"]
    assert run.record["image"].startswith("celltrain/env:")
    progress = run.record["progress"]
    assert progress["n"] == 30 and progress["total"] == 30 and progress["done"] is True


def test_magic_help_starts_with_the_usage_not_a_stray_colon_pair(ip):
    """`%%train?` and `%%sweep?` show IPython's help text: it starts with the usage line."""
    for name in ("train", "sweep"):
        doc = ip.find_cell_magic(name).__doc__
        assert not doc.lstrip().startswith("::"), doc[:40]
        assert doc.lstrip().startswith((f"%{name} [--", f"%{name} --")), doc[:40]
        assert "--experiment" in doc


def test_train_config_warm_switches_warm_starts_for_the_session(ip, monkeypatch):
    monkeypatch.setenv("CELLTRAIN_WARM", "1")
    _, out = cell(ip, "%train config warm=maybe")
    assert "%train config warm=maybe: use on or off" in out
    cell(ip, "%train config warm=off")
    try:
        cell(ip, "%%train -o off_run\nv = 1\n")
        assert ip.user_ns["off_run"].record["spec"]["warm"] is False
        cell(ip, "%train config warm=on")
        cell(ip, "%%train -o on_run\nv = 1\n")
        assert ip.user_ns["on_run"].record["spec"]["warm"] is True
    finally:
        ip.run_line_magic("train", "config warm=")
