"""The design suite (issue 11): variants as data, one fixed test set, lens-light subtraction, the
suite end to end through the CLI (results, MLflow tags, report) and the generated statement."""

from __future__ import annotations

import dataclasses
import json
import shutil
from functools import cache

import numpy as np
import pytest
import torch
from lensbench.baselines.lenslight import subtract_lens_light
from lensbench.baselines.registry import resolve_method
from lensbench.bench import cli
from lensbench.bench.results import Result, canonical_run_id, read_results
from lensbench.bench.runner import run_suite
from lensbench.bench.statistics import paired_bootstrap
from lensbench.bench.suites.design import (
    BASE_BANDS,
    BASELINE,
    PROFILE_VARIANTS,
    ROTATION_SUBSET,
    VARIANTS,
    VARIANTS_BY_NAME,
    Row,
    SplitView,
    configuration,
    design_rows,
    design_statement,
    without_variant_params,
)
from lensbench.bench.tasks import DESIGN_HSC, get_suite
from lensbench.datasets.config import NEGATIVE_CLASSES, SimConfig
from lensbench.datasets.lensing import sersic_profile
from lensbench.datasets.simulate import Simulator
from lensbench.datasets.storage import load_split
from lensbench.deep.preprocess import STRETCHES
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

HARD = [NEGATIVE_CLASSES.index(c) for c in ("spiral", "ring", "merger", "group", "edge-on")]


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_every_variant_builds_a_valid_config_and_differs_where_it_claims():
    base = DESIGN_HSC.config
    assert len({v.name for v in VARIANTS}) == len(VARIANTS)
    committee = resolve_method("committee")().get_params()
    for variant in VARIANTS:
        config = variant.train_config(base)
        assert isinstance(config, SimConfig)
        assert SimConfig.from_dict(config.to_dict()) == config
        fields, base_fields = dataclasses.asdict(config), dataclasses.asdict(base)
        changed = {k for k, v in fields.items() if base_fields[k] != v}
        assert changed == set(variant.train), variant.name  # exactly the claimed overrides
        assert set(variant.bands) <= set(base.band_names)
        assert set(variant.method_params) <= set(committee)
        if "stretch" in variant.method_params:
            assert variant.method_params["stretch"] in STRETCHES
            assert variant.method_params["stretch"] != committee["stretch"]
        differs = (variant.train or variant.bands != BASE_BANDS or variant.method_params
                   or variant.lens_light)
        assert bool(differs) == (variant.name != BASELINE), variant.name
    assert {len(VARIANTS_BY_NAME[n].bands) for n in ("bands-gri", BASELINE, "bands-grizy")} == {
        3, 4, 5}
    for names in PROFILE_VARIANTS.values():
        assert BASELINE in names and set(names) <= set(VARIANTS_BY_NAME)


@cache
def simulated_truth(name: str) -> dict:
    """Truth of 150 training cutouts of a variant (32x32 g,i stamps: the distributions do not
    depend on the stamp)."""
    base = DESIGN_HSC.config.replace(stamp_size=32, bands=("g", "i"))
    return Simulator(VARIANTS_BY_NAME[name].train_config(base)).simulate(150, 7)[1]


def _lenses(truth):
    return truth["label"].astype(bool)


def test_theta_e_variant_draws_a_flatter_distribution(real_data):
    real_data("cosmos")
    natural, flat = simulated_truth(BASELINE), simulated_truth("flat-theta")
    th_nat, th_flat = natural["theta_e"][_lenses(natural)], flat["theta_e"][_lenses(flat)]
    assert np.mean(th_flat > 1.75) > np.mean(th_nat > 1.75) + 0.1
    hist_nat = np.histogram(th_nat, bins=5, range=(0.5, 3.0))[0]
    hist_flat = np.histogram(th_flat, bins=5, range=(0.5, 3.0))[0]
    assert hist_flat.std() / hist_flat.mean() < 0.7 * hist_nat.std() / hist_nat.mean()


