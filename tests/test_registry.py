"""The model registry on real runs: versions, lineage, aliases, paths, atomicity, load, CLI.

Runs are real local-target runs (a real supervisor and process) whose script saves a small CNN
into ./outputs; one test uses a real Docker container to show the image digest in the lineage.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from celltrain import Workspace
from celltrain.registry import (ModelLoadError, ModelNotFound, ModelRegistrationError,
                                register_model)

TINYNET = """
import torch

class TinyNet(torch.nn.Module):
    def __init__(self, classes=2):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3)))
"""

TRAIN = """
import os, sys, torch
from celltrain import Run
from tinynet import TinyNet

run = Run.get_context()
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
torch.manual_seed(seed)
net = TinyNet()
for step in range(3):
    run.log("loss", 1.0 / (step + 1 + seed))
run.log("accuracy", 0.5 + seed / 10)
os.makedirs("outputs/checkpoint", exist_ok=True)
torch.save(net.state_dict(), "outputs/model.pt")
torch.save(net, "outputs/full.pt")
torch.save(net.state_dict(), "outputs/checkpoint/weights.pth")
with open("outputs/checkpoint/labels.json", "w") as f:
    f.write('["chicken", "turkey"]')
"""


def write_source(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tinynet.py").write_text(TINYNET)
    (folder / "train.py").write_text(textwrap.dedent(TRAIN))
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace with two completed local runs (seeds 0 and 1) that saved models."""
    root = tmp_path_factory.mktemp("registry")
    src = write_source(root / "src")
    ws = Workspace(root / "ws")
    exp = ws.experiment("birds")
    runs = [exp.submit("train.py", src, args=[seed], target="local") for seed in (0, 1)]
    for run in runs:
        assert run.wait(timeout=120) == "Completed", run.logs()
    sys.path.insert(0, str(src))  # TinyNet for loading, as a notebook would import it
    yield ws, runs
    sys.path.remove(str(src))


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_dirs(ws) -> list[str]:
    return sorted(p.relative_to(ws.store.models_dir).as_posix()
                  for p in ws.store.models_dir.rglob("*") if p.is_dir())


def test_versions_increment_and_record_lineage(trained):
    ws, (run1, run2) = trained
    v1 = run1.register_model("lineage", path="outputs/model.pt", tags={"data": "fowl"},
                             description="first try")
    v2 = register_model(run2, "lineage", "./outputs/model.pt")
    v3 = run1.register_model("lineage", "outputs/checkpoint")
    assert [v1.version, v2.version, v3.version] == [1, 2, 3]

    r = v1.record
    assert r["run_id"] == run1.id and v1.run == run1 and v1.experiment == "birds"
    assert v1.metrics == run1.latest_metrics() == {"loss": pytest.approx(1 / 3),
                                                   "accuracy": 0.5}
    assert v1.environment == run1.record["environment"]
    assert v1.tags == {"data": "fowl"} and v1.description == "first try"
    assert v1.sha256 == sha256_of(run1.folder / "outputs/model.pt")
    assert v1.image_digest is None  # a local run has no image; see the Docker test
    # lineage points at the run that made each version
    assert v2.run_id == run2.id and v2.metrics["accuracy"] == pytest.approx(0.6)
    assert v2.sha256 == sha256_of(run2.folder / "outputs/model.pt") != v1.sha256
    assert v3.files() == ["checkpoint/labels.json", "checkpoint/weights.pth"]
    assert v3.verify()

    assert ws.model("lineage") == v3  # latest by default
    assert ws.model("lineage", version=2) == v2
    entry = next(m for m in ws.models() if m["name"] == "lineage")
    assert entry["versions"] == [1, 2, 3] and entry["latest"] == 3 and entry["aliases"] == {}


