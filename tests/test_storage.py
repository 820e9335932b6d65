"""Tests for the split on-disk format (lensbench.datasets.storage)."""

from __future__ import annotations

import hashlib
import json
import os
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from lensbench.datasets import storage
from lensbench.datasets.interrupts import stop_on_signals, stop_requested
from lensbench.datasets.storage import (
    MANIFEST,
    SplitError,
    SplitWriter,
    arrays_sha256,
    load_split,
    sha256_file,
    split_is_complete,
)

BANDS = ["g", "r", "i"]
CONFIG = {"survey": "toy", "pixel_scale": 0.2, "n_per_shard": [5, 7, 4]}
SIZES = (5, 7, 4)


def make_shards(seed: int = 0, sizes=SIZES, hw: int = 8):
    rng = np.random.default_rng(seed)
    shards = []
    for n in sizes:
        images = rng.normal(size=(n, len(BANDS), hw, hw)).astype(np.float32)
        truth = {
            "label": rng.integers(0, 2, n).astype(np.int8),
            "theta_E": rng.uniform(0.5, 2.0, n).astype(np.float32),
            "z_source": rng.uniform(1, 3, n),
        }
        shards.append((images, truth))
    return shards


def write(out, shards, seed: int = 1, created_by: str = "pytest", config=CONFIG):
    with SplitWriter(out, config=config, seed=seed, bands=BANDS, created_by=created_by) as w:
        for images, truth in shards:
            w.add_shard(images, truth)


def dir_state(path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(path.iterdir())}


def siblings(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


def flip_image_byte(shard) -> None:
    """Flip one byte inside the image data (not HDF5 metadata), keeping the size."""
    with h5py.File(shard, "r") as f:
        info = f["images"].id.get_chunk_info(0)
    offset = info.byte_offset + info.size // 2
    with open(shard, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))


def test_round_trip(tmp_path):
    shards = make_shards()
    out = tmp_path / "split"
    write(out, shards)
    all_images = np.concatenate([s[0] for s in shards])
    all_truth = {k: np.concatenate([s[1][k] for s in shards]) for k in shards[0][1]}

    assert split_is_complete(out)
    split = load_split(out)
    assert split.n == len(split) == sum(SIZES)
    assert split.bands == BANDS
    assert split.path == out
    m = split.manifest
    assert m["format"] == "lensbench-split" and m["format_version"] == 1
    assert m["config"] == CONFIG and m["seed"] == 1 and m["created_by"] == "pytest"
    assert m["image_shape"] == [3, 8, 8]
    assert [s["n"] for s in m["shards"]] == list(SIZES)
    assert [s["file"] for s in m["shards"]] == [f"shard-{i:05d}.h5" for i in range(3)]
    n1 = int(all_truth["label"].sum())
    assert m["counts"] == {"n": 16, "n_label_1": n1, "n_label_0": 16 - n1}
    assert m["truth_columns"] == [{"name": "label", "dtype": "int8"},
                                  {"name": "theta_E", "dtype": "float32"},
                                  {"name": "z_source", "dtype": "float64"}]
    assert (out / MANIFEST).read_text() == json.dumps(m, sort_keys=True, indent=2) + "\n"

    np.testing.assert_array_equal(split.images(), all_images)
    assert split.truth.keys() == all_truth.keys()
    for k, v in all_truth.items():
        assert split.truth[k].dtype == v.dtype
        np.testing.assert_array_equal(split.truth[k], v)

    idx = np.array([0, 4, 5, 11, 12, 15])  # first/last row of every shard
    np.testing.assert_array_equal(split.images(idx), all_images[idx])
    unsorted = [15, 3, 3, 7]
    np.testing.assert_array_equal(split.images(unsorted), all_images[unsorted])
    assert split.images([]).shape == (0, 3, 8, 8)
    with pytest.raises(IndexError):
        split.images([16])

    batches = list(split.iter_batches(6))  # 6 straddles the 5|7|4 shard boundaries
    assert [len(b[0]) for b in batches] == [6, 6, 4]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), all_images)
    for k, v in all_truth.items():
        np.testing.assert_array_equal(np.concatenate([b[1][k] for b in batches]), v)
    assert [len(b[0]) for b in split.iter_batches(100)] == [16]


def test_iter_batches_memory_is_flat(tmp_path):
    shards = make_shards(sizes=(64, 64, 64), hw=32)
    write(tmp_path / "split", shards)
    split = load_split(tmp_path / "split")
    total = sum(s[0].nbytes for s in shards)
    tracemalloc.start()
    try:
        rows = sum(len(images) for images, _ in split.iter_batches(8))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 192
    assert peak < total / 4, (peak, total)


_WRITE_IN_A_FRESH_PROCESS = """
import sys
sys.path.insert(0, sys.argv[1])
from test_storage import make_shards, write
shards = make_shards()
if sys.argv[3] == "reversed":
    shards = [(im, dict(reversed(list(t.items())))) for im, t in shards]
write(sys.argv[2], shards, created_by=sys.argv[4])
"""