def test_negative_variants_change_the_non_lens_classes(real_data):
    real_data("cosmos")
    def hard_share(truth):
        classes = truth["negative_class"][~_lenses(truth)]
        return np.isin(classes, HARD).mean(), set(np.unique(classes).tolist())

    base_share, _ = hard_share(simulated_truth(BASELINE))
    random_share, random_classes = hard_share(simulated_truth("negatives-random"))
    boosted_share, boosted_classes = hard_share(simulated_truth("negatives-hard"))
    assert random_share == 0 and random_classes <= {NEGATIVE_CLASSES.index("elliptical"),
                                                    NEGATIVE_CLASSES.index("cosmos")}
    assert base_share > 0.3
    assert boosted_share > base_share + 0.1
    assert set(HARD) <= boosted_classes  # every hard class is there


def test_quad_label_and_source_variants_change_the_lenses(real_data):
    real_data("cosmos")
    def lens_column(name, column):
        truth = simulated_truth(name)
        return truth[column][_lenses(truth)]

    assert (np.mean(lens_column("quads-half", "n_images") >= 4)
            > np.mean(lens_column(BASELINE, "n_images") >= 4) + 0.2)
    # Clean labels: every baseline lens passes the cuts; Metcalf labels keep faint, weak ones.
    cut = DESIGN_HSC.config
    assert (lens_column(BASELINE, "magnification") >= cut.min_magnification).all()
    assert (lens_column(BASELINE, "arc_snr") >= cut.min_arc_snr).all()
    metcalf_fails = ((lens_column("labels-metcalf", "magnification") < cut.min_magnification)
                     | (lens_column("labels-metcalf", "arc_snr") < cut.min_arc_snr))
    assert metcalf_fails.mean() > 0.1
    assert 0 < lens_column(BASELINE, "source_is_real").mean() < 1
    assert (lens_column("sources-sersic", "source_is_real") == 0).all()
    assert (lens_column("sources-cosmos", "source_is_real") == 1).all()


class FakeSplit:
    bands = ["g", "r", "i", "z", "y"]
    n, content_hash, manifest, path = 3, "abc", {}, None
    image_shape = (5, 4, 4)
    truth = {"label": np.array([0, 1, 0])}

    def images(self, indices=None):
        data = np.arange(3 * 5 * 16, dtype=np.float32).reshape(3, 5, 4, 4)
        return data if indices is None else data[np.asarray(indices)]


def test_split_view_gives_the_variant_bands_of_the_same_split():
    split = FakeSplit()
    for name, bands in (("bands-gri", "gri"), (BASELINE, "griz"), ("bands-grizy", "grizy")):
        view = SplitView(split, VARIANTS_BY_NAME[name].bands)
        assert view.bands == list(bands) and view.image_shape == (len(bands), 4, 4)
        images = view.images([2, 0])
        assert images.shape == (2, len(bands), 4, 4)
        assert np.array_equal(images, split.images([2, 0])[:, :len(bands)])
        assert view.content_hash == split.content_hash and view.n == 3
    assert np.array_equal(SplitView(split, ("z", "g")).images()[:, 0], split.images()[:, 3])
    with pytest.raises(ValueError, match="not in the split"):
        SplitView(split, ("g", "Y"))


