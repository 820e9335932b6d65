"""The one atomic writer: a failure inside the block keeps the old file whole and leaves no
temporary file behind; success replaces the file."""

from __future__ import annotations

import pytest
from lensbench.datasets.files import atomic_open


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), atomic_open(target) as f:
        f.write("half of the new")
        raise KeyboardInterrupt
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_a_finished_write_replaces_the_file_and_creates_parents(tmp_path):
    target = tmp_path / "sub" / "model.bin"
    with atomic_open(target, "wb") as f:
        f.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.bin"]