def test_aliases_move_and_latest_is_implicit(trained):
    ws, (run1, run2) = trained
    v1 = run1.register_model("aliased", "outputs/model.pt", aliases=["staging"])
    v2 = run2.register_model("aliased", "outputs/model.pt")
    assert ws.model("aliased", alias="staging") == v1
    v1.set_alias("production")
    assert ws.model("aliased", alias="production") == v1
    v2.set_alias("production")  # moving it
    assert ws.model("aliased", alias="production") == v2
    assert v1.aliases == ["staging"] and v2.aliases == ["production"]
    assert ws.model("aliased", alias="latest") == v2
    assert next(m for m in ws.models() if m["name"] == "aliased")["aliases"] == {
        "production": 2, "staging": 1}

    with pytest.raises(ValueError, match="'latest' is implicit"):
        v1.set_alias("latest")
    with pytest.raises(ValueError, match="alias 'prod uction' is not allowed"):
        v1.set_alias("prod uction")
    with pytest.raises(ModelNotFound, match=r"no alias 'canary' \(its aliases: production -> "
                                            r"v2, staging -> v1"):
        ws.model("aliased", alias="canary")
    with pytest.raises(ValueError, match="not both"):
        ws.model("aliased", version=1, alias="staging")
    # a failed alias at registration leaves no version behind
    with pytest.raises(ValueError, match="alias '3' is not allowed"):
        run1.register_model("aliased", "outputs/model.pt", aliases=["3"])
    assert ws.model("aliased") == v2
    v1.remove_alias("staging")
    assert v1.aliases == []


def test_wrong_path_lists_the_files_that_exist_and_writes_nothing(trained):
    ws, (run1, _) = trained
    before = model_dirs(ws)
    with pytest.raises(ModelRegistrationError) as info:
        run1.register_model("pathless", path="model.pt")
    message = str(info.value)
    assert "could not find 'model.pt'" in message
    assert "Did you mean 'outputs/model.pt'" in message
    assert "outputs/full.pt" in message and "outputs/checkpoint/weights.pth" in message
    with pytest.raises(ModelRegistrationError, match="Did you mean 'outputs/model.pt'"):
        run1.register_model("pathless", path="/celltrain-run/src/outputs/model.pt")
    for bad in ("/etc/passwd", "../../celltrain.db", ""):
        with pytest.raises(ModelRegistrationError, match="relative to the run's folder"):
            run1.register_model("pathless", path=bad)
    assert model_dirs(ws) == before
    with pytest.raises(ModelNotFound, match="no model named 'pathless'"):
        ws.model("pathless")


def test_registration_is_atomic(trained, monkeypatch):
    """A failure at the last step (the rename into place) and one while copying: nothing is
    left, not a row, not a folder, and the next registration gets the next number.
    The failures are injected (a full disk cannot be arranged in a test)."""
    ws, (run1, _) = trained
    run1.register_model("atomic", "outputs/model.pt")
    before = model_dirs(ws)
    import celltrain.registry.register as registering

    def failing_rename(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(registering.os, "rename", failing_rename)
    with pytest.raises(OSError, match="No space left"):
        run1.register_model("atomic", "outputs/model.pt", aliases=["production"])
    monkeypatch.undo()

    def failing_copy(*args, **kwargs):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(registering.shutil, "copytree", failing_copy)
    with pytest.raises(OSError, match="Input/output error"):
        run1.register_model("atomic", "outputs/checkpoint")
    monkeypatch.undo()

    assert model_dirs(ws) == before
    assert [m for m in ws.models() if m["name"] == "atomic"][0]["versions"] == [1]
    assert ws.store.conn.execute("SELECT COUNT(*) FROM model_aliases WHERE name='atomic'"
                                 ).fetchone()[0] == 0
    assert run1.register_model("atomic", "outputs/model.pt").version == 2


def test_concurrent_registrations_get_distinct_versions(trained):
    """Four registrations of one name at once (threads, each with its own connection)."""
    from concurrent.futures import ThreadPoolExecutor
    ws, (run1, run2) = trained
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(
            lambda i: (run1, run2)[i % 2].register_model("racing", "outputs/model.pt").version,
            range(4)))
    assert sorted(versions) == [1, 2, 3, 4]
    for v in versions:
        assert ws.model("racing", version=v).verify()


def test_bad_names_and_unknown_versions(trained):
    ws, (run1, _) = trained
    with pytest.raises(ValueError, match="model name 'my model' is not allowed"):
        run1.register_model("my model", "outputs/model.pt")
    with pytest.raises(ValueError, match=r"model name '\.\./escape' is not allowed"):
        run1.register_model("../escape", "outputs/model.pt")
    run1.register_model("known", "outputs/model.pt")
    with pytest.raises(ModelNotFound, match="Did you mean 'known'"):
        ws.model("knwon")
    with pytest.raises(ModelNotFound, match="has no version 7; its versions: 1"):
        ws.model("known", version=7)
    with pytest.raises(ValueError, match="use alias="):
        ws.model("known", version="production")