def _galaxy_images(n=4, seed=0, arc=0.0):
    """PSF-convolved elliptical Sersic galaxies (HSC pixels) with red colours and a little noise,
    plus optionally a blue arc of total g flux ``arc`` at 1.6": (images, arc images)."""
    scale, size = 0.168, 64
    c = (np.arange(size) - (size - 1) / 2) * scale
    yy, xx = np.meshgrid(c, c, indexing="ij")
    x, y = torch.tensor(xx), torch.tensor(yy)
    rng = np.random.default_rng(seed)
    colours = np.array([0.1, 0.45, 1.0, 1.4, 1.6])  # g, r, i, z, y relative to i
    images, arcs = [], []
    for _ in range(n):
        profile = sersic_profile(x, y, 1.0, rng.uniform(0.6, 1.5), rng.uniform(3.0, 5.0),
                                 rng.uniform(0.5, 1.0), torch.tensor(rng.uniform(0, np.pi)),
                                 rng.normal(0, 0.05), rng.normal(0, 0.05)).numpy()
        profile = gaussian_filter(profile, 0.6 / 2.355 / scale)
        galaxy = colours[:, None, None] * profile / profile.sum() * 100.0
        radius, angle = np.hypot(xx, yy), np.arctan2(yy, xx)
        shape = np.exp(-0.5 * ((radius - 1.6) / 0.12) ** 2) * (np.abs(angle) < 0.6)
        shape = gaussian_filter(shape, 0.6 / 2.355 / scale)
        arc_image = np.array([1.0, 0.9, 0.8, 0.75, 0.7])[:, None, None] * shape / shape.sum() * arc
        images.append(galaxy + arc_image + rng.normal(0, 0.005, galaxy.shape))
        arcs.append(arc_image)
    return np.array(images, dtype=np.float32), np.array(arcs)


def test_lens_light_subtraction_removes_most_of_a_pure_sersic_galaxy():
    images, _ = _galaxy_images()
    residual = subtract_lens_light(images, ["g", "r", "i", "z", "y"], pixel_scale=0.168)
    assert residual.shape == images.shape and residual.dtype == np.float32
    flux = images.sum(axis=(2, 3))
    left = np.abs(residual.sum(axis=(2, 3))) / flux
    assert (left[:, 1:] < 0.1).all(), left  # r, i, z, y: < 10% of the galaxy's flux remains
    core = np.s_[..., 20:44, 20:44]
    energy = (residual[core] ** 2).sum(axis=(2, 3)) / (images[core] ** 2).sum(axis=(2, 3))
    assert (energy[:, 1:] < 0.05).all(), energy


def test_lens_light_subtraction_keeps_an_arc():
    images, arcs = _galaxy_images(arc=8.0)
    residual = subtract_lens_light(images, ["g", "r", "i", "z", "y"], pixel_scale=0.168)
    on_arc = arcs[:, 0] > 0.02 * arcs[:, 0].max()
    for k in range(len(images)):
        kept = residual[k, 0][on_arc[k]].sum() / arcs[k, 0][on_arc[k]].sum()
        assert 0.5 < kept < 1.5, kept
        # Before subtraction the galaxy dominates those pixels in the red bands.
        assert images[k, 3][on_arc[k]].sum() > 2 * arcs[k, 3][on_arc[k]].sum()


def test_paired_bootstrap_of_a_change():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 200)
    noise = rng.random(400)
    same = paired_bootstrap(labels, noise, noise, resamples=50)
    assert same["auroc"] == (0.0, 0.0, 0.0) and same["tpr10"] == (0.0, 0.0, 0.0)
    better = paired_bootstrap(labels, labels + 0.5 * noise, noise, resamples=50)
    observed, low, high = better["auroc"]
    assert observed == pytest.approx(1.0 - (noise[200:, None] > noise[:200]).mean(), abs=1e-9)
    assert 0 < low <= observed <= high


def _row(name: str, auroc: float, tpr10: float, delta=None, recovered=0.0) -> Row:
    metrics = {"auroc": auroc, "tpr10": tpr10, "tpr_fpr1e-3": tpr10 / 2, "tpr0": 0.0,
               "real/known_lenses": 5.0, "real/recovered_fpr1e-3": recovered}
    result = Result(run_id=f"m[variant={name}]", method="m", task="t", suite="design",
                    profile="default", params={"variant": name}, split_hashes={}, seed=0,
                    status="ok", metrics=metrics)
    return Row(VARIANTS_BY_NAME[name], result, delta or {})


