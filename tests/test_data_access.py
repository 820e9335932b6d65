"""Real data without the network (issue 24): the registry's no-download mode, and the one
``real_data`` fixture that skips (or, under LENSBENCH_REQUIRE_ALL=1, fails) with one line naming
the missing file and how to get it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lensbench.datasets import registry

SMALL = "slacs_hst_f814w/slacs_params.csv"


def _empty_cache(tmp_path: Path, monkeypatch) -> Path:
    """No mirror, an empty download cache, downloads off (conftest sets that for every test)."""
    monkeypatch.delenv(registry.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(registry.CACHE_DIR_ENV, str(tmp_path / "cache"))
    assert os.environ[registry.NO_DOWNLOAD_ENV] == "1"
    return tmp_path / "cache"


def _no_network(*args, **kwargs):
    raise AssertionError("pooch was asked to download")


def test_without_downloads_a_missing_file_is_a_clear_error_and_pooch_is_not_reached(
        tmp_path, monkeypatch):
    import pooch

    empty_cache = _empty_cache(tmp_path, monkeypatch)
    monkeypatch.setattr(pooch, "retrieve", _no_network)
    with pytest.raises(registry.DataFileError) as err:
        registry.fetch(SMALL)
    message = str(err.value)
    assert registry.NO_DOWNLOAD_ENV in message and SMALL in message
    assert str(empty_cache) in message and registry.describe(SMALL)["url"] in message
    assert registry.local_path(SMALL) is None


def test_without_downloads_a_cached_file_is_used_and_a_corrupt_one_kept(tmp_path, monkeypatch,
                                                                       real_data):
    import pooch

    source = real_data(SMALL)
    empty_cache = _empty_cache(tmp_path, monkeypatch)
    monkeypatch.setattr(pooch, "retrieve", _no_network)
    cached = empty_cache / SMALL.replace("/", "__")
    cached.parent.mkdir(parents=True)
    cached.write_text("not the file\n")
    assert registry.local_path(SMALL) == cached  # present: the fixture would not skip
    with pytest.raises(registry.DataFileError, match="corrupt") as err:
        registry.fetch(SMALL)
    assert str(cached) in str(err.value) and cached.read_text() == "not the file\n"
    shutil.copy(source, cached)
    assert registry.fetch(SMALL) == cached


def test_a_real_data_user(real_data):
    """Run by the next test in a child pytest; here it simply passes where the file is."""
    assert real_data(SMALL).read_text().startswith("Name")


def _child(env_changes: dict[str, str | None], cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, registry.CACHE_DIR_ENV: str(cache), "LENSBENCH_NO_MIRROR": "1"}
    env.pop(registry.DATA_DIR_ENV, None)
    env.pop("LENSBENCH_REQUIRE_ALL", None)
    env.pop(registry.NO_DOWNLOAD_ENV, None)  # the child's conftest must set it itself
    env |= env_changes
    test = f"{Path(__file__).resolve()}::test_a_real_data_user"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rsf", "-p",
                           "no:cacheprovider", test], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1], timeout=300)


def test_missing_real_data_skips_with_one_line_and_fails_under_require_all(tmp_path):
    child = _child({}, tmp_path)
    assert child.returncode == 0 and "1 skipped" in child.stdout, child.stdout + child.stderr
    (reason,) = [line for line in child.stdout.splitlines() if line.startswith("SKIPPED")]
    assert SMALL in reason and registry.DATA_DIR_ENV in reason and "registry.fetch" in reason
    child = _child({"LENSBENCH_REQUIRE_ALL": "1"}, tmp_path)
    assert child.returncode == 1 and "1 failed" in child.stdout, child.stdout + child.stderr
    assert f"needs the real-data file {SMALL!r}" in child.stdout
    assert not list(tmp_path.iterdir())  # nothing was downloaded into the cache
