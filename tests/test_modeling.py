"""The modeling suite (issue 7): target transforms under the dihedral group, the Gaussian
likelihood, the metrics against hand-worked cases, the regression net, checkpoints, provenance and
the suite end to end through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lensbench.baselines.contract import LENS_MODEL_TARGETS, TaskInfo
from lensbench.baselines.modeling import GradientBoostingModeling, gaussian_nll, interval_scale
from lensbench.bench.suites.modeling import binned_parameter_metrics, parameter_metrics
from lensbench.deep.preprocess import dihedral
from lensbench.deep.regression import (
    GaussianRegression,
    ResNetRegressor,
    inverse_dihedral,
    transform_targets,
)

PIXEL = 0.168
INFO = TaskInfo(name="t", kind="modeling", bands=("g", "r", "i", "z"), pixel_scale=PIXEL,
                image_shape=(4, 24, 24), survey="hsc", targets=LENS_MODEL_TARGETS)


def grid(n: int):
    """The simulator's grid: x along columns, y along rows, pixel centres (arcsec)."""
    axis = ((np.arange(n) + 0.5) - n / 2) * PIXEL
    return np.meshgrid(axis, axis, indexing="ij")[::-1]


def blob(xx, yy, x0, y0, e1, e2, size):
    """An elliptical Gaussian whose ellipticity (1-q)/(1+q) (cos 2phi, sin 2phi) is (e1, e2)."""
    e, phi = np.hypot(e1, e2), 0.5 * np.arctan2(e2, e1)
    q = (1 - e) / (1 + e)
    c, s = np.cos(phi), np.sin(phi)
    u = (xx - x0) * c + (yy - y0) * s
    v = -(xx - x0) * s + (yy - y0) * c
    return np.exp(-0.5 * (u**2 + (v / q) ** 2) / size**2)


def moments(image, xx, yy):
    """Centroid and the direction (cos 2phi, sin 2phi) of the second moments."""
    f = image / image.sum()
    x0, y0 = (f * xx).sum(), (f * yy).sum()
    qxx, qyy = (f * (xx - x0) ** 2).sum(), (f * (yy - y0) ** 2).sum()
    qxy = (f * (xx - x0) * (yy - y0)).sum()
    chi = np.array([qxx - qyy, 2 * qxy])
    return np.array([x0, y0]), chi / np.hypot(*chi)


def toy_lens_models(n=120, size=24, seed=0):
    """Four-band images of an elliptical blob whose centre, ellipticity and size (theta_E) are
    the targets; the shear is noise the images do not show."""
    rng = np.random.default_rng(seed)
    xx, yy = grid(size)
    Y = np.column_stack([rng.normal(0, 0.3, (n, 2)), rng.uniform(-0.3, 0.3, (n, 2)),
                         rng.uniform(0.4, 1.0, n), rng.normal(0, 0.05, (n, 2))])
    X = rng.normal(0, 0.05, (n, 4, size, size)).astype(np.float32)
    for i, (x0, y0, e1, e2, theta, _, _) in enumerate(Y):
        X[i] += (np.array([1.0, 2.0, 3.0, 3.5])[:, None, None]
                 * blob(xx, yy, x0, y0, e1, e2, theta)).astype(np.float32)
    return X, Y


