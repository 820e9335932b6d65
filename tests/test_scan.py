"""`bench scan` and `bench inspect`: streaming, resumable scoring of real cutouts (single process
and on a Dask LocalCluster), bad cutouts in a side file, MLflow run ids, and the grading page in
headless Chromium."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import toy_lens_images
from lensbench.bench.cli import main
from lensbench.bench.tools import scan as scan_module
from lensbench.bench.tools.inspect_page import merge_grades, read_grades
from lensbench.bench.tools.scan import ScanFiles, read_locator, scan
from lensbench.datasets.storage import SplitWriter, load_split
from lensbench.deep.checkpoint import load_checkpoint, save_checkpoint
from lensbench.deep.methods import ResNetFinder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny fitted ResNetFinder checkpoint, a 2-shard split of 70 cutouts and a FITS folder
    with 12 good cutouts and 3 bad ones."""
    root = tmp_path_factory.mktemp("scan")
    rng = np.random.default_rng(7)
    X, y = toy_lens_images(rng, 64)
    # num_threads=1: torch 2.13 aborts in a 2-thread deterministic backward on some tiny
    # training sets (seen with 32 images); one thread is also what Dask workers use
    method = ResNetFinder(width=8, crop=None, max_epochs=2, batch_size=32, device="cpu",
                          num_threads=1, random_state=1).fit(X, y)
    ckpt = save_checkpoint(method, root / "model.pt")
    images, _ = toy_lens_images(rng, 70)
    split = root / "split"
    with SplitWriter(split, config={"kind": "test"}, seed=0, bands=["g", "r", "i", "z"],
                     created_by="test_scan") as writer:
        writer.add_shard(images[:45], {"object_id": np.arange(1000, 1045)})
        writer.add_shard(images[45:], {"object_id": np.arange(1045, 1070)})
    folder = root / "fits"
    folder.mkdir()
    cubes = images[:12]
    for k, cube in enumerate(cubes):
        fits.writeto(folder / f"obj{k:02d}.fits", cube)
    (folder / "corrupt.fits").write_bytes(b"SIMPLE  =  this is not a FITS file" * 10)
    fits.writeto(folder / "small.fits", cubes[0][:, :16, :16])
    nan = cubes[1].copy()
    nan[2, 5, 5] = np.nan
    fits.writeto(folder / "hasnan.fits", nan)
    (folder / "notes.txt").write_text("not a cutout")
    return {"root": root, "ckpt": ckpt, "split": split, "images": images, "fits": folder,
            "cubes": cubes}


def interrupt_after(n: int):
    """An on_batch callback that interrupts the scan as its n-th batch is recorded."""
    batches = []

    def on_batch(size: int) -> None:
        batches.append(size)
        if len(batches) == n:
            raise KeyboardInterrupt

    return on_batch


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def direct_scores(ckpt, images):
    return load_checkpoint(ckpt).predict_score_with_spread(images)


def assert_same_table(a, b, atol=1e-6):
    """Two ranked tables hold the same ids, scores (to atol) and sources, in the same order
    except where neighbouring scores tie to within atol."""
    assert [r["id"] for r in a] != [] and len(a) == len(b)
    by_id = {r["id"]: r for r in b}
    assert set(by_id) == {r["id"] for r in a}
    for row in a:
        other = by_id[row["id"]]
        assert float(row["score"]) == pytest.approx(float(other["score"]), abs=atol)
        assert float(row["spread"]) == pytest.approx(float(other["spread"]), abs=atol)
        assert row["source"] == other["source"]
    for x, y in zip(a, b, strict=True):
        if x["id"] != y["id"]:
            assert float(x["score"]) == pytest.approx(float(y["score"]), abs=atol)


def test_scan_split_ranks_every_cutout_with_the_model_scores(data, tmp_path):
    out = tmp_path / "candidates.csv"
    summary = scan(data["ckpt"], data["split"], out, batch_size=16, progress=False)
    rows = read_csv(out)
    assert summary.n_total == summary.n_scored == len(rows) == 70 and summary.n_bad == 0
    assert list(rows[0]) == ["rank", "id", "score", "spread", "source"]
    assert [int(r["rank"]) for r in rows] == list(range(1, 71))
    scores = np.array([float(r["score"]) for r in rows])
    assert np.all(np.diff(scores) <= 0)
    expected, spread = direct_scores(data["ckpt"], data["images"])
    by_id = {int(r["id"]): float(r["score"]) for r in rows}
    np.testing.assert_allclose([by_id[1000 + k] for k in range(70)], expected, atol=1e-6)
    assert all(float(r["spread"]) == 0.0 for r in rows) and np.all(spread == 0)
    # the locator reads back the very cutout that was scored
    top = rows[0]
    np.testing.assert_array_equal(read_locator(top["source"]),
                                  data["images"][int(top["id"]) - 1000])
    files = ScanFiles.for_output(out)
    assert not files.partial.exists() and not files.state.exists()
    assert read_csv(files.bad) == []


