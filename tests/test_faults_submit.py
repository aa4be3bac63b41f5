"""Fault injection at submit time: every bad option value is refused before anything starts.

Each refusal is one message naming the option, the value and the accepted form, and leaves the
workspace as it was: no run row, no run folder, no supervisor.  The same check runs for
``Experiment.submit`` and ``%%train`` (which calls it).
"""
from __future__ import annotations

import math

import pytest
from IPython.testing import globalipapp
from IPython.utils.capture import capture_output

from celltrain import states

SIZE_FORM = r'pass bytes as an int or a Docker size like "512m" or "8g"'
# (submit keyword arguments, the exception, a regex the message must match)
BAD = {
    "memory lots": ({"memory": "lots"}, ValueError, r"memory='lots' is not a size: " + SIZE_FORM),
    "memory -5": ({"memory": "-5"}, ValueError, r"memory='-5' is not a size: " + SIZE_FORM),
    "memory 0": ({"memory": 0}, ValueError, r"memory=0 is not a positive size"),
    "memory tiny": ({"memory": "1k"}, ValueError, r"memory='1k' is below Docker's smallest "
                                                  r"limit of 6 MB"),
    "memory bool": ({"memory": True}, ValueError, r"memory=True is not a size"),
    "shm huge": ({"shm_size": "huge"}, ValueError, r"shm_size='huge' is not a size: "
                                                   + SIZE_FORM),
    "cpus abc": ({"cpus": "abc"}, ValueError, r"cpus='abc' is not a number of CPUs: pass a "
                                              r"positive number, e.g. cpus=2"),
    "cpus zero": ({"cpus": 0}, ValueError, r"cpus=0 is not a number of CPUs"),
    "cpus nan": ({"cpus": math.nan}, ValueError, r"cpus=nan is not a number of CPUs"),
    "timeout str": ({"timeout": "5"}, ValueError, r"timeout='5' is not a number of seconds: "
                                                  r"pass a positive int or float"),
    "timeout nan": ({"timeout": math.nan}, ValueError, r"timeout=nan is not a number of seconds"),
    "timeout inf": ({"timeout": math.inf}, ValueError, r"timeout=inf is not a number of seconds"),
    "timeout bool": ({"timeout": True}, ValueError, r"timeout=True is not a number of seconds"),
    "timeout negative": ({"timeout": -1}, ValueError, r"timeout=-1 is not a number of seconds"),
    "mount relative": ({"mounts": {"DATA": "data"}}, ValueError,
                       r"mounts\[.*\]='data' is not an absolute container path: pass e\.g\. "
                       r"mounts=\{.*: '/data'\}"),
    "mount root": ({"mounts": {"DATA": "/"}}, ValueError,
                   r"mounts\[.*\]='/' would cover the container's / or celltrain's own"),
    "mount over celltrain": ({"mounts": {"DATA": "/celltrain-run/src"}}, ValueError,
                             r"mounts\[.*\]='/celltrain-run/src' would cover"),
    "mount colon": ({"mounts": {"DATA": "/data:rw"}}, ValueError,
                    r"mounts\[.*\]='/data:rw' is not an absolute container path"),
    "mount missing host": ({"mounts": {"/no/such/folder": "/data"}}, FileNotFoundError,
                           r"mount source /no/such/folder does not exist on the host"),
    "network name": ({"network": "my net!"}, ValueError,
                     r"network='my net!' is not a network: pass one of 'bridge', 'host', "
                     r"'none' or the name of a Docker network"),
    "network type": ({"network": 5}, ValueError, r"network=5 is not a network"),
    "env name with =": ({"env_vars": {"A=B": "1"}}, ValueError,
                        r"env_vars name 'A=B' is not an environment variable name: use letters, "
                        r"digits and _"),
    "env name with newline": ({"env_vars": {"A\nB": "1"}}, ValueError,
                              r"env_vars name 'A\\nB' is not an environment variable name"),
    "env name digit": ({"env_vars": {"1A": "1"}}, ValueError, r"env_vars name '1A' is not"),
    "env value NUL": ({"env_vars": {"A": "x\0y"}}, ValueError,
                      r"env_vars\['A'\]='x\\x00y' is not a string without NUL"),
    "env value int": ({"env_vars": {"A": 3}}, ValueError,
                      r"env_vars\['A'\]=3 is not a string .*str\(value\)"),
    "script up": ({"script": "../outside.py"}, ValueError,
                  r"script='../outside.py' is outside the source folder .*: pass a path "
                  r"relative to source_dir that stays inside it"),
    "script absolute outside": ({"script": "OUTSIDE"}, ValueError,
                                r"script='.*outside.py' is outside the source folder"),
    "script missing": ({"script": "missing.py"}, FileNotFoundError,
                       r"script 'missing.py' is not in the source folder"),
    "script a folder": ({"script": "pkg"}, FileNotFoundError, r"script 'pkg' is not in the "
                                                              r"source folder"),
}