@pytest.mark.parametrize("k", range(8))
def test_target_transforms_follow_the_image_transforms(k):
    """Rotating and flipping a stamp moves its measured centroid and ellipticity exactly as
    transform_targets moves the targets, and the inverse transform brings them back."""
    xx, yy = grid(64)
    x0, y0, e1, e2 = 0.4, -0.25, 0.135, 0.21
    image = blob(xx, yy, x0, y0, e1, e2, 0.8)
    turned = dihedral(torch.from_numpy(image)[None, None], k)[0, 0].numpy()
    centre, direction = moments(turned, xx, yy)
    Y = torch.tensor([[x0, y0, e1, e2, 1.3, 0.03, -0.02]], dtype=torch.float64)
    moved = transform_targets(Y, torch.tensor([k]), LENS_MODEL_TARGETS)[0].numpy()
    np.testing.assert_allclose(moved[:2], centre, atol=1e-9)
    np.testing.assert_allclose(moved[2:4] / np.hypot(*moved[2:4]), direction, atol=1e-9)
    assert moved[4] == 1.3  # theta_E is invariant
    # Shear is spin 2 like the ellipticity.
    shear = moved[5:] / np.hypot(*moved[5:])
    expected = transform_targets(torch.tensor([[0, 0, 0.03, -0.02, 1, 0, 0]], dtype=torch.float64),
                                 torch.tensor([k]), LENS_MODEL_TARGETS)[0, 2:4].numpy()
    np.testing.assert_allclose(shear, expected / np.hypot(*expected), atol=1e-12)
    back = transform_targets(torch.tensor(moved)[None], torch.tensor([inverse_dihedral(k)]),
                             LENS_MODEL_TARGETS)
    np.testing.assert_allclose(back.numpy(), Y.numpy(), atol=1e-12)


class MomentRegressor:
    """Centroid and second moments of band 0 as (x, y, e1, e2, flux, 0, 0): exactly equivariant
    under the dihedral transforms. ``broken`` drops y, which a rotation moves into x."""

    def __init__(self, broken: bool = False):
        self.broken = broken

    def predict_score(self, X):
        xx, yy = grid(X.shape[-1])
        rows = []
        for image in X[:, 0].astype(np.float64):
            f = image / image.sum()
            x0, y0 = (f * xx).sum(), (f * yy).sum()
            chi = [(f * ((xx - x0) ** 2 - (yy - y0) ** 2)).sum(),
                   2 * (f * (xx - x0) * (yy - y0)).sum()]
            rows.append([x0, 0.0 if self.broken else y0, *chi, image.sum(), 0.0, 0.0])
        return np.array(rows)


def test_equivariance_metrics_are_zero_for_an_equivariant_method():
    from lensbench.bench.suites.modeling import equivariance_metrics

    X, _ = toy_lens_models(6, size=24, seed=3)
    X = np.clip(X, 0, None)  # positive weights for the moments
    exact = equivariance_metrics(MomentRegressor(), X, LENS_MODEL_TARGETS)
    assert exact["rotation/n_cutouts"] == 6
    for name in LENS_MODEL_TARGETS:
        assert exact[f"rotation/{name}/max_abs_change"] < 1e-9, name
    broken = equivariance_metrics(MomentRegressor(broken=True), X, LENS_MODEL_TARGETS)
    assert broken["rotation/x/mean_abs_change"] > 0.05
    assert broken["rotation/x/max_abs_change"] >= broken["rotation/x/mean_abs_change"]
    assert broken["rotation/theta_e/max_abs_change"] < 1e-9


def test_variances_are_permuted_not_signed():
    var = torch.tensor([[1.0, 4.0, 0.1, 0.2, 0.5, 0.3, 0.4]], dtype=torch.float64)
    turned = transform_targets(var, torch.tensor([1]), LENS_MODEL_TARGETS, variance=True)[0]
    assert turned.tolist() == [4.0, 1.0, 0.1, 0.2, 0.5, 0.3, 0.4]  # x and y swap
    flipped = transform_targets(var, torch.tensor([4]), LENS_MODEL_TARGETS, variance=True)[0]
    assert flipped.tolist() == var[0].tolist()


def test_gaussian_nll_matches_the_closed_form():
    names = ("a", "b")
    objective = GaussianRegression(names, mean=np.array([1.0, -2.0]), scale=np.array([2.0, 0.5]))
    outputs = torch.tensor([[0.5, 0.0, np.log(0.25), 0.0]])
    y = torch.tensor([[3.0, -2.5]])  # standardised: (1.0, -1.0)
    z = np.array([1.0, -1.0])
    mean, var = np.array([0.5, 0.0]), np.array([0.25, 1.0])
    expected = np.mean(0.5 * (np.log(var) + (z - mean) ** 2 / var))
    assert float(objective.nll(outputs, y)) == pytest.approx(expected, rel=1e-6)


