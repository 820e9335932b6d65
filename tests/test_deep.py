"""The torch lens finders: training loop, committees, calibration, checkpoints, autoencoders."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from lensbench.baselines.contract import Method, TaskInfo
from lensbench.baselines.registry import METHODS
from lensbench.bench.metrics import auroc, expected_calibration_error
from lensbench.deep import committee
from lensbench.deep.autoencoder import AutoencoderBGMM, AutoencoderOutlier
from lensbench.deep.checkpoint import load_checkpoint, save_checkpoint
from lensbench.deep.methods import CommitteeFinder, DeepLensFinder, ResNetFinder
from lensbench.deep.nets import DEEPLENS_STAGES, DeepLens, PreActBottleneck, build_net
from lensbench.deep.preprocess import (
    Augment,
    Preprocessor,
    border_noise,
    centre_crop,
    dihedral,
    fast_asinh,
)
from lensbench.deep.train import TrainConfig, deterministic, stratified_split, train_net
from lensbench.deep.twostep import TwoStep
from scipy.special import expit
from sklearn.metrics import roc_auc_score

INFO = TaskInfo(name="toy", kind="lens-finding", bands=("g", "r"), pixel_scale=0.2,
                image_shape=(2, 20, 20))
FAST = dict(max_epochs=4, patience=None, num_threads=1)


def ring_toy(n=160, seed=0, amplitude=2.0):
    """Lenses carry a faint ring (amplitude in sky sigma) in noise; non-lenses do not."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(int)
    yy, xx = np.mgrid[:20, :20] - 9.5
    ring = np.exp(-0.5 * ((np.hypot(xx, yy) - 5) / 1.0) ** 2)
    X = rng.normal(0, 1, (n, 2, 20, 20)).astype(np.float32) * 0.01  # nanomaggies, sky 0.01
    X += (y[:, None, None, None] * amplitude * 0.01 * ring).astype(np.float32)
    return X, y


@pytest.fixture(scope="module")
def toy():
    return ring_toy(240, seed=1)


@pytest.fixture(scope="module")
def fitted_committee(toy):
    X, y = toy
    method = CommitteeFinder(members=2, tta="mean", **FAST, random_state=3)
    return method.fit(X[:160], y[:160], info=INFO)


# ----------------------------------------------------------------------------- preprocessing


def test_border_noise_is_robust_and_masks_are_zeroed():
    rng = np.random.default_rng(0)
    X = rng.normal(0, 2.0, (50, 2, 32, 32)).astype(np.float32)
    X[:, :, 12:20, 12:20] += 1000.0  # a bright centre does not inflate the sky sigma
    X[0, 0, 0, :5] = 100.0  # Metcalf masked pixels
    X[1, 1, 3, 3] = np.nan
    pre = Preprocessor(stretch="none").fit(X)
    assert np.allclose(pre.noise, 2.0, rtol=0.05)
    Xn = pre.normalise(X)
    assert np.isfinite(Xn).all() and (Xn[0, 0, 0, :5] == 0).all() and Xn[1, 1, 3, 3] == 0
    assert np.allclose(border_noise(Xn), 1.0, rtol=0.05)


@pytest.mark.parametrize("h,size", [(101, 64), (101, 65), (64, 64), (64, 33), (20, 101)])
def test_centre_crop_commutes_with_the_dihedral_transforms(h, size):
    x = torch.arange(h * h, dtype=torch.float32).reshape(1, 1, h, h)
    for k in range(8):
        assert torch.equal(centre_crop(dihedral(x, k), size), dihedral(centre_crop(x, size), k))
    assert centre_crop(x, size).shape[-1] in (min(size, h), min(size + 1, h))