def test_scan_fits_folder_lists_bad_cutouts_with_reasons(data, tmp_path):
    out = tmp_path / "fits.csv"
    summary = scan(data["ckpt"], data["fits"], out, batch_size=5, progress=False)
    rows = read_csv(out)
    assert summary.layout == "fits" and len(rows) == 12 and summary.n_bad == 3
    expected, _ = direct_scores(data["ckpt"], data["cubes"])
    got = {r["id"]: float(r["score"]) for r in rows}
    np.testing.assert_allclose([got[f"obj{k:02d}"] for k in range(12)], expected, atol=1e-6)
    assert all(Path(r["source"]).parent == data["fits"].resolve() for r in rows)
    bad = {r["id"]: r for r in read_csv(tmp_path / "fits.bad.csv")}
    assert set(bad) == {"corrupt", "small", "hasnan"}
    assert "unreadable FITS" in bad["corrupt"]["reason"]
    assert "shape (4, 16, 16)" in bad["small"]["reason"]
    assert "1 NaN/inf" in bad["hasnan"]["reason"]
    assert bad["corrupt"]["source"].endswith("corrupt.fits")


def test_metcalf_layout_stacks_band_files_and_reports_a_missing_band(data, tmp_path):
    root = tmp_path / "Public"
    cubes = data["cubes"][:3]
    for band, name in zip(range(4), ("SDSS_U", "SDSS_G", "SDSS_R", "SDSS_I"), strict=True):
        (root / f"Band{band + 1}").mkdir(parents=True)
        for k, cube in enumerate(cubes):
            if k == 2 and name == "SDSS_I":
                continue  # object 102 lacks its i band
            fits.writeto(root / f"Band{band + 1}" / f"image{name}-{100 + k}.fits", cube[band])
    out = tmp_path / "metcalf.csv"
    summary = scan(data["ckpt"], root, out, batch_size=2, progress=False)
    assert summary.layout == "metcalf"
    rows = {r["id"]: r for r in read_csv(out)}
    assert set(rows) == {"100", "101"}
    expected, _ = direct_scores(data["ckpt"], cubes[:2])
    np.testing.assert_allclose([float(rows["100"]["score"]), float(rows["101"]["score"])],
                               expected, atol=1e-6)
    assert rows["100"]["source"].count(";") == 3
    bad = read_csv(tmp_path / "metcalf.bad.csv")
    assert [b["id"] for b in bad] == ["102"] and "missing band" in bad[0]["reason"]


def test_resume_after_an_interrupt_scores_no_cutout_twice(data, tmp_path, monkeypatch):
    reference = tmp_path / "reference.csv"
    scan(data["ckpt"], data["split"], reference, batch_size=8, progress=False)

    scored: list[str] = []
    real_score_batch = scan_module.score_batch

    def counting(blob, digest, items, num_threads=None, **options):
        scored.extend(item.id for item in items)
        return real_score_batch(blob, digest, items, num_threads, **options)

    monkeypatch.setattr(scan_module, "score_batch", counting)
    out = tmp_path / "candidates.csv"
    with pytest.raises(KeyboardInterrupt):
        scan(data["ckpt"], data["split"], out, batch_size=8, progress=False,
             on_batch=interrupt_after(3))
    files = ScanFiles.for_output(out)
    assert not out.exists() and files.partial.is_file()
    assert len(read_csv(files.partial)) == 24 and len(scored) == 24
    # an interrupt in the middle of a write leaves a torn last line: it is dropped
    with open(files.partial, "a") as f:
        f.write("99,1099,0.5")
    # a different model may not continue this scan
    other = ResNetFinder(width=8, crop=None, max_epochs=1, device="cpu", num_threads=1,
                         random_state=5).fit(*toy_lens_images(np.random.default_rng(3), 64))
    other_ckpt = save_checkpoint(other, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="different model"):
        scan(other_ckpt, data["split"], out, batch_size=8, progress=False)

    summary = scan(data["ckpt"], data["split"], out, batch_size=8, progress=False)
    assert summary.n_scored_now == 70 - 24 and summary.out == out
    assert len(scored) == 70 and len(set(scored)) == 70
    assert read_csv(out) == read_csv(reference)
    assert not files.partial.exists()