@pytest.fixture
def source(make_source, tmp_path):
    src = make_source("print('never runs')\n")
    (src / "pkg").mkdir()
    (tmp_path / "outside.py").write_text("print('outside')\n")
    (tmp_path / "data").mkdir()
    return src


def _fill(kwargs: dict, src, tmp_path) -> dict:
    kwargs = dict(kwargs)
    if kwargs.get("script") == "OUTSIDE":
        kwargs["script"] = str(tmp_path / "outside.py")
    if "mounts" in kwargs:
        kwargs["mounts"] = {str(tmp_path / "data") if k == "DATA" else k: v
                            for k, v in kwargs["mounts"].items()}
    return kwargs


def assert_nothing_created(ws):
    assert ws.runs() == []
    assert list((ws.path / "runs").iterdir()) == []


@pytest.mark.parametrize("case", list(BAD))
def test_bad_value_is_refused_by_submit_before_anything_starts(workspace, source, tmp_path,
                                                               case):
    kwargs, error, message = BAD[case]
    kwargs = _fill(kwargs, source, tmp_path)
    script = kwargs.pop("script", "train.py")
    with pytest.raises(error, match=message):
        workspace.experiment("bad").submit(script, source, target="local", **kwargs)
    assert_nothing_created(workspace)


def test_good_values_in_every_accepted_form_are_taken(workspace, source, tmp_path):
    """The checks refuse only what Docker would: these all run."""
    run = workspace.experiment("good").submit(
        str(source / "train.py"), source, target="local", memory="1.5G", shm_size=2**30,
        cpus="0.5", timeout=600, env_vars={"_A1": "line\nbreak"},
        mounts={str(tmp_path / "data"): "/data/"}, network="bridge")
    assert run.wait(timeout=60) == states.COMPLETED, run.reason
    options = run.record["options"]
    assert run.record["script"] == "train.py"            # an absolute path inside: relative
    assert options["cpus"] == 0.5 and options["timeout"] == 600.0
    assert options["mounts"] == {str((tmp_path / "data").resolve()): "/data"}
    assert options["memory"] == "1.5G"                    # quoted back as given (OOM reason)


def test_unknown_docker_network_is_refused_with_the_engine(workspace, source, docker_client):
    with pytest.raises(ValueError, match=r"network='celltrain-no-such-net' is not a network of "
                                         r"this Docker engine: .*docker network ls"):
        workspace.experiment("net").submit("train.py", source, gpus="none",
                                           network="celltrain-no-such-net")
    assert_nothing_created(workspace)


def test_more_cpus_than_the_engine_has_is_refused(workspace, source, docker_client):
    available = docker_client.info()["NCPU"]
    with pytest.raises(ValueError, match=rf"cpus={available + 1} is more than this Docker "
                                         rf"engine's {available} CPUs: pass at most "
                                         rf"cpus={available}"):
        workspace.experiment("cpus").submit("train.py", source, gpus="none",
                                            cpus=available + 1)
    assert_nothing_created(workspace)


# -- the same refusals through %%train, in a real IPython shell --------------------------------
@pytest.fixture
def ip(tmp_path, monkeypatch):
    shell = globalipapp.get_ipython()   # the attribute: it is the real one once started
    shell.run_cell("%load_ext celltrain")
    monkeypatch.chdir(tmp_path)
    shell.run_line_magic("train", f"config workspace={tmp_path / 'ws'} target=local "
                                  f"experiment=faults")
    yield shell
    shell.run_line_magic("train", "config workspace= target= experiment=")


@pytest.mark.parametrize("options, message", [
    ("--memory lots", r"memory='lots' is not a size: " + SIZE_FORM),
    ("--timeout nan", r"timeout=nan is not a number of seconds"),
    ("--cpus -2", r"cpus=-2.0 is not a number of CPUs"),
    ("--env BAD-NAME=1", r"env_vars name 'BAD-NAME' is not an environment variable name"),
    ("--mount DATA:/celltrain-lib", r"mounts\[.*\]='/celltrain-lib' would cover"),
])
def test_bad_value_is_refused_by_train_magic(ip, tmp_path, options, message):
    import re
    (tmp_path / "data").mkdir()
    with capture_output() as out:
        result = ip.run_cell(f"%%train {options.replace('DATA', str(tmp_path / 'data'))}\n"
                             f"x = 1\n", store_history=True)
    text = out.stdout + out.stderr
    assert "UsageError" in text and re.search(r"%%train: " + message, text), text
    assert result.result is None
    from celltrain import Workspace
    assert_nothing_created(Workspace(tmp_path / "ws"))