def test_unfinished_and_failed_runs_are_refused(trained, tmp_path):
    ws, _ = trained
    src = tmp_path / "bad"
    src.mkdir()
    (src / "train.py").write_text("raise SystemExit('no data found')\n")
    run = ws.experiment("broken").submit("train.py", src, target="local")
    assert run.wait(timeout=120) == "Failed"
    with pytest.raises(ModelRegistrationError, match=rf"(?s)run {run.id} is Failed .*no data "
                                                     "found.*only completed runs"):
        run.register_model("broken", "outputs/model.pt")

    (src / "slow.py").write_text("import time\ntime.sleep(60)\n")
    slow = ws.experiment("broken").submit("slow.py", src, target="local")
    try:
        with pytest.raises(ModelRegistrationError, match=r"is (Queued|Preparing|Starting|"
                                                         r"Running).*run.wait\(\)"):
            slow.register_model("broken", "outputs/model.pt")
    finally:
        slow.cancel(grace=1)
    with pytest.raises(ModelNotFound):
        ws.model("broken")


def test_download_and_load(trained, tmp_path):
    from tinynet import TinyNet
    ws, (run1, _) = trained
    m = run1.register_model("loadable", "outputs/model.pt")
    target = m.download(tmp_path / "model")
    assert target == tmp_path / "model" / "model.pt" and sha256_of(target) == m.sha256
    with pytest.raises(FileExistsError, match="exist_ok=True"):
        m.download(tmp_path / "model")
    m.download(tmp_path / "model", exist_ok=True)

    state = m.load()
    assert isinstance(state, dict) and "conv.weight" in state
    net = m.load(model=TinyNet())
    assert not net.training
    assert torch.equal(net.state_dict()["fc.weight"], state["fc.weight"])
    with pytest.raises(ModelLoadError, match="do not fit TinyNet"):
        m.load(model=TinyNet(classes=5))

    full = run1.register_model("loadable-full", "outputs/full.pt")
    with pytest.raises(ModelLoadError, match=r"pickled object \(it references "
                                             r"tinynet.TinyNet\).*weights_only=False"):
        full.load()
    module = full.load(weights_only=False)
    assert isinstance(module, TinyNet)
    assert torch.equal(module.fc.weight, state["fc.weight"])

    folder = run1.register_model("loadable-folder", "outputs/checkpoint")
    assert folder.download(tmp_path / "ckpt").joinpath("labels.json").exists()
    assert torch.equal(folder.load()["fc.weight"], state["fc.weight"])  # the one .pth


def test_archive_and_delete(trained):
    ws, (run1, run2) = trained
    v1 = run1.register_model("lifecycle", "outputs/model.pt")
    v2 = run2.register_model("lifecycle", "outputs/model.pt", aliases=["production"])
    v2.archive()
    assert ws.model("lifecycle") == v1  # latest skips archived versions
    assert ws.model("lifecycle", version=2).archived
    assert ws.model("lifecycle", alias="production") == v2  # an alias is explicit
    entry = next(m for m in ws.models() if m["name"] == "lifecycle")
    assert entry["versions"] == [1] and entry["archived"] == [2]
    v2.restore()
    assert ws.model("lifecycle") == v2

    with pytest.raises(ModelRegistrationError, match="'production' points at"):
        v2.delete()
    v2.remove_alias("production")
    folder = v2.folder
    v2.delete()
    assert not folder.exists()
    with pytest.raises(ModelNotFound, match="its versions: 1"):
        ws.model("lifecycle", version=2)
    assert run1.register_model("lifecycle", "outputs/model.pt").version == 3  # never reused
    assert not [p for p in ws.store.models_dir.iterdir() if p.name.startswith(".tmp-")]


def test_cli_lists_models(trained):
    ws, (run1, _) = trained
    run1.register_model("cli-model", "outputs/model.pt", aliases=["production"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-m", "celltrain.cli", "--workspace", str(ws.path),
                          "models"], capture_output=True, text=True, env=env, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("cli-model"))
    assert "production,latest" in line and run1.id in line and "accuracy=0.5" in line
    assert out.splitlines()[0].split()[:3] == ["MODEL", "VERSION", "ALIASES"]