def test_the_per_epoch_validation_figures_are_the_kinds_metrics_in_physical_units():
    # bench tune prunes a regressor on val_<metric>, so these must be the modeling kind's own
    # figures: half widths and RMSEs of the de-standardised errors, the NLL with its 2 pi.
    names = ("a", "b")
    objective = GaussianRegression(names, mean=np.array([1.0, -2.0]), scale=np.array([2.0, 0.5]))
    rng = np.random.default_rng(3)
    outputs = torch.tensor(np.column_stack([rng.normal(0, 1, (50, 2)),
                                            rng.normal(-1, 0.3, (50, 2))]), dtype=torch.float32)
    y = rng.normal([1.0, -2.0], [2.0, 0.5], (50, 2))
    pred = outputs[:, :2].double().numpy() * [2.0, 0.5] + [1.0, -2.0]
    variance = np.exp(outputs[:, 2:].double().numpy()) * [4.0, 0.25]
    metrics = objective.val_metrics(outputs, None, y)
    for number, name in enumerate(names):
        lo, hi = np.percentile(pred[:, number] - y[:, number], [16, 84])
        assert metrics[f"val_{name}/half_width_68"] == pytest.approx((hi - lo) / 2, rel=1e-6)
        rmse = np.sqrt(np.mean((pred[:, number] - y[:, number]) ** 2))
        assert metrics[f"val_{name}/rmse"] == pytest.approx(rmse, rel=1e-6)
    nll = np.mean(0.5 * (np.log(2 * np.pi * variance) + (pred - y) ** 2 / variance))
    assert metrics["val_nll"] == pytest.approx(nll, rel=1e-6)
    # the standardised training loss is the NLL less its constants
    offset = 0.5 * np.log(2 * np.pi) + np.mean(np.log([2.0, 0.5]))
    assert metrics["val_loss"] + offset == pytest.approx(nll, rel=1e-5)


def test_parameter_metrics_on_a_hand_worked_case():
    names = ("theta_e",)
    true = np.zeros((5, 1))
    pred = np.array([[-0.2], [-0.1], [0.0], [0.1], [0.4]])
    sigma = np.array([0.1, 0.0625, 0.1, 0.2, 0.1])
    m = parameter_metrics(pred, true, names, variance=sigma[:, None] ** 2)
    assert m["theta_e/bias_median"] == pytest.approx(0.0)
    lo, hi = np.percentile(pred[:, 0], [16, 84])  # numpy's linear interpolation, by hand below
    assert (lo, hi) == pytest.approx((-0.2 + 0.64 * 0.1, 0.1 + 0.36 * 0.3))
    assert m["theta_e/half_width_68"] == pytest.approx((hi - lo) / 2)
    assert m["theta_e/rmse"] == pytest.approx(np.sqrt((0.04 + 0.01 + 0 + 0.01 + 0.16) / 5))
    # |error| / sigma = 2, 1.6, 0, 0.5, 4: two within 1 sigma, three within 1.96 sigma.
    assert m["theta_e/coverage_68"] == pytest.approx(2 / 5)
    assert m["theta_e/coverage_95"] == pytest.approx(3 / 5)
    # NLL: the mean of 0.5 (ln(2 pi sigma^2) + (error / sigma)^2), (error / sigma)^2 as above
    assert m["nll"] == pytest.approx(np.mean(0.5 * (np.log(2 * np.pi * sigma ** 2)
                                                    + np.array([4, 2.56, 0, 0.25, 16]))))
    assert "nll" not in parameter_metrics(pred, true, names)  # no variance, no NLL
    failed = parameter_metrics(np.vstack([pred, [[np.nan]]]), np.zeros((6, 1)), names)
    assert failed["n"] == 5 and failed["n_failed"] == 1
    assert failed["theta_e/half_width_68"] == pytest.approx(m["theta_e/half_width_68"])
    binned = binned_parameter_metrics(np.vstack([pred, pred]), np.zeros((10, 1)), names,
                                      np.r_[np.full(5, 0.6), np.full(5, 2.0)], (0.5, 1.0, 3.0),
                                      "theta_e")
    assert binned["binned/theta_e/0.5-1/n"] == 5 and binned["binned/theta_e/1-3/n"] == 5
    for key in ("half_width_68", "bias_median", "rmse"):
        assert binned[f"binned/theta_e/1-3/theta_e/{key}"] == pytest.approx(m[f"theta_e/{key}"])