def test_runs_of_other_parameters_form_their_own_comparison(tmp_path):
    def run(variant, user):
        params = {**user, **VARIANTS_BY_NAME[variant].method_params,
                  **VARIANTS_BY_NAME[variant].record()}
        return Result(run_id=canonical_run_id("committee", {**user, "variant": variant}),
                      method="committee", task="design-hsc", suite="design", profile="default",
                      params=params, split_hashes={}, seed=1, status="ok")

    runs = [run(v, user) for user in ({}, {"max_epochs": 5}, {"max_epochs": 5, "width": 8})
            for v in (BASELINE, "stretch-sqrt")]
    assert [configuration(r) for r in runs] == [
        "committee", "committee", "committee[max_epochs=5]", "committee[max_epochs=5]",
        "committee[max_epochs=5,width=8]", "committee[max_epochs=5,width=8]"]
    rows = design_rows(runs, tmp_path)
    assert {key: [row.variant.name for row in value] for key, value in rows.items()} == {
        key: [BASELINE, "stretch-sqrt"] for key in
        ("committee", "committee[max_epochs=5]", "committee[max_epochs=5,width=8]")}
    # The stretch the variant set is not the user's parameter; the user's epochs are.
    assert "stretch" not in without_variant_params(runs[3]).params
    assert without_variant_params(runs[3]).params["max_epochs"] == 5


def test_statement_ranks_variants_by_their_changes():
    rows = [_row(BASELINE, 0.90, 0.40, recovered=2),
            _row("flat-theta", 0.91, 0.41, {"auroc": (0.01, -0.01, 0.03),
                                            "tpr10": (0.01, -0.05, 0.06)}, recovered=3),
            _row("sources-sersic", 0.80, 0.10, {"auroc": (-0.10, -0.12, -0.08),
                                                "tpr10": (-0.30, -0.35, -0.25)}, recovered=0),
            _row("bands-gri", 0.87, 0.30, {"auroc": (-0.03, -0.04, -0.02),
                                           "tpr10": (-0.10, -0.20, 0.01)}, recovered=2),
            _row("lens-light", 0.93, 0.45, {"auroc": (0.03, 0.01, 0.05),
                                            "tpr10": (0.05, -0.02, 0.10)}, recovered=2)]
    text = "\n".join(design_statement(rows))
    lower = next(line for line in text.splitlines() if "clearly lower" in line)
    assert lower.index("`sources-sersic`") < lower.index("`bands-gri`")
    assert "`lens-light`" in next(line for line in text.splitlines() if "clearly higher" in line)
    assert "`flat-theta`" in next(line for line in text.splitlines() if "Within the noise" in line)
    ranking = next(line for line in text.splitlines() if "ranked" in line)
    assert (ranking.index("source model 0.100") < ranking.index("bands 0.030")
            < ranking.index("theta_E distribution 0.010"))
    tpr = next(line for line in text.splitlines() if line.startswith("- TPR10"))
    assert "`sources-sersic` -0.300" in tpr and "largest change `sources-sersic`" in tpr
    real = next(line for line in text.splitlines() if "Known real lenses" in line)
    assert "from 0 (`sources-sersic`) to 3 (`flat-theta`) of 5" in real
    assert "baseline recovers 2" in real
    assert design_statement(rows[1:])[0].startswith("No statement")


