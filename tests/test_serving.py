"""Serving a registered model over the Open Inference Protocol v2, in real containers.

The model comes from a real local run (a tiny CNN), is registered and exported to ONNX; the
deployments are real Docker containers (one shared by most tests, with an Azure-style score.py)
answering real HTTP.  Nothing is mocked.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from procs import until

from celltrain import Workspace
from celltrain.cli import main as cli
from celltrain.serving import DeploymentError
from celltrain.workspace import supervisor_alive

NET = """
import torch

class ServeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
"""

TRAIN = """
import os, torch
from serve_net import ServeNet
torch.manual_seed(0)
os.makedirs("outputs", exist_ok=True)
net = ServeNet()
torch.save(net.state_dict(), "outputs/model.pt")
torch.jit.script(net.eval()).save("outputs/scripted.pt")
"""

# An entry script written for Azure ML: init() finds the weights through AZUREML_MODEL_DIR.
SCORE = """
import json, os, torch
from serve_net import ServeNet

def init():
    global model, seen
    seen = {k: os.environ.get(k) for k in ("AZUREML_MODEL_DIR", "CELLTRAIN_MODEL_DIR")}
    model = ServeNet()
    model.load_state_dict(torch.load(os.path.join(os.environ["AZUREML_MODEL_DIR"],
                                                  "model.pt")))
    model.eval()

def run(raw_data):
    data = json.loads(raw_data)
    if data.get("crash"):
        return 1 / 0
    with torch.no_grad():
        out = model(torch.tensor(data["data"], dtype=torch.float32))
    return {"predictions": out.tolist(), "model_dir": seen["AZUREML_MODEL_DIR"],
            "same_dir": seen["AZUREML_MODEL_DIR"] == seen["CELLTRAIN_MODEL_DIR"],
            "files": sorted(os.listdir(seen["CELLTRAIN_MODEL_DIR"]))}