@pytest.fixture(scope="module")
def trained():
    X, Y = toy_lens_models(360, seed=1)
    method = ResNetRegressor(width=8, members=2, max_epochs=12, lr=1e-2, batch_size=32,
                             num_threads=1, random_state=0)
    method.reported = []  # what epoch_callback (bench tune, the tracker) was given
    method.fit(X[:300], Y[:300], info=INFO,
               epoch_callback=lambda epoch, metrics: method.reported.append((epoch, metrics)))
    return method, X[300:], Y[300:]


def test_each_epoch_reports_the_kinds_figures_member_by_member(trained):
    method, _, _ = trained
    figures = {f"val_{p}/{statistic}" for p in INFO.targets
               for statistic in ("half_width_68", "rmse")} | {"val_nll", "val_loss"}
    for member in (0, 1):
        epochs = [(epoch, {key.split("/", 1)[1] for key in metrics})
                  for epoch, metrics in method.reported
                  if all(key.startswith(f"member{member}/") for key in metrics)]
        assert [epoch for epoch, _ in epochs] == list(range(len(epochs))) and epochs
        assert all(figures <= keys for _, keys in epochs)
        assert len(method.history_[f"member{member}/val_theta_e/half_width_68"]) == len(epochs)


def test_runners_up_are_set_against_the_narrowest_theta_e_error(tmp_path):
    from lensbench.bench.results import Result
    from lensbench.bench.suites.modeling import leader_change_lines

    rng = np.random.default_rng(6)
    true = rng.uniform(0.5, 2.0, (400, 7))
    theta = LENS_MODEL_TARGETS.index("theta_e")

    def run(name, error, test_hash="abc", rows=None):
        rows = np.arange(400) if rows is None else rows
        pred = true.copy()
        pred[:, theta] += error
        np.savez(tmp_path / f"{name}.npz", rows=rows, pred=pred, true=true,
                 targets=np.array(LENS_MODEL_TARGETS), test_hash=test_hash)
        metrics = parameter_metrics(pred, true, LENS_MODEL_TARGETS)
        return Result(run_id=name, method=name, task="t", suite="modeling", profile="default",
                      params={}, split_hashes={}, seed=0, status="ok",
                      artifacts={"predictions": f"{name}.npz"}, metrics=metrics)

    small = rng.normal(0, 0.05, 400)
    runs = [run("wide", 3 * small), run("narrow", small),
            run("shifted", small + 0.02),  # the leader's errors moved by 0.02
            run("elsewhere", 2 * small, test_hash="other"),
            run("other-rows", 2 * small, rows=np.arange(400)[::-1])]
    lines = leader_change_lines(runs, tmp_path)
    assert "minus `narrow`" in lines[1]
    def numbers(cell):  # "+0.0123 [+0.0100, +0.0150] |" -> (0.0123, 0.0100, 0.0150)
        return tuple(float(x) for x in cell.strip(" |]").replace("[", ",").split(","))

    rows = {line.split("`")[1]: [numbers(cell) for cell in line.split(" | ")[1:]]
            for line in lines if line.startswith("| `")}
    # Other test lenses, or the same ones in another order, are not a paired comparison.
    assert sorted(rows) == ["shifted", "wide"]
    # A shift of every error by 0.02 moves the median by exactly 0.02 in every resample and
    # leaves the half width where it was.
    half_width, median, _ = rows["shifted"]
    np.testing.assert_allclose(half_width, 0.0, atol=1e-9)
    np.testing.assert_allclose(median, 0.02, atol=1e-9)
    # Errors three times as wide: twice the leader's half width wider, firmly.
    observed, low, _ = rows["wide"][0]
    assert observed == pytest.approx(2 * runs[1].metrics["theta_e/half_width_68"], abs=1e-4)
    assert low > 0
    assert leader_change_lines(runs[1:2], tmp_path) == []


