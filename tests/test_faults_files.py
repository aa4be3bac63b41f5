"""Escape attempts through a run folder: links a run plants for the host to follow.

The container writes its telemetry folder (mounted) and ./outputs (copied back); the host reads
both as root.  A link there to a host file must never bring that file's text into a reason, the
CLI, the REST API or the run folder, must not crash the supervisor, and leaves a warning.  Real
Docker runs, real local processes, a real Jupyter Server.
"""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import time

import pytest

from celltrain import Environment, states
from celltrain.targets.docker.users import container_user
from celltrain.copyback import extract_tar
from celltrain.targets.docker.engine import LABEL_RUN
from celltrain.supervisor import Supervisor
from celltrain.workspace import new_run_id

pytest_plugins = ["pytest_jupyter.jupyter_server"]

SECRET = "root:$6$do-not-show-this-hash:19000:0:99999:7:::"

PLANT_FAILURE = """
import os, sys
os.symlink({secret!r}, os.path.join(os.environ["CELLTRAIN_TELEMETRY_DIR"], "failure.txt"))
print("planted the link", file=sys.stderr, flush=True)
sys.exit(3)
"""
LINKS_IN_OUTPUTS = """
import os
os.makedirs("outputs/sub", exist_ok=True)
open("outputs/model.txt", "w").write("weights")
os.symlink({target!r}, "outputs/passwd")             # absolute: leads out
os.symlink("../../../../../../etc/passwd", "outputs/up")   # relative, but leads out
os.symlink("model.txt", "outputs/latest")               # relative, stays inside: kept
os.symlink("../model.txt", "outputs/sub/model")         # up one, still inside: kept
print("saved")
"""


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "host-secret.txt"
    path.write_text(SECRET)
    return path


def cli(workspace, *args):
    return subprocess.run([sys.executable, "-m", "celltrain.cli", "-w", str(workspace.path),
                           *args], capture_output=True, text=True, timeout=120)


def containers_of(docker_client, run):
    return docker_client.api.containers(all=True, filters={"label": f"{LABEL_RUN}={run.id}"})


def wait_removed(docker_client, run, within=30.0):
    """The supervisor removes the container right after the run's end: give it that moment."""
    deadline = time.monotonic() + within
    while containers_of(docker_client, run) and time.monotonic() < deadline:
        time.sleep(0.2)
    return containers_of(docker_client, run)


def no_world_access(path) -> bool:
    return stat.S_IMODE(os.stat(path).st_mode) & 0o007 == 0


# -- failure.txt and stderr.log as links (finding 4) -------------------------------------------
@pytest.fixture
def jp_server_config(workspace):
    return {"ServerApp": {"jpserver_extensions": {"celltrain": True}},
            "CelltrainConfig": {"workspace": str(workspace.path), "reconcile": False}}


async def test_a_container_cannot_make_a_host_file_its_reason(docker_workspace, make_source,
                                                              secret, docker_client, jp_fetch):
    src = make_source(PLANT_FAILURE.format(secret=str(secret)))
    run = docker_workspace.experiment("escape").submit("train.py", src, gpus="none")
    assert run.wait(timeout=300) == states.FAILED
    assert os.path.islink(run.folder / "telemetry" / "failure.txt")   # the link was planted
    assert "do-not-show" not in run.reason
    assert "exit code 3" in run.reason and "planted the link" in run.reason
    assert any("failure.txt" in w and "not followed" in w for w in run.warnings), run.warnings
    shown = cli(docker_workspace, "show", run.id)
    assert shown.returncode == 0 and "exit code 3" in shown.stdout
    assert "do-not-show" not in shown.stdout
    # The REST API: the run JSON, its file listing (a link is listed as one) and its logs.
    body = (await jp_fetch("celltrain", "runs", run.id)).body.decode()
    assert "do-not-show" not in body
    detail = json.loads(body)
    assert "exit code 3" in detail["reason"]
    assert any("failure.txt" in w for w in detail["warnings"])
    files = {f["path"]: f for f in json.loads((await jp_fetch(
        "celltrain", "runs", run.id, "files")).body)["files"]}
    assert files["telemetry/failure.txt"]["size"] is None
    assert files["telemetry/failure.txt"]["link"] == str(secret)
    for log in ("stderr", "output"):
        text = (await jp_fetch("celltrain", "runs", run.id, "logs", params={"file": log})).body
        assert b"do-not-show" not in text
    assert not wait_removed(docker_client, run)