def test_stretches():
    x = torch.tensor([-4.0, 0.0, 9.0])
    assert torch.allclose(Preprocessor(stretch="sqrt").apply_stretch(x), torch.tensor([-2., 0, 3]))
    assert torch.allclose(Preprocessor(stretch="asinh", softening=3.0).apply_stretch(x),
                          torch.asinh(x / 3))
    # The fast asinh agrees with torch's to rounding over 40 decades, both signs, and at 1e30.
    wide = torch.cat([torch.logspace(-20, 20, 401, dtype=torch.float64), torch.zeros(1)])
    wide = torch.cat([wide, -wide, torch.tensor([1e30], dtype=torch.float64)])
    assert torch.allclose(fast_asinh(wide), torch.asinh(wide), rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="stretch"):
        Preprocessor(stretch="log")


def test_the_dihedral_transforms_form_a_group():
    x = torch.arange(2 * 5 * 5, dtype=torch.float32).reshape(1, 2, 5, 5)
    images = [dihedral(x, k) for k in range(8)]
    assert len({tuple(im.flatten().tolist()) for im in images}) == 8  # all distinct
    assert torch.equal(images[0], x)  # identity
    for a, b in itertools.product(range(8), repeat=2):  # closure
        composed = dihedral(dihedral(x, a), b)
        assert any(torch.equal(composed, im) for im in images)
    for a in range(8):  # inverses
        assert any(torch.equal(dihedral(dihedral(x, a), b), x) for b in range(8))


def test_augmentation_is_seeded_and_keeps_shapes():
    x = torch.randn(6, 2, 20, 20)
    aug = Augment(shift=0.5, zoom=(0.9, 1.0), flux_scale=0.1)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    # Pure dihedral augmentation only permutes pixels.
    c = Augment(shift=0.0, flux_scale=0.0)(x, torch.Generator().manual_seed(2))
    assert torch.allclose(c.flatten(1).sort().values, x.flatten(1).sort().values)


def test_stratified_split_is_seeded():
    y = np.r_[np.zeros(30), np.ones(10)]
    train, val = stratified_split(y, 0.25, seed=4)
    assert len(val) == 10 and y[val].sum() in (2, 3)
    assert set(train) | set(val) == set(range(40)) and not set(train) & set(val)
    assert np.array_equal(val, stratified_split(y, 0.25, seed=4)[1])
    assert len(stratified_split(y, 0.0, seed=4)[1]) == 0


# ----------------------------------------------------------------------------- committees


def test_tta_mean_and_product_rules_on_a_hand_case():
    p = np.array([[0.5, 0.9], [0.8, 0.9], [0.2, 0.5]])  # 3 transforms x 2 cutouts
    z = committee.logit(p)
    assert np.allclose(expit(committee.combine_tta(z, "mean")), [0.5, 2.3 / 3])
    assert np.allclose(expit(committee.combine_tta(z, "product")), [0.08, 0.405])
    # Saturated logits do not collapse into ties.
    big = np.array([[40.0, 50.0], [40.0, 50.0]])
    assert np.diff(committee.combine_tta(big, "mean"))[0] > 9
    assert np.diff(committee.combine_tta(big, "product"))[0] > 9


def test_member_combination_rules():
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.45]])
    z = committee.logit(p)
    assert np.allclose(expit(committee.combine_members(z, "mean")), p.mean(axis=0))
    assert np.allclose(expit(committee.combine_members(z, "median")), np.median(p, axis=0))
    vote = expit(committee.combine_members(z, "vote"))
    assert np.allclose(vote, [(2 + p[:, 0].mean()) / 4, (0 + p[:, 1].mean()) / 4])


def test_ece_matches_the_harness_metric():
    rng = np.random.default_rng(0)
    p = np.r_[rng.random(500), 0.0, 1.0, 1 / 15, 2 / 15, 14 / 15]
    y = (rng.random(p.size) < p ** 2).astype(int)
    assert committee.expected_calibration_error(y, p) == pytest.approx(
        expected_calibration_error(y, p), abs=1e-12)