"""

SHAPE = (3, 8, 8)


def torch_net(version):
    from serve_net import ServeNet
    return version.load(model=ServeNet())


def http(method, url, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def infer_body(x, name="input", datatype="FP32", shape=None):
    return {"inputs": [{"name": name, "datatype": datatype,
                        "shape": list(x.shape) if shape is None else shape,
                        "data": x.ravel().tolist()}]}


@pytest.fixture(scope="module")
def model(tmp_path_factory, docker_client, offline_image):
    root = tmp_path_factory.mktemp("serving")
    src = root / "src"
    src.mkdir()
    (src / "serve_net.py").write_text(NET)
    (src / "train.py").write_text(textwrap.dedent(TRAIN))
    (src / "score.py").write_text(textwrap.dedent(SCORE))
    ws = Workspace(root / "ws")
    run = ws.experiment("serving").submit("train.py", src, target="local")
    assert run.wait(timeout=120) == "Completed", run.logs()
    sys.path.insert(0, str(src))
    version = run.register_model("tiny", "outputs/model.pt", aliases=["production"])
    from serve_net import ServeNet
    version.export_onnx(torch.randn(1, *SHAPE), model=ServeNet())
    yield ws, version, src
    sys.path.remove(str(src))
    for d in ws.deployments(all_versions=True):
        d.stop()
    import docker
    label = {"label": f"celltrain.workspace={ws.path}"}
    for c in docker_client.api.containers(all=True, quiet=True, filters=label):
        try:
            docker_client.api.remove_container(c["Id"], force=True)
        except docker.errors.APIError:
            pass


@pytest.fixture(scope="module")
def birds(model):
    """The shared deployment: the ONNX artifact in a container, plus score.py for /score."""
    ws, version, src = model
    svc = ws.model("tiny", alias="production").deploy(
        "birds", entry_script="score.py", source_dir=src, max_latency_ms=20)
    return svc


def test_predict_matches_torch_and_the_port_is_bound_to_localhost(birds, model, docker_client):
    ws, version, _ = model
    assert birds.state == "Healthy" and birds.url.startswith("http://127.0.0.1:")
    x = np.random.default_rng(0).random((4, *SHAPE), dtype=np.float32)
    expected = torch_net(version)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(birds.predict(x), expected, atol=1e-4)
    np.testing.assert_allclose(birds.predict(torch.from_numpy(x[:1])), expected[:1], atol=1e-4)
    container = docker_client.containers.get(birds.record["handle"]["ids"]["container"])
    bindings = container.attrs["HostConfig"]["PortBindings"]["8080/tcp"]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": birds.url.rsplit(":", 1)[1]}]
    assert ws.deployment("birds").model == f"tiny:{version.version}"


def test_plain_http_speaks_the_open_inference_protocol(birds, model):
    ws, version, _ = model
    url = birds.url
    assert http("GET", url + "/v2/health/live") == (200, {"live": True})
    assert http("GET", url + "/v2/health/ready") == (200, {"ready": True})
    code, meta = http("GET", url + "/v2/models/tiny")
    assert code == 200 and meta["name"] == "tiny" and meta["versions"] == [str(version.version)]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, *SHAPE]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 2]}]
    x = np.ones((2, *SHAPE), dtype=np.float32)
    code, answer = http("POST", f"{url}/v2/models/tiny/versions/{version.version}/infer",
                        {"id": "req-7", **infer_body(x)})
    assert code == 200 and answer["id"] == "req-7" and answer["model_name"] == "tiny"
    out = answer["outputs"][0]
    assert out["name"] == "output" and out["datatype"] == "FP32" and out["shape"] == [2, 2]
    expected = torch_net(version)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(np.reshape(out["data"], (2, 2)), expected, atol=1e-4)
    code, stats = http("GET", f"{url}/v2/models/tiny/stats")   # the statistics extension
    counts = stats["model_stats"][0]
    assert code == 200 and counts["name"] == "tiny" and counts["version"] == str(version.version)
    assert counts["inference_count"] >= 2 and 1 <= counts["execution_count"] \
        <= counts["inference_count"]
    code, body = http("POST", f"{url}/v2/models/other/infer", infer_body(x))
    assert code == 404 and "serves 'tiny'" in body["error"]
    code, body = http("POST", f"{url}/v2/models/tiny/versions/99/infer", infer_body(x))
    assert code == 404 and "no version '99'" in body["error"]


def test_the_binary_data_extension_sends_raw_tensor_bytes(birds, model):
    """Triton's and KServe's extension: the JSON part's length in a header, then the bytes."""
    ws, version, _ = model
    x = np.random.default_rng(3).random((2, *SHAPE), dtype=np.float32)
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, *SHAPE],
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": "output", "parameters": {"binary_data": True}}]})
    req = urllib.request.Request(f"{birds.url}/v2/models/tiny/infer",
                                 data=head.encode() + x.tobytes(), method="POST",
                                 headers={"Inference-Header-Content-Length": str(len(head))})
    with urllib.request.urlopen(req, timeout=30) as resp:
        split = int(resp.headers["Inference-Header-Content-Length"])
        data = resp.read()
    answer = json.loads(data[:split])
    out = answer["outputs"][0]
    assert out["parameters"] == {"binary_data_size": 16} and "data" not in out
    expected = torch_net(version)(torch.from_numpy(x)).detach().numpy()
    got = np.frombuffer(data[split:], dtype="<f4").reshape(out["shape"])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    short = urllib.request.Request(f"{birds.url}/v2/models/tiny/infer",
                                   data=head.encode() + x.tobytes()[:100], method="POST",
                                   headers={"Inference-Header-Content-Length": str(len(head))})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(short, timeout=30)
    assert e.value.code == 400
    assert "binary_data_size 1536 runs past the 100 bytes left" in \
        json.loads(e.value.read())["error"]