def test_failure_txt_and_stderr_log_links_are_not_read(workspace, secret):
    """Whatever planted them (a local run writes its run folder itself), the reason is made
    without following either link."""
    rec = workspace.store.create_run("links", run_id_for=new_run_id, status=states.RUNNING)
    folder = workspace.store.run_dir(rec["id"])
    (folder / "telemetry").mkdir(parents=True)
    os.symlink(secret, folder / "telemetry" / "failure.txt")
    os.symlink(secret, folder / "stderr.log")
    reason = Supervisor(workspace.path, rec["id"]).failure_reason(1)
    assert "do-not-show" not in reason
    assert reason == "exit code 1 (nothing on stderr)"
    os.unlink(folder / "telemetry" / "failure.txt")
    (folder / "telemetry" / "failure.txt").write_text("x" * 100_000)    # capped, not all read
    assert len(Supervisor(workspace.path, rec["id"]).failure_reason(1)) < 20_000


# -- links in ./outputs (finding 2, symlink side) ----------------------------------------------
def check_outputs(run, secret_text: str | None):
    """The run completed, kept its file and its inside links as links, skipped the others."""
    outputs = run.folder / "outputs"
    assert run.status == states.COMPLETED, run.reason
    assert (outputs / "model.txt").read_text() == "weights"
    assert os.readlink(outputs / "latest") == "model.txt"
    assert os.readlink(outputs / "sub" / "model") == "../model.txt"
    for name in ("passwd", "up"):
        assert not os.path.lexists(outputs / name), name       # skipped: no link, no copy
    for path in outputs.rglob("*"):
        if path.is_file() and not path.is_symlink() and secret_text:
            assert secret_text not in path.read_text(errors="replace"), path
    (warning,) = [w for w in run.warnings if "outputs/passwd" in w]
    assert "is a link to" in warning and "skipped" in warning and "outputs/up" in warning
    assert "(2 times)" in warning


def test_links_in_docker_outputs_are_kept_inside_or_skipped(docker_workspace, make_source,
                                                            docker_client):
    src = make_source(LINKS_IN_OUTPUTS.format(target="/etc/passwd"))
    run = docker_workspace.experiment("links").submit("train.py", src, gpus="none")
    run.wait(timeout=300)
    check_outputs(run, None)
    assert "outputs/passwd is a link to /etc/passwd: skipped" in " ".join(run.warnings)
    assert not wait_removed(docker_client, run)


def test_links_in_local_outputs_are_kept_inside_or_skipped(workspace, make_source, secret):
    src = make_source(LINKS_IN_OUTPUTS.format(target=str(secret)))
    run = workspace.experiment("links").submit("train.py", src, target="local")
    run.wait(timeout=120)
    check_outputs(run, SECRET)


def test_downloads_copy_links_as_links(workspace, make_source, secret, tmp_path):
    run = workspace.experiment("dl").submit("train.py", make_source(
        LINKS_IN_OUTPUTS.format(target=str(secret))), target="local")
    assert run.wait(timeout=120) == states.COMPLETED, run.reason
    os.symlink(secret, run.folder / "outputs" / "planted")     # however it got there
    copied = run.download("outputs", tmp_path / "dl")
    assert os.readlink(copied / "planted") == str(secret)      # a link, not the content
    assert os.readlink(copied / "latest") == "model.txt"
    assert (copied / "model.txt").read_text() == "weights"
    with pytest.raises(FileNotFoundError, match="outputs/planted"):
        run.download("outputs/planted", tmp_path / "one")
    assert not (tmp_path / "one" / "planted").exists()
    assert "saved" in run.logs()
    os.unlink(run.folder / "output.log")
    os.symlink(secret, run.folder / "output.log")
    assert run.logs() == ""                                     # a link is not read