def test_identical_bytes_for_identical_data(tmp_path):
    # Each split is written by its own process, as two runs of `bench data make` would be. (In
    # one long pytest process the second shard came out with different bytes in about one run
    # of the whole suite in three, after other tests had run; never in a fresh process.)
    import subprocess
    import sys

    tests = str(Path(__file__).resolve().parent)
    for name, order, created_by in (("a", "same", "first"), ("b", "reversed", "second")):
        subprocess.run([sys.executable, "-c", _WRITE_IN_A_FRESH_PROCESS, tests,
                        str(tmp_path / name), order, created_by], check=True)
        time.sleep(1.1)  # HDF5 timestamps have 1 s resolution: make any leaked time show up
    # Reversed dict order and a different created_by must not change any shard byte.
    a, b = dir_state(tmp_path / "a"), dir_state(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        if name != MANIFEST:
            assert a[name] == b[name], name
    assert load_split(tmp_path / "a").content_hash == load_split(tmp_path / "b").content_hash


def test_different_data_different_hash(tmp_path):
    write(tmp_path / "a", make_shards(seed=0))
    write(tmp_path / "b", make_shards(seed=1))
    write(tmp_path / "c", make_shards(seed=0), seed=2)
    write(tmp_path / "d", make_shards(seed=0), config={**CONFIG, "pixel_scale": 0.3})
    hashes = {load_split(tmp_path / x).content_hash for x in "abcd"}
    assert len(hashes) == 4


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_exception_leaves_nothing(tmp_path, exc):
    out = tmp_path / "split"
    with pytest.raises(exc):
        with SplitWriter(out, config=CONFIG, seed=1, bands=BANDS) as w:
            images, truth = make_shards()[0]
            w.add_shard(images, truth)
            assert any(".partial-" in name for name in siblings(tmp_path))
            raise exc("boom")
    assert siblings(tmp_path) == []
    assert not split_is_complete(out)


def test_a_stop_signal_dropped_by_a_callback_still_stops_the_writer(tmp_path, capsys):
    # A signal handler's KeyboardInterrupt raised inside a weakref callback (h5py frees its ids
    # through them) is dropped by Python; the writer must still stop before committing.
    import gc
    import signal
    import weakref

    class Freed:
        pass

    out = tmp_path / "split"
    with stop_on_signals(), pytest.raises(KeyboardInterrupt):
        with SplitWriter(out, config=CONFIG, seed=1, bands=BANDS) as w:
            images, truth = make_shards()[0]
            w.add_shard(images, truth)
            thing = Freed()
            ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGTERM))
            del thing
            gc.collect()
            assert ref() is None and stop_requested()  # the callback ran; its raise was lost
    assert siblings(tmp_path) == []
    assert "Exception ignored" not in capsys.readouterr().err
    assert not stop_requested()  # the handlers and the flag are reset after the block


def test_stale_partial_folders_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    host = storage._host()

    def partial(name: str, files=("shard-00000.h5",)) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for file in files:
            (folder / file).write_bytes(b"x")
        return folder

    stale = partial(f"a.partial-{host}-{dead_pid}-abc123_z", ("shard-00000.h5",
                                                              "manifest.json.tmp"))
    live = partial(f"b.partial-{host}-{os.getpid()}-abc123_z")
    other_host = partial(f"c.partial-{host}x-{dead_pid}-abc123_z")
    not_ours = partial(f"d.partial-{host}-{dead_pid}-abc123_z", ("notes.txt",))
    write(tmp_path / "split", make_shards())
    assert not stale.exists()
    assert all(p.is_dir() for p in (live, other_host, not_ours))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["split", live.name, other_host.name, not_ours.name])


def test_failed_overwrite_keeps_old_split(tmp_path):
    out = tmp_path / "split"
    write(out, make_shards(seed=0))
    before = dir_state(out)
    with pytest.raises(ValueError, match="shard 1"):
        with SplitWriter(out, config=CONFIG, seed=9, bands=BANDS) as w:
            images, truth = make_shards(seed=5)[0]
            w.add_shard(images, truth)
            w.add_shard(images.astype(np.float64), truth)
    assert siblings(tmp_path) == ["split"]
    assert dir_state(out) == before
    load_split(out)


def test_successful_overwrite_replaces_split(tmp_path):
    out = tmp_path / "split"
    write(out, make_shards(seed=0, sizes=(5, 5, 5, 5)))
    write(out, make_shards(seed=1, sizes=(3,)))
    assert siblings(tmp_path) == ["split"]
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "shard-00000.h5"]
    assert load_split(out).n == 3


def test_refuses_to_replace_unrelated_directory(tmp_path):
    out = tmp_path / "split"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a lensbench split"):
        write(out, make_shards())
    assert (out / "notes.txt").read_text() == "precious"
    assert siblings(tmp_path) == ["split"]


def test_corrupt_shard_detected(tmp_path):
    out = tmp_path / "split"
    write(out, make_shards())
    flip_image_byte(out / "shard-00001.h5")
    with pytest.raises(SplitError, match=r"shard-00001\.h5.*sha256 mismatch") as err:
        load_split(out)
    assert "corrupt or stale" in str(err.value)
    assert split_is_complete(out)  # the cheap check does not hash

    # verify=False skips hashing: the same-size corrupted shard still loads.
    split = load_split(out, verify=False)
    assert split.n == sum(SIZES)
    np.testing.assert_array_equal(split.truth["label"],
                                  np.concatenate([t["label"] for _, t in make_shards()]))