def test_variances_are_calibrated_on_the_validation_split(trained):
    method, _, _ = trained
    X, Y = toy_lens_models(360, seed=1)
    val = np.sort(np.random.default_rng(0).permutation(300)[:30])  # fit's validation rows
    out = method.predict_with_uncertainty(X[val])
    within = np.abs(out["mean"] - Y[val]) <= np.sqrt(out["variance"]) * (1 + 1e-9)
    assert np.allclose(within.mean(axis=0), 0.7, atol=0.035)  # 21 of 30: the 68.27% quantile
    assert not np.allclose(method.variance_scale_, 1.0)


def test_interval_scale_on_a_hand_worked_case():
    error = np.array([[1.0, 0.1], [-2.0, 0.2], [3.0, -0.3], [-4.0, 0.4]])
    # |error| / sigma: (1, 2, 3, 4) and (0.5, 1, 1.5, 2); their medians 2.5 and 1.25
    np.testing.assert_allclose(interval_scale(error, np.array([1.0, 0.2]), coverage=0.5),
                               [2.5, 1.25])


def test_xgboost_modeling_sigmas_cover_68_percent_of_its_held_out_lenses():
    X, Y = toy_lens_models(200, seed=2)
    method = GradientBoostingModeling(n_estimators=30, n_jobs=1, validation_fraction=0.3,
                                      uncertainty="constant")
    method.fit(X, Y, INFO)
    held_out = np.random.default_rng(0).permutation(200)[:60]  # fit's early-stopping rows
    error = method.predict_score(X[held_out]) - Y[held_out]
    within = np.abs(error) <= np.sqrt(method.predict_variance(X[held_out])) * (1 + 1e-9)
    np.testing.assert_allclose(within.mean(axis=0), 41 / 60, atol=1e-9)  # the 68.27% quantile
    # not the residuals' variance (the sigma before), which their tails inflate
    assert not np.allclose(method.variance_, error.var(axis=0), rtol=0.05)


def test_xgboost_modeling_per_lens_sigmas_follow_the_noise_and_stay_calibrated():
    """Residuals whose spread grows with a feature (as a faint arc's theta_E error does): the
    per-lens sigmas follow it and cover 68% of new lenses; the constant one covers 68% only on
    average, too wide for some lenses and too narrow for others, so its NLL is worse."""
    rng = np.random.default_rng(0)

    def lenses(n):
        features = rng.uniform(0.0, 1.0, (n, 3))
        spread = 0.05 + features[:, :1] ** 2  # parameter 0 and 1 alike; feature 0 sets it
        return features, rng.normal(0.0, 1.0, (n, 2)) * spread, spread

    held_out, residual, _ = lenses(2000)
    new, new_residual, spread = lenses(4000)
    nll = {}
    for uncertainty in ("constant", "per-lens"):
        method = GradientBoostingModeling(uncertainty=uncertainty, n_jobs=1, random_state=3)
        method.fit_uncertainty(held_out, residual)
        variance = method.variance_of_features(new)
        assert variance.shape == (4000, 2) and np.all(variance > 0)
        within = np.abs(new_residual) <= np.sqrt(variance)
        np.testing.assert_allclose(within.mean(axis=0), 0.6827, atol=0.025)
        nll[uncertainty] = gaussian_nll(new_residual, 0.0, variance)
        if uncertainty == "per-lens":
            sigma = np.sqrt(variance[:, 0])
            assert np.corrcoef(sigma, spread[:, 0])[0, 1] > 0.9
            # the faintest-spread tenth: within 68% there too, where a constant sigma is 100%
            low = spread[:, 0] < np.quantile(spread[:, 0], 0.1)
            assert 0.55 < within[low, 0].mean() < 0.85
        else:
            np.testing.assert_allclose(variance[0], interval_scale(residual, 1.0) ** 2)
    assert nll["per-lens"] < nll["constant"] - 0.3
    with pytest.raises(ValueError, match="uncertainty='wide': expected one of per-lens"):
        GradientBoostingModeling(uncertainty="wide").fit_uncertainty(held_out, residual)