def test_an_archive_cannot_write_outside_its_folder_or_through_a_link(tmp_path, secret):
    """Docker's archive is the container's to shape: names, links and devices are checked."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        def add(name, kind=tarfile.REGTYPE, content=b"", link=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(content)
            tar.addfile(info, io.BytesIO(content))
        add("outputs", tarfile.DIRTYPE)
        add("outputs/dir-link", tarfile.SYMTYPE, link=str(tmp_path))
        add("outputs/dir-link/host-secret.txt", content=b"overwritten")   # through the link
        add("outputs/../output.log", content=b"replaced")                # leaves outputs/
        add("output.log", content=b"replaced")                           # not in outputs/
        add("outputs/hard", tarfile.LNKTYPE, link=str(secret))           # hard link out
        add("outputs/dev", tarfile.CHRTYPE)
        add("outputs/ok.txt", content=b"fine")
        add("outputs/stale", content=b"new")                             # replaces the link
        add("outputs/linked-dir/host-secret.txt", content=b"overwritten")  # through a link
        add("outputs/ok-again", tarfile.LNKTYPE, link="outputs/ok.txt")  # hard link inside
    dest = tmp_path / "run"
    (dest / "outputs").mkdir(parents=True)
    (dest / "output.log").write_text("the real log")
    os.symlink(secret, dest / "outputs" / "stale")           # left by an earlier copy-back
    os.symlink(tmp_path, dest / "outputs" / "linked-dir")
    skipped = extract_tar(io.BytesIO(data.getvalue()), dest, "outputs")
    assert secret.read_text() == SECRET
    assert (dest / "output.log").read_text() == "the real log"
    assert (dest / "outputs" / "ok.txt").read_bytes() == b"fine"
    assert (dest / "outputs" / "ok-again").read_bytes() == b"fine"
    assert (dest / "outputs" / "stale").read_bytes() == b"new"
    assert not os.path.islink(dest / "outputs" / "stale")
    assert not os.path.islink(dest / "outputs" / "dir-link")   # a folder of its own, inside
    assert sorted(os.listdir(dest / "outputs")) == ["dir-link", "linked-dir", "ok-again",
                                                    "ok.txt", "stale"]
    assert len(skipped) == 6, skipped


# -- permissions -------------------------------------------------------------------------------
def test_run_and_telemetry_folders_are_not_world_writable_and_a_nonroot_image_works(
        docker_workspace, make_source, docker_client, nonroot_image):
    src = make_source("""
        import os
        from celltrain import log
        log("uid", os.getuid())
        os.makedirs("outputs", exist_ok=True)
        open("outputs/model.txt", "w").write("ok")
    """)
    try:
        run = docker_workspace.experiment("modes").submit(
            "train.py", src, gpus="none", environment=Environment(base_image=nonroot_image))
        assert run.wait(timeout=300) == states.COMPLETED, run.reason
    finally:
        wait_removed(docker_client, run)
    assert run.metrics()["uid"] == [65534.0]
    assert (run.folder / "outputs" / "model.txt").read_text() == "ok"
    telemetry = run.folder / "telemetry"
    assert no_world_access(run.folder) and no_world_access(telemetry)
    assert not stat.S_IMODE(os.stat(telemetry).st_mode) & 0o022       # nor group-writable
    assert os.stat(telemetry).st_uid == (65534 if os.getuid() == 0 else os.getuid())


def test_local_run_folders_are_not_world_writable(workspace, make_source):
    run = workspace.experiment("modes").submit("train.py", make_source("print(1)"),
                                               target="local")
    assert run.wait(timeout=120) == states.COMPLETED
    assert no_world_access(run.folder) and no_world_access(run.folder / "telemetry")


@pytest.mark.parametrize("user, expected", [("", (0, 0)), ("root", (0, 0)), ("0:5", (0, 5)),
                                            ("1234:5678", (1234, 5678)),
                                            ("nobody", (65534, 65534)),
                                            ("nobody:7", (65534, 7)), ("4321", (4321, 0)),
                                            ("no-such-user", None)])
def test_the_containers_user_comes_from_its_image(docker_client, offline_image, user, expected):
    container = docker_client.containers.create(offline_image, ["true"], user=user or None,
                                                labels={LABEL_RUN: "test-user"})
    try:
        container.reload()
        assert container_user(container) == expected
    finally:
        container.remove(force=True)
