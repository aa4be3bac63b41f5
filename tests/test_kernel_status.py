"""A real ipykernel keeps reading Busy while a cell runs, whatever its subshells and control
thread do meanwhile (issue 15, item 2): what JupyterLab 4.6 does when a widget appears (a
``create_subshell_request`` on the control channel) and what a subshell does (a request of its
own) each end with an "idle", which front ends take as the whole kernel's status.

With celltrain loaded each such "idle" is followed by a "busy" of the running cell's request,
and the requests' own "idle" still come (front ends wait for them).
"""
from __future__ import annotations

import pytest


@pytest.fixture
def kernel(tmp_path):
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _statuses_until(kc, until: tuple, seen: list) -> None:
    """Collect IOPub status messages as (state, parent msg_id) until ``until`` is among them."""
    while until not in seen:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["msg_type"] == "status":
            seen.append((msg["content"]["execution_state"], msg["parent_header"].get("msg_id")))


def _status_while_a_cell_runs(kc, tmp_path, load_celltrain: bool):
    """A cell waits for a file; meanwhile a subshell is made (on the control channel) and runs
    a request; returns the cell's msg_id, the others', and every status seen."""
    if load_celltrain:
        _statuses_until(kc, ("idle", kc.execute("%load_ext celltrain")), [])
    go = tmp_path / "go"
    cell = kc.execute(f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)")
    seen: list = []
    _statuses_until(kc, ("busy", cell), seen)
    create = kc.session.msg("create_subshell_request", {})
    kc.control_channel.send(create)
    subshell = kc.control_channel.get_msg(timeout=30)["content"]["subshell_id"]
    _statuses_until(kc, ("idle", create["header"]["msg_id"]), seen)
    request = kc.session.msg("execute_request", {"code": "x = 1", "silent": False})
    request["header"]["subshell_id"] = subshell
    kc.shell_channel.send(request)
    _statuses_until(kc, ("idle", request["header"]["msg_id"]), seen)
    go.write_text("go")
    _statuses_until(kc, ("idle", cell), seen)
    return cell, [create["header"]["msg_id"], request["header"]["msg_id"]], seen


def _state_read_before_the_cell_ends(seen, cell) -> str:
    """The kernel's status as a front end reads it (the last status message) just before the
    cell's own "idle"."""
    return [state for state, _ in seen[:seen.index(("idle", cell))]][-1]


def test_the_kernel_reads_busy_while_its_cell_runs_and_subshells_come_and_go(kernel, tmp_path):
    cell, others, seen = _status_while_a_cell_runs(kernel, tmp_path, load_celltrain=True)
    assert _state_read_before_the_cell_ends(seen, cell) == "busy", seen
    for request in others:        # each request's own busy and idle, for whoever waits on it
        assert ("busy", request) in seen and ("idle", request) in seen, seen
    during = seen[seen.index(("busy", cell)):seen.index(("idle", cell))]
    for i, (state, parent) in enumerate(during):
        if state == "idle":
            assert during[i + 1] == ("busy", cell), f"an idle not followed by Busy: {during}"


def test_without_celltrain_the_kernel_read_idle_while_its_cell_ran(kernel, tmp_path):
    """What the front end read before (ipykernel 7 alone): the subshell's idle, not Busy."""
    cell, _, seen = _status_while_a_cell_runs(kernel, tmp_path, load_celltrain=False)
    assert _state_read_before_the_cell_ends(seen, cell) == "idle", seen