def test_a_batch_recorded_in_part_is_scored_again_whole(data, tmp_path, monkeypatch):
    """A kill in the middle of writing a batch can leave some of its rows on disk. The resumed
    scan scores that batch again whole, at the same bounds: a network's scores move in the 7th
    digit with the cutouts that share its batch, and the table must equal an uninterrupted
    scan's to the last digit."""
    reference = tmp_path / "reference.csv"
    scan(data["ckpt"], data["split"], reference, batch_size=8, progress=False)
    out = tmp_path / "candidates.csv"
    with pytest.raises(KeyboardInterrupt):
        scan(data["ckpt"], data["split"], out, batch_size=8, progress=False,
             on_batch=interrupt_after(3))
    files = ScanFiles.for_output(out)
    lines = files.partial.read_text().splitlines(keepends=True)
    assert len(lines) == 1 + 24
    files.partial.write_text("".join(lines[:-3]))  # the third batch's last 3 rows never written

    scored: list[list[str]] = []
    real_score_batch = scan_module.score_batch

    def recording(blob, digest, items, num_threads=None, **options):
        scored.append([item.id for item in items])
        return real_score_batch(blob, digest, items, num_threads, **options)

    monkeypatch.setattr(scan_module, "score_batch", recording)
    summary = scan(data["ckpt"], data["split"], out, batch_size=8, progress=False)
    ids = [str(i) for i in range(1000, 1070)]
    assert scored == [ids[start:start + 8] for start in range(16, 70, 8)]
    assert summary.n_scored == 70 and summary.n_scored_now == 70 - 16
    assert out.read_bytes() == reference.read_bytes()