def test_card_and_repr(trained):
    ws, (run1, _) = trained
    m = run1.register_model("carded", "outputs/model.pt", tags={"data": "fowl"},
                            aliases=["staging"])
    card = m._repr_html_()
    for part in ("carded", "v1", "staging", run1.id, "birds #", "accuracy = 0.5",
                 "model.pt", "data=fowl", "ws.model(&#x27;carded&#x27;, version=1)"):
        assert part in card, part
    assert repr(m) == f"<ModelVersion carded:1 aliases=staging run={run1.id}>"
    assert "carded" in ws.models()._repr_html_() and "carded" in repr(ws.models())
    from celltrain.registry import models_of_run
    assert m in models_of_run(ws, run1.id)


@pytest.mark.docker
def test_docker_run_lineage_has_the_image_digest(docker_workspace, tmp_path):
    """A model trained in a real container records the image it ran in."""
    src = write_source(tmp_path / "docker-src")
    run = docker_workspace.experiment("birds").submit("train.py", src, gpus="none")
    assert run.wait(timeout=300) == "Completed", run.reason
    m = run.register_model("from-docker", "outputs/model.pt")
    digest = run.record["image_digest"]
    assert digest and digest.startswith("sha256:")
    assert m.image_digest == digest and m.run_id == run.id
    assert json.loads(json.dumps(m.environment)) == run.record["environment"]
    assert m.sha256 == sha256_of(run.folder / "outputs/model.pt")
    assert "accuracy" in m.metrics


def test_train_magic_registers_and_the_run_summary_shows_it(tmp_path):
    """`%%train --register` in a real IPython shell (local target): the version appears, with
    its lineage, in the run widget's summary; a bad path is a clear error after the run."""
    from IPython.core.interactiveshell import InteractiveShell
    from celltrain.views.run_view import RunView
    from celltrain.views.summary import summary_html
    shell = InteractiveShell()
    shell.run_line_magic("load_ext", "celltrain")
    shell.run_cell("import os, torch")
    ws_path = tmp_path / "magic-ws"
    result = shell.run_cell(
        f"%%train --target local --workspace {ws_path} --register magic-birds -o run\n"
        "net = torch.nn.Linear(3, 2)\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "torch.save(net.state_dict(), 'outputs/model.pt')\n")
    assert result.error_in_exec is None, result.error_in_exec
    run = shell.user_ns["run"]
    ws = Workspace(ws_path)
    m = ws.model("magic-birds")
    assert m.version == 1 and m.run_id == run.id
    assert set(m.load()) == {"weight", "bias"}
    view = RunView(ws.store, run.id)
    view.poll()
    summary = view.summary()
    assert summary["models"] == [("magic-birds", 1)]
    assert "magic-birds v1" in summary_html(summary)

    result = shell.run_cell(f"%%train --target local --workspace {ws_path} --register "
                            "magic-birds --model-path outputs/missing.pt\nx = 1\n")
    assert "could not find 'outputs/missing.pt'" in str(result.error_in_exec)
    assert ws.model("magic-birds").version == 1
    result = shell.run_cell(f"%%train --target local --workspace {ws_path} --register "
                            "'bad/name'\nx = 1\n")
    assert "is not allowed" in str(result.error_in_exec)


def test_register_and_card_in_a_real_kernel(tmp_path):
    """A notebook run by a real kernel: `%%train --register`, then the version's card."""
    import nbformat
    from nbclient import NotebookClient
    code = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        code(f"%load_ext celltrain\n%train config workspace={tmp_path / 'ws'} target=local\n"
             "import os, torch\nfrom celltrain import Workspace"),
        code("%%train --register kernel-birds --model-path outputs/model.pt\n"
             "log('accuracy', 0.75)\nos.makedirs('outputs', exist_ok=True)\n"
             "torch.save(torch.nn.Linear(3, 2).state_dict(), 'outputs/model.pt')"),
        code(f"ws = Workspace({str(tmp_path / 'ws')!r})\nm = ws.model('kernel-birds')\n"
             "m.set_alias('production')\nm"),
        code("ws.models()"),
    ]
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for o in nb.cells[1].outputs
                      if o["output_type"] == "stream")
    assert "registered kernel-birds version 1 from run" in printed
    card = next(o["data"]["text/html"] for o in nb.cells[2].outputs
                if o["output_type"] == "execute_result")
    for part in ("kernel-birds", "v1", "production", "accuracy = 0.75", "model.pt"):
        assert part in card, part
    table = next(o["data"]["text/html"] for o in nb.cells[3].outputs
                 if o["output_type"] == "execute_result")
    assert "production-&gt;v1" in table