def test_the_regression_net_learns_positions_shapes_and_sizes(trained):
    method, X, Y = trained
    out = method.predict_with_uncertainty(X)
    assert out["mean"].shape == Y.shape and (out["variance"] > 0).all()
    error = np.abs(out["mean"] - Y)
    prior = np.abs(Y - Y.mean(axis=0))
    for j, name in enumerate(LENS_MODEL_TARGETS[:5]):
        assert np.median(error[:, j]) < 0.6 * np.median(prior[:, j]), name
    # The shear does not show in the images: no better than the prior, and the net says so.
    assert np.median(error[:, 5]) > 0.7 * np.median(prior[:, 5])
    assert np.median(np.sqrt(out["variance"][:, 5])) > 0.7 * Y[:, 5].std()
    # Committee variance = (mean member variance + spread**2) x the calibration scale.
    assert np.all(out["variance"] >= out["spread"] ** 2 * method.variance_scale_)


def test_test_time_augmentation_makes_predictions_equivariant(trained):
    """With the 8 transforms averaged, turning the stamp turns the prediction exactly."""
    method, X, _ = trained
    base = method.predict_score(X[:8])
    for k in (1, 5):
        turned = dihedral(torch.from_numpy(X[:8]), k).numpy()
        expected = transform_targets(torch.from_numpy(base), torch.full((8,), k),
                                     LENS_MODEL_TARGETS).numpy()
        np.testing.assert_allclose(method.predict_score(turned), expected, atol=2e-4)


def test_checkpoints_reload_identically_and_refuse_other_bands(trained, tmp_path):
    method, X, _ = trained
    path = method.save(tmp_path / "regressor.pt")
    again = ResNetRegressor.load(path, info=INFO)
    np.testing.assert_array_equal(again.predict_score(X[:10]), method.predict_score(X[:10]))
    other = TaskInfo(**{**INFO.__dict__, "bands": ("g", "r", "i")})
    with pytest.raises(ValueError, match=r"regressor\.pt: bands"):
        ResNetRegressor.load(path, info=other)


def test_a_regressor_can_see_the_lens_light_subtracted_and_reloads_so(tmp_path):
    """lens_light=True: the nets see the residual of the smooth lens-light model (the
    preprocessing of the real suite's finders), and a saved regressor predicts so again."""
    from lensbench.deep.preprocess import Preprocessor

    X, Y = toy_lens_models(80, seed=3)
    method = ResNetRegressor(width=8, max_epochs=1, batch_size=16, num_threads=1,
                             lens_light=True).fit(X, Y, info=INFO)
    assert method.preprocessor_.lens_light and method.preprocessor_.bands == INFO.bands
    # the nets' input is the residual: the blob (a smooth elliptical light) mostly gone
    plain = Preprocessor(stretch="asinh")
    plain.fit_normalise(X)
    assert (np.abs(method.preprocessor_.normalise(X[:8])).sum()
            < 0.5 * np.abs(plain.normalise(X[:8])).sum())
    path = method.save(tmp_path / "regressor.pt")
    again = ResNetRegressor.load(path, info=INFO)
    assert again.preprocessor_.lens_light and again.lens_light
    np.testing.assert_array_equal(again.predict_score(X[:10]), method.predict_score(X[:10]))
    with pytest.raises(ValueError, match=r"lens_light=True\) needs the task's bands"):
        ResNetRegressor(max_epochs=1, lens_light=True).fit(X, Y)