def test_missing_manifest(tmp_path):
    out = tmp_path / "split"
    write(out, make_shards())
    os.remove(out / MANIFEST)
    assert not split_is_complete(out)
    with pytest.raises(SplitError, match=r"manifest\.json missing \(an interrupted write\?\)"):
        load_split(out)


def test_bad_manifests(tmp_path):
    out = tmp_path / "split"
    write(out, make_shards())
    good = json.loads((out / MANIFEST).read_text())

    (out / MANIFEST).write_text("{not json")
    assert not split_is_complete(out)
    with pytest.raises(SplitError, match="not valid JSON"):
        load_split(out)

    for key, value, pattern in [("format", "other", "format is 'other'"),
                                ("format_version", 2, "format_version is 2"),
                                ("seed", 2, "content_hash"),
                                # the bands are not hashed: each plane must have its name
                                ("bands", ["g", "r"], r"bands \['g', 'r'\] must name each of "
                                                      r"the 3 image planes"),
                                ("bands", None, "bands None must name each"),
                                ("image_shape", [], r"image_shape \[\] must be 3 positive"),
                                ("image_shape", [3, 0, 8], r"image_shape \[3, 0, 8\] must")]:
        (out / MANIFEST).write_text(json.dumps({**good, key: value}))
        with pytest.raises(SplitError, match=pattern):
            load_split(out)

    shards = [dict(s) for s in good["shards"]]
    shards[1]["n"] += 1
    (out / MANIFEST).write_text(json.dumps({**good, "shards": shards}))
    with pytest.raises(SplitError, match=r"shard-00001\.h5: images have shape"):
        load_split(out, verify=False)

    (out / MANIFEST).write_text(json.dumps(good))
    os.remove(out / "shard-00002.h5")
    assert not split_is_complete(out)
    with pytest.raises(SplitError, match=r"shard-00002\.h5: listed in manifest\.json but missing"):
        load_split(out)


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda im, t: (im[0], t), r"shard 1: images must be a 4-D array"),
        (lambda im, t: (im.astype(np.float64), t), r"shard 1: images must be float32"),
        (lambda im, t: (im[:, :2], t), r"shard 1: images has 2 bands, expected 3"),
        (lambda im, t: (im[:, :, :4], t), r"shard 1: images are 4x8, expected 8x8"),
        (lambda im, t: (im, {**t, "theta_E": t["theta_E"][:-1]}),
         r"shard 1: truth column 'theta_E' has length 6, expected 7"),
        (lambda im, t: (im, {k: v for k, v in t.items() if k != "z_source"}),
         r"shard 1: truth column\(s\) \['z_source'\] missing"),
        (lambda im, t: (im, {**t, "extra": t["label"]}),
         r"shard 1: unexpected truth column\(s\) \['extra'\]"),
        (lambda im, t: (im, {**t, "label": t["label"].astype(np.int16)}),
         r"shard 1: truth column 'label' has dtype int16, expected int8"),
        (lambda im, t: (im, {**t, "name": np.array(["x"] * 7)}),
         r"shard 1: truth column 'name' must be a 1-D numeric array"),
    ],
)
def test_bad_inputs(tmp_path, mutate, pattern):
    (im0, t0), (im1, t1) = make_shards()[:2]
    out = tmp_path / "split"
    with pytest.raises(ValueError, match=pattern):
        with SplitWriter(out, config=CONFIG, seed=1, bands=BANDS) as w:
            w.add_shard(im0, t0)
            w.add_shard(*mutate(im1, t1))
    assert siblings(tmp_path) == []


def test_writer_misuse(tmp_path):
    with pytest.raises(ValueError, match="JSON-serialisable"):
        SplitWriter(tmp_path / "s", config={"x": object()}, seed=1, bands=BANDS)
    w = SplitWriter(tmp_path / "s", config=CONFIG, seed=1, bands=BANDS)
    with pytest.raises(RuntimeError, match="inside"):
        w.add_shard(*make_shards()[0])
    with pytest.raises(ValueError, match="no shards"):
        with SplitWriter(tmp_path / "s", config=CONFIG, seed=1, bands=BANDS):
            pass
    assert siblings(tmp_path) == []


def test_arrays_sha256_hashes_c_ordered_bytes_in_turn():
    """Two little-endian int32 pairs, one given in Fortran order: the bytes hashed are 1, 2 then
    the rows of [[3, 4], [5, 6]]."""
    first = np.array([1, 2], dtype="<i4")
    second = np.asfortranarray(np.array([[3, 4], [5, 6]], dtype="<i4"))
    expected = hashlib.sha256(b"".join(int(v).to_bytes(4, "little") for v in range(1, 7)))
    assert arrays_sha256(first, second) == expected.hexdigest()
    assert arrays_sha256(first.astype("<i8"), second) != expected.hexdigest()  # dtype counts
