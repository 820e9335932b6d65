"""The one atomic writer: a failure inside the block keeps the old file whole and leaves no
temporary file behind; success replaces the file. The run artefacts (scores, figures) go
through it: a crash keeps the old ones, and a workdir copied with hard links keeps its own."""

from __future__ import annotations

import os

import numpy as np
import pytest
from lensbench.datasets.files import atomic_open, atomic_savefig, atomic_savez
from matplotlib.figure import Figure


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


class Unreadable:
    def __array__(self, dtype=None, copy=None):
        raise KeyboardInterrupt  # an interrupt while numpy writes the archive


def test_run_artefacts_replace_their_file_and_leave_hard_links_alone(tmp_path):
    """``atomic_savez`` and ``atomic_savefig`` replace the file: a second hard link to the old
    one (a workdir copied with ``cp -al``, then rerun) keeps the old bytes; an interrupt while
    writing keeps the old file and leaves no temporary one."""
    scores = tmp_path / "run" / "scores.npz"
    atomic_savez(scores, scores=np.arange(3.0))
    copy = tmp_path / "copy.npz"
    os.link(scores, copy)
    atomic_savez(scores, scores=np.arange(4.0))
    np.testing.assert_array_equal(np.load(scores)["scores"], np.arange(4.0))
    np.testing.assert_array_equal(np.load(copy)["scores"], np.arange(3.0))
    with pytest.raises(KeyboardInterrupt):
        atomic_savez(scores, scores=np.zeros(5), other=Unreadable())
    np.testing.assert_array_equal(np.load(scores)["scores"], np.arange(4.0))
    assert sorted(p.name for p in scores.parent.iterdir()) == ["scores.npz"]

    figure_path = tmp_path / "run" / "roc.png"
    fig = Figure()
    fig.add_subplot().plot([0, 1], [0, 1])
    atomic_savefig(fig, figure_path, dpi=20)
    os.link(figure_path, tmp_path / "copy.png")
    old = figure_path.read_bytes()
    fig.add_subplot().plot([0, 1], [1, 0])
    atomic_savefig(fig, figure_path, dpi=20)
    assert figure_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure_path.read_bytes() != old and (tmp_path / "copy.png").read_bytes() == old


def test_an_interrupted_report_leaves_the_previous_one(tmp_path, monkeypatch):
    from lensbench.bench import report

    report.write_markdown_and_html(["# old", "", "- a line"], tmp_path, "suite")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["suite.html", "suite.md"]

    def interrupted(text, folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "markdown_to_html", interrupted)
    with pytest.raises(KeyboardInterrupt):
        report.write_markdown_and_html(["# new"], tmp_path, "suite")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_written_files_and_splits_get_the_permissions_of_a_plain_open(tmp_path):
    from lensbench.datasets.storage import SplitWriter

    plain, plain_folder = tmp_path / "plain.txt", tmp_path / "plain-folder"
    plain.write_text("x")
    plain_folder.mkdir()
    with atomic_open(tmp_path / "atomic.txt") as f:
        f.write("x")
    with SplitWriter(tmp_path / "split", config={"kind": "test"}, seed=0, bands=["g"],
                     created_by="test_files") as writer:
        writer.add_shard(np.zeros((2, 1, 4, 4), np.float32), {"label": np.zeros(2, np.int64)})
    # mkstemp alone would give 0600, mkdtemp 0700, whatever the umask
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert (tmp_path / "split").stat().st_mode & 0o777 == plain_folder.stat().st_mode & 0o777


HOLD_LOCK = """
import sys, time
from lensbench.datasets.files import exclusive_lock
with exclusive_lock(sys.argv[1], busy="held"):
    print("locked", flush=True)
    time.sleep(60)
"""


def _hold_lock_in_another_process(lock):
    """A process that holds ``lock`` once the returned Popen has printed 'locked'."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_held_lock_refuses_at_once_naming_the_holder_and_dies_with_it(tmp_path):
    import signal

    from lensbench.datasets.files import exclusive_lock

    lock = tmp_path / "run.smoke.default.lock"
    holder = _hold_lock_in_another_process(lock)
    try:
        with pytest.raises(ValueError, match=rf"^another run \(lock {lock}, held by pid "
                                             rf"{holder.pid}: -c {lock}\); wait for it"):
            with exclusive_lock(lock, busy="another run"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup: the lock file stays behind
        holder.wait()
    assert lock.exists()
    with exclusive_lock(lock, busy="another run"):  # the OS lock died with its process
        assert lock.read_text().startswith(f"pid {os.getpid()}: ")
    assert not lock.exists()


def test_bench_run_refuses_while_another_runs_the_same_suite_on_the_workdir(tmp_path, capsys):
    import signal

    from lensbench.bench import cli

    holder = _hold_lock_in_another_process(tmp_path / "run.smoke.smoke.lock")
    try:
        code = cli.main(["run", "--suite", "smoke", "--profile", "smoke", "--workdir",
                         str(tmp_path), "--no-tracking", "--methods", "random"])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("bench: error: another bench run of suite smoke, profile smoke, is "
                            f"using {tmp_path} (lock {tmp_path}/run.smoke.smoke.lock, held by "
                            f"pid {holder.pid}")
    assert not (tmp_path / "results.jsonl").exists() and "\n" not in error