def test_temperature_scaling_lowers_nll_and_keeps_the_ranking():
    rng = np.random.default_rng(1)
    z_true = rng.normal(0, 2, 2000)
    y = (rng.random(2000) < expit(z_true)).astype(int)
    z = 4.0 * z_true  # overconfident by a factor 4
    fitted = committee.fit_temperature(z, y)
    assert fitted.temperature > 0 and fitted.temperature == pytest.approx(4.0, rel=0.15)
    assert fitted.nll_after < fitted.nll_before and fitted.ece_after < fitted.ece_before
    assert roc_auc_score(y, expit(z / fitted.temperature)) == roc_auc_score(y, z)
    # Separable data would drive T to 0: the bound keeps it positive and finite.
    separable = committee.fit_temperature(np.r_[-np.ones(10), np.ones(10)], np.r_[[0] * 10,
                                                                                 [1] * 10])
    assert 0 < separable.temperature < 1


# ----------------------------------------------------------------------------- networks


def test_deeplens_architecture_matches_the_paper():
    net = DeepLens(4)
    units = [m for m in net.modules() if isinstance(m, PreActBottleneck)]
    assert len(units) == 15
    stem = net.stem[0]
    assert stem.kernel_size == (7, 7) and stem.out_channels == 32
    for i, unit in enumerate(units):
        mid, out = DEEPLENS_STAGES[i // 3]
        assert unit.conv1.out_channels == mid and unit.conv3[1].out_channels == out
        assert unit.conv1.kernel_size == (1, 1) and unit.conv2[1].kernel_size == (3, 3)
        assert unit.conv2[1].stride == ((2, 2) if i in (3, 6, 9, 12) else (1, 1))
        assert isinstance(unit.conv2[0][1], torch.nn.ELU)
    assert units[0].shortcut is None and all(units[i].shortcut is not None for i in (3, 6, 9))
    with torch.no_grad():
        net.eval()
        assert net(torch.zeros(2, 4, 45, 45)).shape == (2,)
        assert net(torch.zeros(2, 4, 20, 20)).shape == (2,)
    assert net.head.fc.out_features == 1


def test_resnet_depth_and_width_are_parameters():
    small, big = build_net("resnet", 4), build_net("resnet", 4, width=32, depth=2)
    n_small = sum(p.numel() for p in small.parameters())
    assert 50_000 < n_small < 120_000  # the CPU default, ~0.08 M parameters
    assert sum(p.numel() for p in big.parameters()) > 4 * n_small
    with pytest.raises(ValueError, match="unknown architecture"):
        build_net("resnett", 4)


def receptive_field(net) -> int:
    """Input rows that reach the central unit of the last stage (by its gradient)."""
    x = torch.randn(1, 1, 201, 201, requires_grad=True)
    features = net.blocks(net.pool(net.stem(x)))
    h, w = features.shape[-2:]
    features[0, :, h // 2, w // 2].sum().backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(dim=1))
    return int(rows.max() - rows.min() + 1)


def test_stem_pool_or_a_fourth_stage_doubles_the_receptive_field():
    # closed form: stem 3, stage 1 +8, stage 2 +4 +8, stage 3 +8 +16 = 47 pixels; the pool
    # doubles every later step (3 + 4 + 16 + 8 + 16 + 16 + 32 = 95); a fourth stage adds
    # +16 +32 = 95
    plain, pooled = build_net("resnet", 1).eval(), build_net("resnet", 1, stem_pool=True).eval()
    deeper = build_net("resnet", 1, stages=4).eval()
    assert [receptive_field(net) for net in (plain, pooled, deeper)] == [47, 95, 95]
    assert ({k: v.shape for k, v in plain.state_dict().items()}
            == {k: v.shape for k, v in pooled.state_dict().items()})


@pytest.mark.parametrize("option", [{"stem_pool": True}, {"stages": 4}])
def test_receptive_field_options_are_saved_with_the_nets_and_only_where_asked(
        option, toy, tmp_path):
    X, y = toy
    wider = ResNetFinder(**FAST, **option).fit(X[:96], y[:96], info=INFO)
    assert {k: wider.net_configs_[0][k] for k in option} == option
    plain = ResNetFinder(**FAST).fit(X[:96], y[:96], info=INFO).net_configs_[0]
    assert not set(option) & set(plain)
    again = load_checkpoint(save_checkpoint(wider, tmp_path / "wider.pt"))
    assert again.get_params() == wider.get_params() and again.net_configs_ == wider.net_configs_
    assert np.array_equal(again.predict_score(X[96:]), wider.predict_score(X[96:]))


# ----------------------------------------------------------------------------- training


def test_training_is_deterministic_and_leaves_global_state_alone(toy):
    X, y = toy
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = ResNetFinder(**FAST, random_state=7).fit(X[:96], y[:96], info=INFO)
    assert torch.equal(torch.rand(1), expected_next)  # the global RNG was not consumed
    assert torch.get_num_threads() == threads
    b = ResNetFinder(**FAST, random_state=7).fit(X[:96], y[:96], info=INFO)
    c = ResNetFinder(**FAST, random_state=8).fit(X[:96], y[:96], info=INFO)
    wa, wb, wc = (m.nets_[0].state_dict() for m in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert np.array_equal(a.predict_score(X[96:]), b.predict_score(X[96:]))


def test_epoch_callback_gets_finite_metrics_every_epoch(toy):
    X, y = toy
    calls = []
    method = ResNetFinder(**FAST).fit(X[:96], y[:96], info=INFO,
                                      epoch_callback=lambda e, m: calls.append((e, m)))
    assert [e for e, _ in calls] == list(range(4))
    for _, metrics in calls:
        assert {"train_loss", "val_loss", "val_auroc", "lr"} <= set(metrics)
        assert all(np.isfinite(v) for v in metrics.values())
    assert method.history_["val_loss"] == [m["val_loss"] for _, m in calls]

    class Prune(Exception):
        pass

    def prune(epoch, metrics):
        raise Prune

    with pytest.raises(Prune):  # Optuna prunes by raising from the callback
        ResNetFinder(**FAST).fit(X[:96], y[:96], epoch_callback=prune)


def test_early_stopping_restores_the_best_epoch(toy):
    X, y = toy
    pre = Preprocessor().fit(X)
    Xn = pre.normalise(X)
    # A learning rate far too high makes the validation loss wander: stop after 2 bad epochs.
    cfg = TrainConfig(max_epochs=12, lr=0.3, patience=2, schedule="constant", num_threads=1)
    with deterministic(0, 1):
        net = build_net("resnet", 2, width=8)
        result = train_net(net, Xn[:64], y[:64], Xn[64:96], y[64:96], pre, cfg, seed=0)
    val = result.history["val_loss"]
    assert result.best_epoch == int(np.argmin(val))
    assert len(val) == min(12, result.best_epoch + 3)
    assert result.stopped_early == (len(val) < 12)
    # The restored weights are the best epoch's: recomputing the validation loss gives it back.
    from lensbench.deep.train import Objective, predict_outputs

    logits = predict_outputs(net, Xn[64:96], pre, Objective(), torch.device("cpu"))
    again = Objective().val_metrics(logits, None, y[64:96])["val_loss"]
    assert again == pytest.approx(val[result.best_epoch], rel=1e-5)


def test_a_tiny_resnet_learns_the_ring(toy):
    X, y = toy
    method = ResNetFinder(max_epochs=8, num_threads=1).fit(X[:160], y[:160], info=INFO)
    scores = method.predict_score(X[160:])
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    assert auroc(y[160:], scores) > 0.9
    assert method.temperature_ > 0 and np.isfinite(method.ece_after_)


# ----------------------------------------------------------------------------- committee


def test_committee_spread_and_tta(fitted_committee, toy):
    X, y = toy
    scores, spread = fitted_committee.predict_score_with_spread(X[160:])
    assert scores.shape == spread.shape == (80,) and (spread >= 0).all() and spread.max() > 0
    assert np.array_equal(scores, fitted_committee.predict_score(X[160:]))
    assert fitted_committee.ece_after_ <= fitted_committee.ece_before_ + 0.05
    # Identical members: zero spread, and the same score as one member alone.
    twin = CommitteeFinder(members=2, tta="mean", **FAST)
    twin.__dict__.update({k: v for k, v in vars(fitted_committee).items() if k.endswith("_")})
    twin.nets_ = [fitted_committee.nets_[0]] * 2
    twin_scores, twin_spread = twin.predict_score_with_spread(X[160:])
    assert np.all(twin_spread == 0)
    single = ResNetFinder(tta="mean", **FAST)
    single.__dict__.update(vars(twin))
    single.nets_ = [fitted_committee.nets_[0]]
    single.tta, single.members = "mean", 1
    assert np.allclose(single.predict_score(X[160:]), twin_scores)
    # TTA "product" is the product of the 8 transforms' probabilities.
    member = single.member_logits(single.preprocessor_.normalise(X[160:163]))
    single.tta = "product"
    product = single.member_logits(single.preprocessor_.normalise(X[160:163]))
    single.tta = "none"
    per_k = []
    for k in range(8):
        rotated = np.ascontiguousarray(np.rot90(X[160:163], k % 4, axes=(-2, -1)))
        if k >= 4:
            rotated = np.ascontiguousarray(rotated[..., ::-1])
        per_k.append(expit(single.member_logits(single.preprocessor_.normalise(rotated))[0]))
    per_k = np.array(per_k)
    assert np.allclose(expit(product[0]), per_k.prod(axis=0), rtol=1e-4)
    assert np.allclose(expit(member[0]), per_k.mean(axis=0), rtol=1e-4)


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_mismatches(fitted_committee, toy, tmp_path):
    X, _ = toy
    path = save_checkpoint(fitted_committee, tmp_path / "c.pt")
    loaded = load_checkpoint(path, expected_bands=("g", "r"), expected_architecture="resnet")
    assert type(loaded) is CommitteeFinder and loaded.get_params() == fitted_committee.get_params()
    assert np.array_equal(loaded.predict_score(X[160:]), fitted_committee.predict_score(X[160:]))
    assert loaded.temperature_ == fitted_committee.temperature_
    with pytest.raises(ValueError, match=r"c\.pt.*bands \['g', 'r'\].*expected \['u', 'g'\]"):
        load_checkpoint(path, expected_bands=("u", "g"))
    with pytest.raises(ValueError, match=r"c\.pt.*architecture is 'resnet.*expected 'deeplens'"):
        load_checkpoint(path, expected_architecture="deeplens")
    # Weights that do not fit the architecture they claim are refused, naming the file.
    payload = torch.load(path, weights_only=True)
    payload["net_configs"][0] = {**payload["net_configs"][0], "width": 8}
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt: member 0 weights do not fit resnet"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a lensbench deep checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="fitted on 2 bands"):
        loaded.predict_score(X[:3, :1])


def test_checkpoint_dir_param_writes_a_checkpoint(toy, tmp_path):
    X, y = toy
    method = ResNetFinder(**FAST, checkpoint_dir=str(tmp_path)).fit(X[:96], y[:96], info=INFO)
    again = load_checkpoint(method.checkpoint_path_)
    assert np.array_equal(again.predict_score(X[96:]), method.predict_score(X[96:]))


# ----------------------------------------------------------------------------- autoencoders


@pytest.mark.parametrize("cls", [AutoencoderBGMM, AutoencoderOutlier])
def test_autoencoder_methods_beat_random(cls, toy):
    X, y = toy
    method = cls(max_epochs=10, num_threads=1).fit(X[:160], y[:160], info=INFO)
    scores = method.predict_score(X[160:])
    assert scores.shape == (80,) and np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert auroc(y[160:], scores) > 0.7
    assert method.latents(X[:5]).shape == (5, 16)


# ----------------------------------------------------------------------------- two-step


class StandInPreselector(Method):
    """Catalogue stand-in: the central flux is the score; passes() keeps the top 60%."""

    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    def _flux(self, X):
        return X[:, :, 8:12, 8:12].sum(axis=(1, 2, 3)) + X[:, :, 3:6, :].sum(axis=(1, 2, 3))

    def fit(self, X, y, info=None):
        self.threshold_ = float(np.quantile(self._flux(X), 0.4))
        return self

    def predict_score(self, X):
        return expit(self._flux(X) - self.threshold_)

    def passes(self, X):
        return self._flux(X) >= self.threshold_


def test_two_step_scores_only_what_passes(toy, monkeypatch):
    monkeypatch.setitem(METHODS, "stand-in", f"{__name__}:StandInPreselector")
    X, y = toy
    method = TwoStep(preselector="stand-in", cnn="resnet", cnn_params=FAST).fit(
        X[:160], y[:160], info=INFO)
    assert method.pass_fraction_ == pytest.approx(0.6, abs=0.02)
    scores = method.predict_score(X[160:])
    passed = method.preselector_.passes(X[160:])
    assert np.isfinite(scores).all() and 0 < passed.sum() < 80
    assert ((scores >= 0.5) == passed).all()  # the share reaching the CNN is read off the scores
    assert scores[passed].min() > scores[~passed].max()  # one total ranking
    # Batch-independent: scoring in two halves gives the same scores.
    halves = np.r_[method.predict_score(X[160:200]), method.predict_score(X[200:])]
    assert np.allclose(halves, scores)


def test_deeplens_method_runs_tiny_on_its_step_schedule(toy):
    """The step schedule: the learning rate divided by 10 every ``step_every`` epochs."""
    X, y = toy
    method = DeepLensFinder(max_epochs=2, step_every=1, lr=2e-3, num_threads=1).fit(
        X[:64], y[:64], info=INFO)
    scores = method.predict_score(X[160:170])
    assert scores.shape == (10,) and np.isfinite(scores).all()
    assert method.history_["lr"] == pytest.approx([2e-3, 2e-4])


def test_the_runner_records_spread_calibration_and_a_reloadable_checkpoint(tmp_path):
    from lensbench.bench.runner import run_suite
    from lensbench.bench.splits import ensure_split
    from lensbench.bench.tasks import get_suite

    params = {"committee": dict(members=2, max_epochs=2, patience=None, num_threads=1)}
    [result] = run_suite(get_suite("smoke"), profile="smoke", seed=4, workdir=tmp_path,
                         methods=["committee"], params=params, log=lambda *a: None)
    assert result.status == "ok", result.error
    assert result.metrics["diag/members"] == 2 and result.metrics["diag/temperature"] > 0
    assert result.metrics["committee_spread_mean"] > 0
    from lensbench.bench.suites.lens_finding import diagnostics_lines

    [line] = [x for x in diagnostics_lines([result]) if x.startswith("- ")]
    assert line.startswith("- `committee[") and "members 2" in line and "temperature" in line
    saved = np.load(tmp_path / result.artifacts["scores"])
    assert saved["committee_spread"].shape == saved["scores"].shape
    checkpoint = tmp_path / result.artifacts["checkpoint"]
    reloaded = load_checkpoint(checkpoint, expected_bands=("g", "r", "i"))
    test = ensure_split(get_suite("smoke").tasks[0], "test", "smoke", tmp_path, quiet=True)
    assert np.allclose(reloaded.predict_score(test.images()), saved["scores"])


def test_full_dihedral_tta_makes_a_cropped_committee_rotation_invariant(toy):
    from lensbench.bench.suites.lens_finding import rotation_metrics

    X, y = toy
    method = CommitteeFinder(members=2, tta="mean", crop=11, **FAST, random_state=2).fit(
        X[:160], y[:160], info=INFO)  # 20 - 11 is odd: the crop is widened to stay centred
    invariance = rotation_metrics(method, X[160:], y[160:])
    assert invariance["rotation/max_abs_change"] < 1e-5
    untransformed = ResNetFinder(crop=11, **FAST, random_state=2).fit(X[:160], y[:160], info=INFO)
    assert rotation_metrics(untransformed, X[160:], y[160:])["rotation/max_abs_change"] > 1e-4


def test_lens_light_option_subtracts_the_lens_in_fit_predict_and_a_saved_model(tmp_path):
    from lensbench.baselines.registry import resolve_method
    from lensbench.deep.checkpoint import load_checkpoint, save_checkpoint
    from lensbench.deep.preprocess import Preprocessor

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:32, :32] - 15.5
    galaxy = np.exp(-np.hypot(xx, yy / 0.8) / 2.0).astype(np.float32)  # a smooth elliptical
    X = galaxy[None, None] * rng.uniform(50, 100, (40, 2, 1, 1)).astype(np.float32)
    X += rng.normal(0, 1, X.shape).astype(np.float32)
    kept = Preprocessor(stretch="none").fit(X).normalise(X)
    light = Preprocessor(stretch="none", lens_light=True, bands=("g", "i"),
                         pixel_scale=0.2).fit(X)
    subtracted = light.normalise(X)
    # The smooth galaxy is modelled and taken out: the centre drops to the noise.
    assert np.abs(kept[:, :, 14:18, 14:18]).mean() > 20
    assert np.abs(subtracted[:, :, 14:18, 14:18]).mean() < 0.2 * np.abs(
        kept[:, :, 14:18, 14:18]).mean()
    info = TaskInfo(name="t", kind="lens-finding", bands=("g", "i"), pixel_scale=0.2,
                    image_shape=(2, 32, 32))
    y = np.arange(40) % 2
    finder = resolve_method("committee")(members=1, max_epochs=1, width=8, crop=None,
                                         tta="none", num_threads=1, lens_light=True)
    with pytest.raises(ValueError, match="TaskInfo"):
        resolve_method("committee")(lens_light=True).fit(X, y)
    finder.fit(X, y, info)
    assert finder.preprocessor_.lens_light and finder.preprocessor_.bands == ("g", "i")
    assert finder.preprocessor_.lens_light_shape == "weighted"  # the default
    path = save_checkpoint(finder, tmp_path / "model.pt")
    loaded = load_checkpoint(path)
    assert loaded.preprocessor_.lens_light and loaded.preprocessor_.pixel_scale == 0.2
    assert np.allclose(loaded.predict_score(X), finder.predict_score(X))
    # The adaptive shape and the profile (baselines/arcfinder.py: SHAPES, PROFILES) are
    # parameters; each reaches the preprocessor and survives a reload.
    for setting, value in (("lens_light_shape", "adaptive"),
                           ("lens_light_profile", "sersic-clipped")):
        fitted = resolve_method("committee")(members=1, max_epochs=1, width=8, crop=None,
                                             tta="none", num_threads=1, lens_light=True,
                                             **{setting: value}).fit(X, y, info)
        reloaded = load_checkpoint(save_checkpoint(fitted, tmp_path / f"{value}.pt"))
        assert getattr(reloaded.preprocessor_, setting) == value
        assert np.allclose(reloaded.predict_score(X), fitted.predict_score(X))
    assert not np.allclose(light.normalise(X), Preprocessor(
        stretch="none", lens_light=True, bands=("g", "i"), pixel_scale=0.2,
        lens_light_shape="adaptive").fit(X).normalise(X))
    with pytest.raises(ValueError, match="lens_light_profile must be one of"):
        Preprocessor(lens_light=True, bands=("i",), pixel_scale=0.2, lens_light_profile="cubic")
    # A checkpoint written before the field existed was fitted with the round-weighted shape.
    older = light.state()
    del older["lens_light_shape"], older["lens_light_profile"]
    assert Preprocessor(**older).lens_light_shape == "weighted"
    assert Preprocessor(**older).lens_light_profile == "median"
    with pytest.raises(ValueError, match="lens_light_shape must be one of"):
        Preprocessor(lens_light=True, bands=("i",), pixel_scale=0.2, lens_light_shape="round")


def test_lens_light_keep_image_gives_the_nets_the_image_beside_its_residual(tmp_path):
    from lensbench.baselines.registry import resolve_method
    from lensbench.deep.checkpoint import load_checkpoint, save_checkpoint
    from lensbench.deep.preprocess import Preprocessor

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:32, :32] - 15.5
    radius = np.hypot(xx, yy)
    galaxy = np.exp(-radius / 2.0)
    ring = np.exp(-0.5 * ((radius - 6.0) / 0.8) ** 2)  # a full Einstein ring
    X = (80 * galaxy + 15 * ring)[None, None] * np.ones((40, 1, 1, 1))
    X = (X + rng.normal(0, 1, X.shape)).astype(np.float32)
    settings = dict(stretch="none", lens_light=True, bands=("vis",), pixel_scale=0.1)
    residual = Preprocessor(**settings).fit(X).normalise(X)
    both = Preprocessor(**settings, lens_light_keep_image=True).fit(X).normalise(X)
    image = Preprocessor(stretch="none").fit(X).normalise(X)
    assert both.shape == (40, 2, 32, 32)
    assert np.allclose(both[:, :1], image) and np.allclose(both[:, 1:], residual)
    # The median of annuli takes the ring with the lens: the residual keeps under a fifth of
    # it, the image all of it.
    on_ring = np.abs(radius - 6.0) < 1.0
    ring_flux = 15 * ring[on_ring].sum()
    noise = np.asarray(Preprocessor(**settings).fit(X).noise)
    assert residual[:, 0][:, on_ring].sum(axis=1).mean() * noise[0] < 0.2 * ring_flux
    info = TaskInfo(name="t", kind="lens-finding", bands=("vis",), pixel_scale=0.1,
                    image_shape=(1, 32, 32))
    y = np.arange(40) % 2
    finder = resolve_method("committee")(members=1, max_epochs=1, width=8, crop=None,
                                         tta="none", num_threads=1, lens_light=True,
                                         lens_light_keep_image=True).fit(X, y, info)
    assert finder.net_configs_[0]["in_channels"] == 2
    loaded = load_checkpoint(save_checkpoint(finder, tmp_path / "both.pt"))
    assert loaded.preprocessor_.lens_light_keep_image
    assert np.allclose(loaded.predict_score(X), finder.predict_score(X))
    with pytest.raises(ValueError, match="bands"):
        finder.predict_score(np.concatenate([X, X], axis=1))
    with pytest.raises(ValueError, match="lens_light_keep_image needs lens_light"):
        resolve_method("committee")(lens_light_keep_image=True).fit(X, y, info)


# The training steps that crashed torch 2.13's CPU build (double free, segfault) in channels-
# last: deterministic backward passes on 2 threads of ResNets narrower than 16 channels, in
# batches of 16, 3, 1, 7 and 2. Run in a child process: a crash there is a failed test here.
NARROW_TRAINING = """
import torch
from lensbench.deep.nets import build_net
from lensbench.deep.train import memory_format_for
torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)
torch.manual_seed(0)
for width in (8, 12, 13, 14):
    net = build_net("resnet", 3, width=width)
    layout = memory_format_for(torch.device("cpu"), "auto", net, training=True)
    net.to(memory_format=layout)
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3)
    for n in [16, 3, 1, 7, 2] * 4:
        x = torch.randn(n, 3, 32, 32).contiguous(memory_format=layout)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net(x).reshape(-1), torch.randint(0, 2, (n,)).float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
print("trained")
"""


def test_a_narrow_network_trains_contiguous_on_the_cpu_and_channels_last_is_refused():
    import subprocess
    import sys

    from lensbench.deep.train import memory_format_for

    cpu = torch.device("cpu")
    assert memory_format_for(cpu, "auto", build_net("resnet", 3, width=15)) == \
        torch.contiguous_format
    assert memory_format_for(cpu, "auto", build_net("resnet", 3, width=16)) == \
        torch.channels_last
    with pytest.raises(ValueError, match=r"^memory_format='channels_last' on the CPU needs "
                                         r"convolutions of at least 16 channels \(this network "
                                         r"has one of 8"):
        ResNetFinder(width=8, crop=None, max_epochs=1, device="cpu", num_threads=1,
                     memory_format="channels_last").fit(*ring_toy(40), info=INFO)
    child = subprocess.run([sys.executable, "-c", NARROW_TRAINING], capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == 0 and child.stdout.strip() == "trained", child.stderr[-2000:]