def test_bad_shapes_and_datatypes_get_400_naming_the_input(birds):
    infer = f"{birds.url}/v2/models/tiny/infer"
    x = np.ones((1, 3, 9, 9), dtype=np.float32)
    code, body = http("POST", infer, infer_body(x))
    assert code == 400
    assert body["error"] == ("input 'input' has shape [1, 3, 9, 9]; the model expects "
                             "[-1, 3, 8, 8] (-1: any size)")
    x = np.ones((1, *SHAPE), dtype=np.int64)
    code, body = http("POST", infer, infer_body(x, datatype="INT64"))
    assert code == 400 and body["error"] == ("input 'input' has datatype 'INT64'; the model "
                                             "expects FP32")
    code, body = http("POST", infer, infer_body(np.ones(5, np.float32), shape=[1, *SHAPE]))
    assert code == 400 and "has 5 values in 'data' but shape [1, 3, 8, 8] needs 192" in \
        body["error"]
    code, body = http("POST", infer, infer_body(np.ones((1, *SHAPE), np.float32), name="img"))
    assert code == 400 and body["error"] == "the model has no input 'img'; its inputs: input"
    req = urllib.request.Request(infer, data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400 and "not JSON" in json.loads(e.value.read())["error"]
    assert birds.state == "Healthy"


def test_an_azure_style_score_py_answers_through_score(birds, model):
    ws, version, _ = model
    x = np.random.default_rng(1).random((3, *SHAPE), dtype=np.float32)
    answer = birds.score({"data": x.tolist()})
    expected = torch_net(version)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(answer["predictions"], expected, atol=1e-4)
    assert answer["same_dir"] and answer["files"] == ["model.pt"]
    assert birds.scoring_uri == birds.url + "/score"


def test_a_crashing_run_gets_500_with_the_traceback_in_the_logs_and_the_server_stays_up(birds):
    code, body = http("POST", birds.scoring_uri, {"crash": True})
    assert code == 500 and "ZeroDivisionError" in body["error"]
    until(lambda: "ZeroDivisionError: division by zero" in birds.logs(), "the traceback in logs")
    assert 'in run' in birds.logs()
    assert http("GET", birds.url + "/v2/health/ready") == (200, {"ready": True})
    assert len(birds.score({"data": np.zeros((1, *SHAPE)).tolist()})["predictions"]) == 1


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(birds, model):
    ws, version, _ = model
    rng = np.random.default_rng(2)
    xs = [rng.random((1, *SHAPE), dtype=np.float32) for _ in range(16)]
    answers, errors = [None] * 16, []
    barrier = threading.Barrier(16)

    def client(i):
        barrier.wait()
        try:
            answers[i] = birds.predict(xs[i])
        except Exception as e:  # noqa: BLE001  (shown by the assert below)
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    net = torch_net(version)
    for x, got in zip(xs, answers):
        np.testing.assert_allclose(got, net(torch.from_numpy(x)).detach().numpy(), atol=1e-4)
    until(lambda: birds.stats_raw().get("serve/max_batch", 0) > 1, "a batch of several")


def test_stats_reach_the_store_and_the_cli(birds, capsys):
    until(lambda: birds.stats["requests"] >= 3 and birds.stats["errors"] >= 1,
          "the request counts in the store")
    stats = ws_stats = birds.stats
    assert stats["latency_p50_ms"] > 0 and stats["latency_p95_ms"] >= stats["latency_p50_ms"]
    listed = {d.name: d.summary() for d in birds.workspace.deployments()}
    assert listed["birds"]["state"] == "Healthy" and listed["birds"]["url"] == birds.url
    assert listed["birds"]["requests"] >= ws_stats["requests"]
    assert cli(["-w", str(birds.workspace.path), "deployments"]) == 0
    out = capsys.readouterr().out
    assert "birds" in out and "Healthy" in out and birds.url in out
    from celltrain.server.deployments import deployments
    from celltrain.server.manager import CelltrainManager
    shown = {d["name"]: d for d in deployments(CelltrainManager(birds.workspace.path))}
    assert shown["birds"]["state"] == "Healthy" and shown["birds"]["run"] == birds.run_id
    assert shown["birds"]["requests"] >= 3      # what the sidebar's Deployments section shows


def test_auth_needs_the_bearer_token_on_every_request(model):
    ws, version, _ = model
    svc = version.deploy("guarded", auth=True)
    try:
        assert svc.token and svc.token not in json.dumps(svc.record["tags"])
        for path in ("/v2/health/ready", "/v2/models/tiny"):
            code, body = http("GET", svc.url + path)
            assert code == 401 and "Authorization: Bearer" in body["error"]
        assert http("GET", svc.url + "/v2/health/ready", token="wrong")[0] == 401
        assert http("GET", svc.url + "/v2/health/ready", token=svc.token) == (200,
                                                                             {"ready": True})
        x = np.ones((1, *SHAPE), dtype=np.float32)
        assert svc.predict(x).shape == (1, 2)
    finally:
        assert svc.stop() == "Stopped"


def test_on_the_hosts_network_the_server_binds_localhost_itself_without_docker_proxy(
        model, docker_client):
    """network="host": no published port (no userland proxy copying every byte); the server
    listens on the host's 127.0.0.1:port itself."""
    ws, version, _ = model
    svc = version.deploy("direct", network="host")
    try:
        port = svc.url.rsplit(":", 1)[1]
        assert svc.state == "Healthy" and svc.url.startswith("http://127.0.0.1:")
        container = docker_client.containers.get(svc.record["handle"]["ids"]["container"])
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert not container.attrs["HostConfig"]["PortBindings"]
        assert f"ready on 127.0.0.1:{port} " in svc.logs()
        x = np.random.default_rng(5).random((2, *SHAPE), dtype=np.float32)
        expected = torch_net(version)(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(svc.predict(x), expected, atol=1e-4)
    finally:
        assert svc.stop() == "Stopped"


def test_a_model_that_fails_to_load_leaves_the_deployment_failed_with_the_reason(model,
                                                                               docker_client):
    ws, version, _ = model
    plain = version.run.register_model("weights-only", "outputs/model.pt")  # no ONNX artifact
    with pytest.raises(DeploymentError, match="state dict"):
        plain.deploy("broken")
    failed = ws.deployment("broken")
    assert failed.state == "Failed"
    assert "the model failed to load" in failed.reason and "export_onnx" in failed.reason
    label = {"label": f"celltrain.run={failed.run_id}"}
    until(lambda: docker_client.api.containers(all=True, quiet=True, filters=label) == [],
          "the failed deployment's container removed")


def test_bad_arguments_are_refused_naming_the_value(birds, model):
    ws, version, _ = model
    with pytest.raises(ValueError, match="lower-case letters.*not 'Bad_Name'"):
        version.deploy("Bad_Name")
    with pytest.raises(ValueError, match="port takes a number from 1 to 65535.*not 0"):
        version.deploy("x", port=0)
    with pytest.raises(ValueError, match="max_batch_size takes a whole number >= 1.*not 0"):
        version.deploy("x", max_batch_size=0)
    with pytest.raises(ValueError, match="network='my net!' is not a network: pass one of"):
        version.deploy("x", network="my net!")
    with pytest.raises(DeploymentError, match="'birds' is already Healthy at http://127"):
        version.deploy("birds")
    with pytest.raises(FileNotFoundError, match="entry_script 'nope.py' is not in source_dir"):
        version.deploy("x", entry_script="nope.py", source_dir=model[2])
    with pytest.raises(DeploymentError, match="no deployment 'ghost'.*there are: .*birds"):
        ws.deployment("ghost")


def test_the_local_target_serves_too_and_the_cli_serves_by_alias(model, capsys):
    ws, version, _ = model
    assert cli(["-w", str(ws.path), "serve", "tiny:production", "--name", "on-host",
                "--target", "local"]) == 0
    out = capsys.readouterr().out
    assert "on-host: Healthy at http://127.0.0.1:" in out
    svc = ws.deployment("on-host")
    x = np.ones((2, *SHAPE), dtype=np.float32)
    np.testing.assert_allclose(svc.predict(x), torch_net(version)(torch.from_numpy(x))
                               .detach().numpy(), atol=1e-4)
    assert cli(["-w", str(ws.path), "stop-deployment", "on-host"]) == 0
    assert svc.state == "Stopped"
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(svc.url + "/v2/health/live", timeout=5)


def test_a_torchscript_file_without_onnx_is_served_by_torch(model):
    ws, version, _ = model
    scripted = version.run.register_model("scripted", "outputs/scripted.pt")
    svc = scripted.deploy("scripted", target="local")
    try:
        meta = svc.metadata()
        assert meta["platform"] == "pytorch_torchscript"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1]}]
        x = np.random.default_rng(4).random((3, *SHAPE), dtype=np.float32)
        np.testing.assert_allclose(svc.predict(x), torch_net(version)(torch.from_numpy(x))
                                   .detach().numpy(), atol=1e-4)
    finally:
        svc.stop()