def test_targets_must_match_the_named_parameters():
    X, Y = toy_lens_models(20)
    with pytest.raises(ValueError, match="expected targets of shape"):
        ResNetRegressor(max_epochs=1).fit(X, Y[:, :5], info=INFO)


def test_the_report_names_the_params_the_runs_used():
    from lensbench.bench.report import run_command
    from lensbench.bench.results import Result

    runs = [Result(run_id="committee", method="committee", task="design-hsc", suite="design",
                   profile="default", params={"max_epochs": 5}, split_hashes={}, seed=1,
                   suite_seed=0, status="ok")]
    command = run_command("design", "default", runs, [0])
    assert command == ("bench run --suite design --profile default --seed 0 "
                       "--param committee.max_epochs=5")
    # The design suite's own default and its variant annotations are not options.
    runs[0].params = {"max_epochs": 15, "variant": "flat-theta"}
    assert "--param" not in run_command("design", "default", runs, [0])
    # Runs with other parameters came from another command: both are named.
    runs.append(Result(run_id="committee[max_epochs=5]", method="committee", task="design-hsc",
                       suite="design", profile="default", params={"max_epochs": 5},
                       split_hashes={}, seed=1, suite_seed=0, status="ok"))
    assert run_command("design", "default", runs, [0]) == (
        "bench run --suite design --profile default --seed 0` and `bench run --suite design "
        "--profile default --seed 0 --param committee.max_epochs=5")


def test_a_run_older_than_a_profile_parameter_is_given_the_default_it_ran_with():
    """The compare profile sets the committee's patience; a run recorded before that ran with
    the method's own default, so its command must set it back."""
    from lensbench.bench.report import run_command
    from lensbench.bench.results import Result
    from lensbench.deep.methods import CommitteeFinder

    old = Result(run_id="committee[max_epochs=30,members=5]", method="committee",
                 task="metcalf-ground", suite="metcalf", profile="compare",
                 params={"max_epochs": 30, "members": 5}, split_hashes={}, seed=1,
                 suite_seed=0, status="ok")
    patience = CommitteeFinder().patience
    assert run_command("metcalf", "compare", [old], [0]) == (
        "bench run --suite metcalf --profile compare --seed 0 --methods committee "
        f"--param committee.max_epochs=30 --param committee.patience={patience}")


def test_a_run_from_a_changed_checkout_is_marked_dirty_in_the_report():
    from lensbench.bench.report import provenance_lines
    from lensbench.bench.results import Result

    runs = [Result(run_id="committee", method="committee", task="design-hsc", suite="design",
                   profile="default", params={}, split_hashes={}, seed=1, status="ok",
                   git_commit=commit) for commit in ("a" * 40 + "+dirty", "b" * 40)]
    line = next(line for line in provenance_lines("design", "default", runs, Path("x"), None)
                if "commit(s) of the runs" in line)
    assert "aaaaaaaaaaaa+dirty, bbbbbbbbbbbb;" in line


