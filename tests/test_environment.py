"""Environments become images: content-hashed, built once, with the host's pip settings."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from celltrain import Environment, states
from celltrain.targets.docker.hostpip import HostPip, parse_config_list

pytestmark = pytest.mark.docker


def test_content_hash_changes_with_packages_only():
    a = Environment(pip=["six"])
    assert a.content_hash("base1") == Environment(pip=["six"]).content_hash("base1")
    assert a.content_hash("base1") != Environment(pip=["six", "idna"]).content_hash("base1")
    assert a.content_hash("base1") != a.content_hash("base2")


def test_bad_environment_values_are_refused():
    with pytest.raises(ValueError, match="takes strings, not 3"):
        Environment(pip=[3])


def test_parse_pip_config_list_env_overrides_files():
    text = ("global.index-url='https://files.example/simple'\n"
            "global.cert='/etc/ssl/a.pem'\n:env:.cert='/etc/ssl/b.pem'\n")
    assert parse_config_list(text) == {"global": {"index-url": "https://files.example/simple",
                                                  "cert": "/etc/ssl/b.pem"}}


@pytest.fixture
def private_index(tmp_path, monkeypatch):
    """A pip.conf that knows only a private local wheel folder, as a corporate user has."""
    pkg = tmp_path / "pkg"
    (pkg / "celltrain_probe").mkdir(parents=True)
    (pkg / "celltrain_probe" / "__init__.py").write_text("VALUE = 42\n")
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "celltrain-probe"
        version = "1.0"
    """))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(pkg)], check=True)
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nno-index = true\nfind-links = {wheels}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    return wheels


def test_private_index_reaches_the_build_and_is_not_baked_in(docker_workspace, make_source,
                                                            private_index, docker_client,
                                                            offline_image):
    src = make_source("import celltrain_probe\nprint('probe', celltrain_probe.VALUE)\n")
    env = Environment(pip=["celltrain-probe==1.0"], base_image=offline_image)
    tag = f"celltrain/env:{env.content_hash(docker_client.images.get(offline_image).id)[:20]}"
    if docker_client.images.list(name=tag):
        docker_client.images.remove(tag)        # left by an earlier test session
    exp = docker_workspace.experiment("env")
    first = exp.submit("train.py", src, environment=env, gpus="none")
    assert first.wait(timeout=600) == states.COMPLETED, first.reason
    assert "probe 42" in first.logs()
    assert "Successfully installed celltrain-probe-1.0" in first.build_log()
    image = docker_client.images.get(first.record["image"])
    baked_env = " ".join(image.attrs["Config"]["Env"] or [])
    assert "PIP_CONFIG_FILE" not in baked_env and "CERT" not in baked_env
    assert not image.attrs["Config"].get("Volumes")
    # the same environment again: nothing is built
    second = exp.submit("train.py", src, environment=env, gpus="none")
    assert second.wait(timeout=300) == states.COMPLETED
    assert second.record["image"] == first.record["image"]
    assert any("image cached" in (h["detail"] or "") for h in second.history())


def test_missing_pip_package_fails_the_run_with_the_build_log(docker_workspace, make_source,
                                                             private_index, offline_image):
    src = make_source("print(1)")
    env = Environment(pip=["celltrain-no-such-package-xyz"], base_image=offline_image)
    run = docker_workspace.experiment("env").submit("train.py", src, environment=env,
                                                    gpus="none")
    assert run.wait(timeout=600) == states.FAILED
    assert "image build failed" in run.reason
    assert "celltrain-no-such-package-xyz" in run.reason       # the build log's last lines
    assert "No matching distribution" in run.build_log()


def test_host_ca_bundle_is_mounted_for_builds(tmp_path):
    mounts, env = HostPip(settings={"global": {"cert": "/x"}},
                          ca_bundle="/etc/ssl/certs/ca-certificates.crt").mounts_and_env(tmp_path)
    assert env["PIP_CERT"] == "/celltrain-host/ca-certificates.crt"
    assert (tmp_path / "ca-certificates.crt").exists()
    assert "cert = /celltrain-host/ca-certificates.crt" in (tmp_path / "pip.conf").read_text()
    assert all(m["ReadOnly"] for m in mounts)


def test_a_base_image_that_is_neither_present_nor_pullable_fails_the_run(docker_workspace,
                                                                        make_source):
    src = make_source("print(1)")
    env = Environment(base_image="celltrain-test/no-such-image:1")
    run = docker_workspace.experiment("env").submit("train.py", src, environment=env,
                                                    gpus="none")
    assert run.wait(timeout=300) == states.FAILED
    assert "base image celltrain-test/no-such-image:1 is not present and cannot be pulled" \
        in run.reason
    assert "docker pull" in run.reason        # the fix