def test_local_cluster_with_two_workers_equals_the_single_process_scan(data, tmp_path):
    from distributed import LocalCluster

    single = tmp_path / "single.csv"
    scan(data["ckpt"], data["split"], single, batch_size=8, progress=False)
    dask = tmp_path / "dask.csv"
    summary = scan(data["ckpt"], data["split"], dask, batch_size=8, workers=2, progress=False)
    assert summary.n_scored_now == 70
    assert_same_table(read_csv(dask), read_csv(single))
    # a running scheduler (--scheduler ADDRESS), FITS files with bad ones among them
    fits_single = tmp_path / "fits-single.csv"
    scan(data["ckpt"], data["fits"], fits_single, batch_size=4, progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        assert len(cluster.workers) == 2
        fits_dask = tmp_path / "fits-dask.csv"
        scan(data["ckpt"], data["fits"], fits_dask, batch_size=4, scheduler=cluster.
             scheduler_address, progress=False)
    assert_same_table(read_csv(fits_dask), read_csv(fits_single))
    assert read_csv(tmp_path / "fits-dask.bad.csv") == read_csv(tmp_path / "fits-single.bad.csv")


def test_model_given_as_an_mlflow_run_id(data, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("scan", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment)
    client.log_artifact(run.info.run_id, str(data["ckpt"]))
    client.set_terminated(run.info.run_id)
    out = tmp_path / "candidates.csv"
    assert main(["scan", "--model", run.info.run_id, "--cutouts", str(data["fits"]),
                 "--out", str(out), "--tracking-uri", uri, "--no-progress"]) == 0
    reference = tmp_path / "reference.csv"
    scan(data["ckpt"], data["fits"], reference, progress=False)
    assert read_csv(out) == read_csv(reference)
    assert main(["scan", "--model", "0" * 32, "--cutouts", str(data["fits"]), "--out",
                 str(tmp_path / "x.csv"), "--tracking-uri", uri, "--no-progress"]) == 2
    assert main(["scan", "--model", str(tmp_path / "nope.pt"), "--cutouts",
                 str(data["fits"]), "--out", str(tmp_path / "x.csv")]) == 2


def test_inspect_page_grades_with_the_keyboard_in_headless_chromium(data, tmp_path, chromium):
    from playwright.sync_api import sync_playwright

    candidates = tmp_path / "candidates.csv"
    assert main(["scan", "--model", str(data["ckpt"]), "--cutouts", str(data["fits"]),
                 "--out", str(candidates), "--no-progress"]) == 0
    ranked = read_csv(candidates)
    page_file = tmp_path / "inspect.html"
    assert main(["inspect", str(candidates), "--out", str(page_file), "--per-page", "5"]) == 0
    text = page_file.read_text()
    assert "data:image/png;base64," in text and "http://" not in text and "https://" not in text

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            context = browser.new_context(accept_downloads=True)
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_file.as_uri())
            cards = page.locator(".card")
            assert cards.count() == 5
            assert page.locator(".card img").count() == 5
            assert page.locator("#pager").inner_text() == "page 1 / 3"
            first_ids = [cards.nth(k).get_attribute("data-id") for k in range(5)]
            assert first_ids == [r["id"] for r in ranked[:5]]
            assert f"score {float(ranked[0]['score']):.4f}" in cards.nth(0).inner_text()
            page.keyboard.press("a")      # rank 1 -> A, moves on
            page.keyboard.press("b")      # rank 2 -> B
            page.keyboard.press("n")      # rank 3 -> not a lens
            page.keyboard.press("ArrowRight")  # skip rank 4
            page.keyboard.press("c")      # rank 5 -> C, now at rank 6
            for _ in range(3):
                page.keyboard.press("ArrowLeft")
            assert page.locator(".card.current").get_attribute("data-id") == ranked[2]["id"]
            assert page.locator(".card.current .grade").inner_text() == "not"
            page.keyboard.press("u")      # clear rank 3 again (the cursor stays)
            assert page.locator(".card.current .grade").count() == 0
            page.keyboard.press("0")      # ... and grade it not a lens with 0
            page.keyboard.press("]")      # page 2
            assert page.locator("#pager").inner_text() == "page 2 / 3"
            page.keyboard.press("a")      # rank 6 -> A
            assert page.locator("#count").inner_text().startswith("5 / 12")
            with page.expect_download() as download_info:
                page.keyboard.press("e")
            grades_file = tmp_path / "grades.csv"
            download_info.value.save_as(grades_file)
            # grades survive a reload (localStorage). Chromium passes a page's writes to its
            # storage service asynchronously, and reloading a page whose writes were still
            # queued lost them twice in CI (0 / 12 after 10 s of reloads). So wait, with the
            # page still open, until another page of the browser reads the grades from the
            # service (up to 10 s), then reload the first: it must show them.
            key = page.evaluate("DATA.storageKey")
            reader = context.new_page()
            reader.goto(page_file.as_uri())
            deadline = time.monotonic() + 10
            while (len(json.loads(reader.evaluate("k => localStorage.getItem(k) || '{}'", key)))
                   < 5 and time.monotonic() < deadline):
                time.sleep(0.25)
            reader.close()
            page.reload()
            assert page.locator("#count").inner_text().startswith("5 / 12")
            assert errors == []
        finally:
            browser.close()

    exported = read_csv(grades_file)
    assert [(r["id"], r["grade"]) for r in exported] == [
        (ranked[0]["id"], "A"), (ranked[1]["id"], "B"), (ranked[2]["id"], "not_lens"),
        (ranked[4]["id"], "C"), (ranked[5]["id"], "A")]
    assert [int(r["rank"]) for r in exported] == [1, 2, 3, 5, 6]

    assert main(["inspect", str(candidates), "--merge", str(grades_file)]) == 0
    merged = read_csv(candidates)
    assert [r["id"] for r in merged] == [r["id"] for r in ranked]
    assert [r["grade"] for r in merged[:7]] == ["A", "B", "not_lens", "", "C", "A", ""]
    assert all(r["grade"] == "" for r in merged[6:])


def test_merge_rejects_unknown_ids_and_grades(data, tmp_path):
    candidates = tmp_path / "c.csv"
    scan(data["ckpt"], data["fits"], candidates, progress=False)
    bad_id = tmp_path / "g1.csv"
    bad_id.write_text("id,grade\nnot-a-candidate,A\n")
    with pytest.raises(ValueError, match="not in"):
        merge_grades(candidates, bad_id)
    bad_grade = tmp_path / "g2.csv"
    bad_grade.write_text("id,grade\nobj00,maybe\n")
    with pytest.raises(ValueError, match="not one of"):
        read_grades(bad_grade)
    good = tmp_path / "g3.csv"
    good.write_text("id,grade\nobj00,B\n")
    out, graded = merge_grades(candidates, good, out=tmp_path / "merged.csv")
    assert graded == 1 and {r["id"]: r["grade"] for r in read_csv(out)}["obj00"] == "B"
    assert "grade" not in read_csv(candidates)[0]


def test_split_ids_come_from_object_id(data):
    split = load_split(data["split"])
    items, layout = scan_module.list_items(data["split"])
    assert layout == "split" and [i.id for i in items] == [str(v) for v in
                                                            split.truth["object_id"]]
    assert items[45].source.endswith("shard-00001.h5#0")


def test_resume_files_that_this_scan_did_not_write_are_refused(data, tmp_path):
    out = tmp_path / "candidates.csv"

    def interrupt(size):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scan(data["ckpt"], data["split"], out, batch_size=8, progress=False, on_batch=interrupt)
    files = ScanFiles.for_output(out)
    written, state = files.partial.read_text(), files.state.read_text()
    for name, text, message in (
            ("partial", written + "99999,fake,2.5,0.0,/etc/passwd\n",
             r"partial: line 10 is not a row this scan wrote \(index='99999', id='fake'"),
            ("partial", written.replace(",0.", ",high0.", 1), "line 2 is not a row this scan"),
            ("partial", written + '"' + "x" * 200_000 + "\n", "not a CSV lensbench wrote"),
            ("bad", "id,source,reason\nfake,x,y\n", r"bad\.csv: line 2 names a cutout this "
                                                     r"scan does not have \('fake'\)"),
            ("state", state[:10], r"scan\.json: not the state of a lensbench scan")):
        getattr(files, name).write_text(text)
        with pytest.raises(ValueError, match=message):
            scan(data["ckpt"], data["split"], out, batch_size=8, progress=False)
        assert not out.exists()
        files.partial.write_text(written)
        files.bad.unlink(missing_ok=True)
        files.state.write_text(state)
    summary = scan(data["ckpt"], data["split"], out, batch_size=8, progress=False)
    assert summary.complete and summary.n_scored_now == 70 - 8


def test_a_split_of_other_bands_than_the_model_takes_is_refused(data, tmp_path):
    from lensbench.baselines.contract import TaskInfo
    from lensbench.baselines.persistence import make_contract, save_model

    info = TaskInfo(name="t", kind="lens-finding", bands=("g", "r", "i", "y"), pixel_scale=0.2,
                    image_shape=tuple(data["images"].shape[1:]))
    X, y = toy_lens_images(np.random.default_rng(4), 32)
    method = ResNetFinder(width=8, crop=None, max_epochs=1, batch_size=32, device="cpu",
                          num_threads=1, random_state=1).fit(X, y, info=info)
    model = save_model(method, tmp_path / "m.lbmodel", make_contract(method, info))
    # the split's 4 planes fit the model's shape, but its fourth band is z, not y
    with pytest.raises(ValueError, match=r"split: a split of bands g,r,i,z; the model takes "
                                         r"g,r,i,y \(in that order\)"):
        scan(model, data["split"], tmp_path / "c.csv", progress=False)


def test_a_second_scan_of_the_same_table_is_refused(data, tmp_path):
    out = tmp_path / "c.csv"
    with scan_module._exclusive(tmp_path / "c.csv.lock"):
        with pytest.raises(ValueError, match="another scan is writing"):
            scan(data["ckpt"], data["fits"], out, progress=False)
    assert not out.exists()
    scan(data["ckpt"], data["fits"], out, progress=False)  # free again
    assert len(read_csv(out)) == 12
    assert not (tmp_path / "c.csv.lock").exists()  # no lock file is left beside the table


def test_a_finished_scan_is_kept_until_restart(data, tmp_path):
    out = tmp_path / "c.csv"
    scan(data["ckpt"], data["fits"], out, progress=False)
    finished = out.read_text()
    # A rerun names the finished table (perhaps graded since) and leaves it as it is.
    with pytest.raises(ValueError, match=r"c\.csv holds a finished scan.*--restart"):
        scan(data["ckpt"], data["fits"], out, progress=False)
    assert out.read_text() == finished
    summary = scan(data["ckpt"], data["fits"], out, progress=False, restart=True)
    assert summary.complete and out.read_text() == finished  # the same scan again
    # Without the table, a left-over bad list alone does not say which scan made it.
    out.unlink()
    with pytest.raises(ValueError, match=r"c\.bad\.csv exist\(s\) without c\.csv\.scan\.json"):
        scan(data["ckpt"], data["fits"], out, progress=False)


def test_duplicate_ids_are_an_error_not_a_silent_skip(data, tmp_path):
    folder = tmp_path / "dup"
    folder.mkdir()
    fits.writeto(folder / "a.fits", data["cubes"][0])
    fits.writeto(folder / "a.fits.gz", data["cubes"][1])
    with pytest.raises(ValueError, match="names two cutouts"):
        scan(data["ckpt"], folder, tmp_path / "c.csv", progress=False)