@pytest.mark.slow
def test_modeling_suite_end_to_end(tmp_path, real_data, real_lens_splits, simulated_splits):
    real_data("cosmos", "slacs")
    from lensbench.bench import cli
    from lensbench.bench.results import read_results
    from lensbench.bench.tasks import get_suite

    workdir = tmp_path / "work"
    for task in get_suite("modeling").tasks:  # made once this session (conftest)
        real_lens_splits.copy_into(workdir, task)
        simulated_splits.copy_into(workdir, task, "smoke")
    args = ["run", "--workdir", str(workdir), "--suite", "modeling", "--profile", "smoke",
            "--no-tracking", "--methods", "prior-median,xgboost-modeling,resnet-regressor",
            "--param", "resnet-regressor.max_epochs=1", "--param", "resnet-regressor.width=8",
            "--param", "resnet-regressor.tta=none", "--param", "xgboost-modeling.n_estimators=20"]
    assert cli.main(args) == 0
    results = {r.method: r for r in read_results(workdir / "results.jsonl")}
    assert all(r.status == "ok" for r in results.values()), [r.error for r in results.values()]
    prior = results["prior-median"].metrics
    # The features locate the lens: xgboost beats the prior on x and theta_E.
    assert results["xgboost-modeling"].metrics["x/half_width_68"] < prior["x/half_width_68"]
    assert (results["xgboost-modeling"].metrics["theta_e/half_width_68"]
            < prior["theta_e/half_width_68"])
    for r in results.values():
        assert r.metrics["real/lens0/theta_e_published"] > 0.5  # SLACS theta_E recorded
        assert r.metrics["subset/n"] == 2
    out = tmp_path / "reports"
    assert cli.main(["report", "--workdir", str(workdir), "--suite", "modeling", "--profile",
                     "smoke", "--out", str(out)]) == 0
    text = (out / "modeling-smoke.md").read_text()
    for needle in ("68% half width", "Coverage of the 68% / 95%", "Known SLACS lenses",
                   "SDSSJ", "--param resnet-regressor.max_epochs=1",
                   "How far apart: each runner-up minus"):
        assert needle in text
    assert (out / "modeling-smoke-modeling-hsc-slacs.png").stat().st_size > 1000
    assert "### Rotation equivariance" in text
    # how the SLACS lenses were degraded, from the task's own spec
    from lensbench.datasets.known_lenses import preparation_sentence

    [task] = get_suite("modeling").tasks
    assert preparation_sentence(task.real_lenses) in text.split("### Known SLACS lenses")[1]
    # Every bin shows the bias beside the half width (a constant guess looks narrow in a bin),
    # from the run's own metrics.
    m = results["prior-median"].metrics
    label = next(k.split("/")[2] for k in m if k.startswith("binned/theta_e/")
                 and k.endswith("theta_e/rmse"))
    cell = (f"{m[f'binned/theta_e/{label}/theta_e/half_width_68']:.3f} / "
            f"{m[f'binned/theta_e/{label}/theta_e/bias_median']:+.3f} / "
            f"{m[f'binned/theta_e/{label}/theta_e/rmse']:.3f}")
    assert f"`{results['prior-median'].run_id}` |" in text and cell in text
    # each known lens names where its published theta_E comes from
    assert "SIE b, Auger+2010 / Shajib+2021" in text
    assert "R_Einstein, slacs-match (GLASS)" in text
    assert f"| {results['resnet-regressor'].metrics['nll']:.3f} |" in text


def test_the_fit_subset_table_shows_theta_e_bias_and_rmse_beside_the_half_widths():
    """A narrow error spread far from zero is not accuracy: the table of the traditional
    fitter's lenses gives each method's theta_E median bias and RMSE too."""
    from lensbench.bench.results import Result
    from lensbench.bench.suites.modeling import subset_lines

    def run(method, n, bias, rmse, half_width, ms):
        metrics = {"n": n, "n_failed": 0, "subset/n": 2, "subset/n_failed": 0,
                   "subset/theta_e/bias_median": bias, "subset/theta_e/rmse": rmse,
                   "subset/theta_e/half_width_68": half_width, "time_per_lens_ms": ms,
                   "theta_e/half_width_68": half_width}
        return Result(run_id=method, method=method, task="modeling-hsc", suite="modeling",
                      profile="smoke", params={}, split_hashes={}, seed=1, status="ok",
                      n_test=100, metrics=metrics)

    lines = subset_lines([run("committee-regressor", 100, 0.144, 0.145, 0.008, 2.0),
                          run("lenstronomy-fit", 2, 0.036, 0.056, 0.029, 18000.0)])
    assert lines[0].startswith("| method | lenses (failed) | theta_e median bias | theta_e RMSE |")
    for row in ("| `committee-regressor` | 2 (0) | +0.144 | 0.145 | 0.008 |",
                "| `lenstronomy-fit` | 2 (0) | +0.036 | 0.056 | 0.029 |"):
        assert any(line.startswith(row) for line in lines), (row, lines)
