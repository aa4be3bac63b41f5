"""``%%train --nodes 2``: a cell as a 2-node run in real containers, rank 0's values back."""
from __future__ import annotations

import pytest
from IPython.testing import globalipapp
from IPython.utils.capture import capture_output

pytestmark = pytest.mark.docker
# A cell for two nodes: the all-reduce of rank + 1 is 3 when it crossed them (also test_ray.py)
ALL_REDUCE = """import os
import torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
world = (dist.get_rank(), dist.get_world_size(), os.environ["NODE_RANK"])
dist.destroy_process_group()
int(t.item())
"""


@pytest.fixture
def ip(tmp_path, monkeypatch, docker_workspace):
    shell = globalipapp.get_ipython()
    shell.run_cell("%load_ext celltrain")
    monkeypatch.chdir(tmp_path)
    shell.run_line_magic("train", f"config workspace={docker_workspace.path} target=docker "
                                  "experiment=dist")
    yield shell
    shell.run_line_magic("train", "config workspace= target= experiment= image=")


def test_train_nodes_2_round_trip(ip):
    with capture_output() as out:
        result = ip.run_cell("%%train --nodes 2 --gpus none --out world -o r\n" + ALL_REDUCE,
                             store_history=True)
    assert result.error_in_exec is None, out.stdout + out.stderr
    assert result.result == 3                      # 1 + 2: the all-reduce ran across nodes
    assert ip.user_ns["world"] == (0, 2, "0")      # rank 0's values come back
    run = ip.user_ns["r"]
    assert [(r["rank"], r["node"]) for r in run.ranks()] == [(0, 0), (1, 1)]
    assert run.record["spec"]["distribution"] == {"nodes": 2, "procs_per_node": 1,
                                                  "launcher": "torchrun"}


def test_train_nodes_2_failing_rank_names_rank_node_and_cell_line(ip):
    with capture_output() as out:
        result = ip.run_cell("""%%train --nodes 2 --gpus none -o r
import torch.distributed as dist
dist.init_process_group("gloo")
if dist.get_rank() == 1:
    raise RuntimeError("bad shard on rank 1")
dist.barrier()
""", store_history=True)
    text = out.stdout + out.stderr
    run = ip.user_ns["r"]
    assert run.status == "Failed"
    assert run.reason.startswith("rank 1 (node 1, local rank 0) failed with exit code 1: "), \
        run.reason
    assert "RuntimeError: bad shard on rank 1" in run.reason
    assert "line 5" in run.reason               # the cell's own line, not the runner's
    assert "bad shard on rank 1" in text