def test_design_suite_through_the_cli(tmp_path, real_data, real_lens_splits):
    real_data("cosmos", "slacs")
    from mlflow.tracking import MlflowClient

    workdir, out = tmp_path / "work", tmp_path / "reports"
    # The split of real lenses as ensure_real_lens_split made it once this session (conftest;
    # test_golden_hashes pins its bytes), found by its key: the simulated splits are made here.
    real_lens_splits.copy_into(workdir, DESIGN_HSC)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli.main(["run", "--suite", "design", "--profile", "smoke", "--workdir",
                     str(workdir), "--tracking-uri", uri, "--strict"]) == 0
    results = read_results(workdir / "results.jsonl")
    names = PROFILE_VARIANTS["smoke"]
    assert [r.params["variant"] for r in results] == list(names)
    assert all(r.status == "ok" and r.method == "committee" for r in results)
    assert {r.run_id for r in results} == {f"committee[variant={n}]" for n in names}
    # One test split and one real split for every variant.
    assert len({r.split_hashes["test"] for r in results}) == 1
    assert len({r.split_hashes["real"] for r in results}) == 1
    # The real lenses are degraded in every band of the design task (variants pick from them).
    [real] = [load_split(p) for p in (workdir / "splits").glob(f"{DESIGN_HSC.name}-*-real-*")]
    assert tuple(real.bands) == DESIGN_HSC.config.band_names
    assert real.images([0]).shape[1] == len(DESIGN_HSC.config.band_names) == 5
    by_name = {r.params["variant"]: r for r in results}
    base_train = by_name[BASELINE].split_hashes["train"]
    assert by_name["flat-theta"].split_hashes["train"] != base_train
    for name in ("bands-gri", "stretch-sqrt", "lens-light"):
        assert by_name[name].split_hashes["train"] == base_train  # paired: same images
    assert by_name["stretch-sqrt"].params["stretch"] == "sqrt"
    assert by_name["bands-gri"].params["variant_bands"] == "g,r,i"
    assert json.loads(by_name["flat-theta"].params["variant_train"]) == {
        "theta_e_distribution": "flat"}
    for r in results:
        assert r.metrics["real/known_lenses"] >= 1 and "tpr_fpr1e-3" in r.metrics
        assert r.n_test == DESIGN_HSC.size("smoke")[1]
        # Rotation invariance is measured for every variant (issue 11 point 2).
        assert r.metrics["rotation/n_cutouts"] == min(r.n_test, ROTATION_SUBSET)
        assert 0 <= r.metrics["rotation/mean_abs_change"] <= r.metrics["rotation/max_abs_change"]
    # One MLflow run per variant, tagged with it.
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("lensbench-design")
    runs = client.search_runs([experiment.experiment_id], "tags.`lensbench.kind` = 'run'")
    assert sorted(run.data.tags["lensbench.variant"] for run in runs) == sorted(names)
    assert all(run.data.params["param.variant"] == run.data.tags["lensbench.variant"]
               for run in runs)

    assert cli.main(["report", "--suite", "design", "--profile", "smoke", "--workdir",
                     str(workdir), "--out", str(out)]) == 0
    text = (out / "design-smoke.md").read_text()
    statement = text.split("### Which choices matter")[1].split("![")[0]
    for name in names[1:]:
        assert f"`{name}`" in statement
    assert "Against `baseline`" in statement
    assert (out / "design-smoke-committee.png").stat().st_size > 5000
    for name in names:
        assert f"| `{name}` |" in text
    assert "rot. mean abs(ds) | rot. max abs(ds) | rot. TPR0 spread" in text

    # A method without a stretch declines that variant; --resume skips what is done.
    suite = get_suite("design")
    again = run_suite(suite, profile="smoke", seed=0, workdir=workdir,
                      methods=["committee", "random"], resume=True, log=lambda _: None)
    assert {r.method for r in again} == {"random"}
    declined = [r for r in again if r.status == "declined"]
    assert [r.params["variant"] for r in declined] == ["stretch-sqrt"]
    assert "stretch" in declined[0].error

    # --variants runs the named variants only, here one outside the smoke profile's. Its
    # workdir starts with the splits made above (a workdir reuses a split by its key): the test
    # and real splits are found there only if the variant asks for the same ones; its own
    # training set (another key) is simulated.
    other = tmp_path / "other"
    shutil.copytree(workdir / "splits", other / "splits")
    assert cli.main(["run", "--suite", "design", "--profile", "smoke", "--workdir", str(other),
                     "--methods", "random", "--variants", "lens-population",
                     "--no-tracking"]) == 0
    [only] = read_results(other / "results.jsonl")
    assert only.params["variant"] == "lens-population"
    assert only.split_hashes["test"] == by_name[BASELINE].split_hashes["test"]
    assert only.split_hashes["train"] != base_train


def test_bootstrap_without_a_base_gives_the_metric_and_its_interval():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 300)
    scores = labels + rng.normal(0, 0.8, 600)
    alone = paired_bootstrap(labels, scores, None, resamples=100)
    observed, low, high = alone["auroc"]
    assert observed == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert low < observed < high and high - low < 0.1
