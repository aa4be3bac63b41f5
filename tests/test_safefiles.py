"""Reading run-folder files without following links a container could have planted."""
from __future__ import annotations

import os

import pytest

from celltrain.safefiles import UnsafePath, read_bytes, read_text, size_beneath


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "secret").write_text("root:secret-hash")
    root = tmp_path / "run"
    (root / "telemetry").mkdir(parents=True)
    (root / "telemetry" / "ok.txt").write_text("a reason")
    os.symlink(tmp_path / "secret", root / "telemetry" / "abs.txt")
    os.symlink("../../secret", root / "telemetry" / "rel.txt")
    os.symlink(tmp_path, root / "linkdir")
    os.mkfifo(root / "telemetry" / "fifo")
    return root


def test_plain_files_are_read_and_capped(run_dir):
    assert read_text(run_dir, "telemetry/ok.txt") == "a reason"
    assert read_bytes(run_dir, "telemetry/ok.txt", 3) == b"a r"
    assert read_bytes(run_dir, "telemetry/ok.txt", 3, tail=True) == b"son"
    assert size_beneath(run_dir, "telemetry/ok.txt") == 8


@pytest.mark.parametrize("rel", ["telemetry/abs.txt", "telemetry/rel.txt", "linkdir/secret",
                                 "../secret", "/etc/passwd", "telemetry/fifo", "telemetry",
                                 "telemetry/ok.txt\0x"])
def test_links_fifos_folders_and_escapes_are_refused(run_dir, rel):
    with pytest.raises(UnsafePath):
        read_bytes(run_dir, rel)
    assert read_text(run_dir, rel, default="none") == "none"
    assert size_beneath(run_dir, rel) is None


def test_a_missing_file_is_file_not_found(run_dir):
    with pytest.raises(FileNotFoundError):
        read_bytes(run_dir, "telemetry/missing.txt")
    assert read_text(run_dir, "telemetry/missing.txt") is None