def _supervisor_pid(run_id: str) -> int:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"celltrain.supervisor" in argv and run_id.encode() in argv:
            return int(pid)
    # a spare supervisor carries the run: find it by the lock it holds
    raise LookupError(run_id)


def test_a_killed_supervisor_is_replaced_on_open_and_stop_removes_the_container(
        birds, model, docker_client):
    """Last: it ends the shared deployment."""
    ws, version, _ = model
    run_dir = ws.store.run_dir(birds.run_id)
    pid = _supervisor_pid_or_lock_holder(run_dir, birds.run_id)
    os.kill(pid, signal.SIGKILL)
    until(lambda: not supervisor_alive(run_dir), "the supervisor's death")
    x = np.ones((1, *SHAPE), dtype=np.float32)
    assert birds.predict(x).shape == (1, 2)          # the container outlives its supervisor
    reopened = Workspace(ws.path)                    # reconciles: a new supervisor adopts it
    until(lambda: supervisor_alive(run_dir), "a new supervisor")
    again = reopened.deployment("birds")
    assert again.state == "Healthy" and again.predict(x).shape == (1, 2)
    assert again.stop() == "Stopped"
    label = {"label": f"celltrain.run={again.run_id}"}
    # one list call: containers.list() inspects each one and fails on one removed meanwhile
    until(lambda: docker_client.api.containers(all=True, quiet=True, filters=label) == [],
          "the stopped deployment's container removed")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(again.url + "/v2/health/live", timeout=5)


def _supervisor_pid_or_lock_holder(run_dir, run_id: str) -> int:
    """The pid of the run's supervisor: its command line names the run, or (a spare handed
    the run) it holds the run's supervisor.lock, which /proc/locks shows by inode."""
    try:
        return _supervisor_pid(run_id)
    except LookupError:
        pass
    inode = os.stat(run_dir / "supervisor.lock").st_ino
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
                return int(fields[4])
    raise LookupError(f"no supervisor holds {run_dir}/supervisor.lock")
