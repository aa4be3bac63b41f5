"""Compute targets by kind and by saved name; plug-ins through the ``celltrain.targets`` entry
point; the run spec and target handles survive the store."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from celltrain import Environment, RunSpec, Workspace, states
from celltrain.spec import Distribution, Resources
from celltrain.targets import Handle, UnknownTarget, kinds, target_class
from celltrain.targets.base import ComputeTarget


def test_built_in_kinds_come_first_and_an_unknown_kind_names_them(workspace, make_source):
    assert kinds()[:3] == ["docker", "local", "ray"]
    with pytest.raises(UnknownTarget, match="target takes one of docker, local, ray, not "
                                            "'cloud'"):
        target_class("cloud")
    with pytest.raises(UnknownTarget, match="'cloud'"):
        workspace.experiment("e").submit("train.py", make_source("print(1)"), target="cloud")
    assert workspace.store.list_runs() == []


def test_a_spec_round_trips_through_its_stored_form():
    spec = RunSpec(script="train.py", source_dir="/src", args=["--lr", "0.1"],
                   environment=Environment(pip=["six"], env={"A": "1"}),
                   resources=Resources(gpus=[0, 1], memory="8g", cpus=2.5, timeout=60),
                   distribution=Distribution(nodes=2, procs_per_node=4, launcher="torchrun"),
                   params={"lr": 0.1}, tags={"t": "x"}, env_vars={"B": "2"},
                   mounts={"/data": "/data"}, network="none", target="local", kind="trial",
                   parent="sweep-1-abc")
    stored = spec.to_dict()
    assert stored["version"] == 1
    assert RunSpec.from_dict(stored) == spec
    with pytest.raises(ValueError, match="run spec version 99"):
        RunSpec.from_dict({**stored, "version": 99})


def test_rows_from_before_the_spec_are_read_from_their_columns():
    old_row = {"script": "train.py", "args": ["--x", "1"], "params": {"p": 1}, "tags": {},
               "environment": {"pip": ["six"]}, "target": "docker", "spec": None,
               "options": {"gpus": "none", "memory": "2g", "cpus": None, "shm_size": "2g",
                           "env_vars": {"E": "1"}, "mounts": {}, "timeout": 30,
                           "network": None, "source_dir": "/s", "lib_packages": ["celltrain"]}}
    spec = RunSpec.from_record(old_row)
    assert (spec.script, spec.args, spec.source_dir) == ("train.py", ["--x", "1"], "/s")
    assert spec.resources == Resources(gpus="none", memory="2g", timeout=30)
    assert spec.environment.pip == ["six"] and spec.env_vars == {"E": "1"}
    assert spec.legacy_options() == old_row["options"]


def test_handles_round_trip_and_old_container_ids_are_read():
    handle = Handle("docker", {"container": "abc123", "network": "n1"})
    assert Handle.from_dict(handle.to_dict()) == handle
    assert Handle.from_record({"target": "local", "container_id": "pid:42"}) == \
        Handle("local", {"pid": 42})
    assert Handle.from_record({"target": "docker", "container_id": "f00"}) == \
        Handle("docker", {"container": "f00"})
    assert Handle.from_record({"target": "docker", "container_id": None}) is None


def test_a_submitted_run_stores_its_spec_and_handle(workspace, make_source):
    run = workspace.experiment("e").submit("train.py", make_source("print('hi')"),
                                           target="local", params={"lr": 0.5}, timeout=60)
    assert run.wait(timeout=60) == states.COMPLETED
    record = run.record
    spec = RunSpec.from_dict(record["spec"])
    assert spec.params == {"lr": 0.5} and spec.resources.timeout == 60
    assert spec.resources.gpus == "none"          # "auto" settled by the local target
    assert record["kind"] == "run" and record["parent_id"] is None
    assert Handle.from_dict(record["handle"]).ids["pid"] > 0


def test_saved_targets_are_listed_used_by_name_and_removed(workspace, make_source):
    saved = workspace.add_target("laptop", "local")
    assert saved["kind"] == "local"
    names = [t["name"] for t in workspace.targets()]
    assert names[:2] == ["docker", "local"] and "laptop" in names
    run = workspace.experiment("e").submit("train.py", make_source("print(1)"), target="laptop")
    assert run.wait(timeout=60) == states.COMPLETED
    assert run.record["target"] == "local"
    assert RunSpec.from_dict(run.record["spec"]).target == "laptop"
    assert Workspace(workspace.path).resolve_target("laptop") == ("local", {})
    workspace.remove_target("laptop")
    with pytest.raises(ValueError, match="no target 'laptop' is saved"):
        workspace.remove_target("laptop")


@pytest.mark.parametrize("name, kind, settings, message", [
    ("has space", "local", {}, "a target name takes letters"),
    ("docker", "local", {}, "'docker' is a kind of compute target"),
    ("box", "nowhere", {}, "target takes one of"),
    ("box", "local", {"address": "x"}, "a local target takes no settings, not address"),
])
def test_bad_saved_targets_are_refused_naming_the_value(workspace, name, kind, settings,
                                                         message):
    with pytest.raises(ValueError, match=message):
        workspace.add_target(name, kind, **settings)
    assert workspace.store.saved_targets() == []


def test_the_cli_lists_adds_and_removes_targets(workspace):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "celltrain.cli", "-w", str(workspace.path),
                               "targets", *args], capture_output=True, text=True)
    assert cli("add", "laptop", "local").returncode == 0
    listing = cli()
    assert listing.returncode == 0
    assert "docker" in listing.stdout and "laptop" in listing.stdout and "saved" in listing.stdout
    bad = cli("add", "box", "local", "oops")
    assert bad.returncode == 2 and "KEY=VALUE, not 'oops'" in bad.stderr
    assert cli("remove", "laptop").returncode == 0
    assert "laptop" not in cli().stdout


PLUGIN = '''
from celltrain.targets.local import LocalTarget

class EchoTarget(LocalTarget):
    """A plug-in: a local process, under another kind name, with one setting."""
    kind = "echo"

    @classmethod
    def check_settings(cls, settings):
        unknown = set(settings) - {"greeting"}
        if unknown:
            raise ValueError(f"an echo target takes greeting, not {', '.join(sorted(unknown))}")
        return settings

    def start(self, prepared):
        self.notify(f"echo says {self.settings.get('greeting', 'hello')}")
        return super().start(prepared)
'''


def test_a_plug_in_target_is_found_through_its_entry_point(tmp_path, make_source):
    """A real distribution on sys.path (dist-info with entry_points.txt), in a subprocess so
    the entry point is seen from the start, as an installed plug-in would be."""
    site = tmp_path / "site"
    (site / "celltrain_echo-1.0.dist-info").mkdir(parents=True)
    (site / "celltrain_echo.py").write_text(PLUGIN)
    (site / "celltrain_echo-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: celltrain-echo\nVersion: 1.0\n")
    (site / "celltrain_echo-1.0.dist-info" / "entry_points.txt").write_text(
        "[celltrain.targets]\necho = celltrain_echo:EchoTarget\n")
    src = make_source("print('ran by a plug-in')")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(site)!r})
        from celltrain import Workspace
        from celltrain.targets import kinds
        print("kinds", kinds())
        ws = Workspace({str(tmp_path / "ws")!r})
        ws.add_target("friendly", "echo", greeting="bonjour")
        run = ws.experiment("p").submit("train.py", {str(src)!r}, target="friendly")
        print("status", run.wait(timeout=60))
        print(run.logs())
        print(run.build_log())   # a target's notes before the run starts go there
    """)
    import os
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "kinds ['docker', 'local', 'ray', 'echo']" in out.stdout
    assert "status Completed" in out.stdout
    assert "echo says bonjour" in out.stdout and "ran by a plug-in" in out.stdout


def test_a_plug_in_that_is_not_a_target_is_refused(tmp_path):
    site = tmp_path / "site"
    (site / "bad_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "bad_plugin.py").write_text("class NotATarget: pass\n")
    (site / "bad_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: bad-plugin\nVersion: 1.0\n")
    (site / "bad_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[celltrain.targets]\nbroken = bad_plugin:NotATarget\n")
    out = subprocess.run([sys.executable, "-c", f"""
import sys; sys.path.insert(0, {str(site)!r})
from celltrain.targets import target_class
try:
    target_class("broken")
except ValueError as e:
    print("refused:", e)
"""], capture_output=True, text=True, timeout=60)
    assert "refused: the entry point 'bad_plugin:NotATarget' for target 'broken' is not a " \
           "ComputeTarget subclass" in out.stdout, out.stdout + out.stderr


def test_every_target_declares_its_kind_and_noun():
    for kind in ("docker", "local"):
        cls = target_class(kind)
        assert issubclass(cls, ComputeTarget) and cls.kind == kind and cls.noun
