"""Tests for lensbench.datasets.gallery and lensbench.bench.plots (smoke + colour mapping)."""

from __future__ import annotations

import warnings

import matplotlib.image as mpimg
import numpy as np
import pytest
from lensbench.bench.plots import curve_panels, plot_curves, plot_roc_curves, plot_score_histograms
from lensbench.datasets.gallery import auto_lupton_parameters, colour_composite, save_gallery

H = W = 24


def _blob(amplitude: float = 100.0, sigma: float = 3.0) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return amplitude * np.exp(-((xx - W / 2) ** 2 + (yy - H / 2) ** 2) / (2 * sigma**2))


def _single_band_image(n_bands: int, band: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = noise * rng.standard_normal((n_bands, H, W))
    image[band] += _blob()
    return image


def _channel_sums(rgb: np.ndarray) -> np.ndarray:
    return rgb.reshape(-1, 3).astype(np.int64).sum(axis=0)


def _assert_png(path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 0 and pixels.shape[1] > 0


# --------------------------------------------------------------------------- colour_composite


def test_composite_dtype_and_shape():
    rgb = colour_composite(_single_band_image(4, 2, noise=1.0), ["g", "r", "i", "z"])
    assert rgb.dtype == np.uint8
    assert rgb.shape == (H, W, 3)
    assert rgb.max() > 0


@pytest.mark.parametrize(
    ("n_bands", "band", "dominant"),
    [
        (4, 3, 0),  # g,r,i,z: z -> R
        (4, 2, 1),  # i -> G
        (4, 1, 2),  # r -> B
        (3, 2, 0),  # last of three -> R
        (3, 0, 2),  # first of three -> B
        (2, 1, 0),  # two bands: red band -> R
        (2, 0, 2),  # two bands: blue band -> B
    ],
)
def test_composite_channel_order(n_bands, band, dominant):
    names = ["u", "g", "r", "i", "z"][-n_bands:]
    rgb = colour_composite(_single_band_image(n_bands, band, noise=0.5), names)
    sums = _channel_sums(rgb)
    assert int(np.argmax(sums)) == dominant, sums
    others = np.delete(sums, dominant)
    # (with two bands G is the mean of R and B, so it gets half of the dominant channel)
    assert sums[dominant] > 1.5 * others.max(), sums
    if n_bands == 2:
        assert sums[dominant] > 5 * sums[2 - dominant], sums  # R vs B


def test_composite_unused_blue_band_is_ignored():
    # with 4 bands only the reddest three are shown: flux only in g gives a black image
    rgb = colour_composite(_single_band_image(4, 0), ["g", "r", "i", "z"])
    assert rgb.max() == 0


def test_two_bands_green_is_mean():
    image = np.stack([_blob(), _blob()])
    rgb = colour_composite(image, ["g", "i"])
    assert np.array_equal(rgb[..., 0], rgb[..., 1])
    assert np.array_equal(rgb[..., 1], rgb[..., 2])


def test_single_band_is_grey():
    rgb = colour_composite(_single_band_image(1, 0, noise=1.0)[:1], ["r"])
    assert np.array_equal(rgb[..., 0], rgb[..., 1])
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    assert rgb.max() > 0


@pytest.mark.parametrize("value", [0.0, 5.0, -3.0])
def test_constant_image_does_not_crash(value):
    image = np.full((3, H, W), value)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        rgb = colour_composite(image, ["g", "r", "i"])
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3)
    if value <= 0:
        assert rgb.max() == 0


def test_non_finite_pixels_are_zeroed():
    """NaN and +-inf pixels composite exactly as zeros would (and do not set the stretch)."""
    image = _single_band_image(3, 1, noise=1.0)
    zeroed = image.copy()
    zeroed[0, 0, 0] = zeroed[1, 1, 1] = zeroed[2, 5, 7] = 0.0
    image[0, 0, 0], image[1, 1, 1], image[2, 5, 7] = np.nan, np.inf, -np.inf
    rgb = colour_composite(image, ["g", "r", "i"])
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3)
    np.testing.assert_array_equal(rgb, colour_composite(zeroed, ["g", "r", "i"]))
    assert rgb.max() > 200  # the blob, not an inf, set the scale


def test_auto_normalisation_per_image():
    # faint and bright versions of the same stamp look the same with automatic scaling...
    faint = colour_composite(_single_band_image(3, 2, noise=1.0) * 1e-3, ["g", "r", "i"])
    bright = colour_composite(_single_band_image(3, 2, noise=1.0) * 1e3, ["g", "r", "i"])
    assert np.abs(faint.astype(int) - bright.astype(int)).max() <= 1
    assert faint.max() > 200
    # ...but a fixed stretch/Q keeps their relative brightness
    image = _single_band_image(3, 2, noise=1.0)
    fixed_faint = colour_composite(image * 0.01, ["g", "r", "i"], stretch=5.0, Q=8.0)
    fixed_bright = colour_composite(image, ["g", "r", "i"], stretch=5.0, Q=8.0)
    assert _channel_sums(fixed_faint).sum() < _channel_sums(fixed_bright).sum()


def test_minimum_maps_to_black():
    image = np.full((3, H, W), 10.0)
    assert colour_composite(image, ["g", "r", "i"], minimum=10.0).max() == 0
    assert colour_composite(image, ["g", "r", "i"], minimum=0.0).max() > 0


def test_auto_parameters_finite():
    for intensity in (np.zeros((8, 8)), np.full((8, 8), 3.0), _blob(),
                      np.random.default_rng(1).standard_normal((16, 16))):
        stretch, q = auto_lupton_parameters(intensity)
        assert np.isfinite(stretch) and stretch > 0
        assert np.isfinite(q) and q > 0


def test_composite_validates_inputs():
    with pytest.raises(ValueError, match="one band name per image plane"):
        colour_composite(np.zeros((3, H, W)), ["g", "r"])
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        colour_composite(np.zeros((H, W)), ["r"])


# --------------------------------------------------------------------------- save_gallery


def _images(n: int, n_bands: int = 3) -> np.ndarray:
    return np.stack([_single_band_image(n_bands, i % n_bands, noise=1.0, seed=i) for i in range(n)])


def test_save_gallery_writes_png(tmp_path):
    n = 11
    captions = [f'lens θE={0.5 + 0.1 * i:.2f}"' for i in range(n)]
    out = save_gallery(_images(n), ["g", "r", "i"], captions, tmp_path / "sub" / "gallery.png",
                       ncols=4, title="test gallery")
    assert out == tmp_path / "sub" / "gallery.png"
    _assert_png(out)
    pixels = mpimg.imread(out)
    # 3 rows x 4 columns of 1.6" panels at 110 dpi
    assert pixels.shape[1] == pytest.approx(4 * 1.6 * 110, abs=2)
    assert pixels.shape[0] > 3 * 1.6 * 110


def test_save_gallery_single_image(tmp_path):
    out = save_gallery(_images(1, n_bands=1), ["r"], ["non-lens"], tmp_path / "one.png")
    _assert_png(out)


def test_save_gallery_validates(tmp_path):
    with pytest.raises(ValueError, match="expected 3 captions"):
        save_gallery(_images(3), ["g", "r", "i"], ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="N=0"):
        save_gallery(np.zeros((0, 3, H, W)), ["g", "r", "i"], [], tmp_path / "x.png")
    with pytest.raises(ValueError, match="expected 3 band names"):
        save_gallery(_images(2), ["g", "r"], ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(N, B, H, W\)"):
        save_gallery(np.zeros((3, H, W)), ["g", "r", "i"], ["a", "b", "c"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- bench.plots


def _roc(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    fpr = np.concatenate([[0.0], np.sort(rng.uniform(0, 1, 50)), [1.0]])
    tpr = np.clip(np.sqrt(fpr) + 0.05, 0, 1)
    tpr[0] = 0.0
    return fpr, tpr


@pytest.mark.parametrize("log_fpr", [True, False])
def test_plot_roc_curves(tmp_path, log_fpr):
    out = plot_roc_curves({"cnn": _roc(0), "xgboost": _roc(1)}, tmp_path / "a" / "roc.png",
                          title="ROC", log_fpr=log_fpr)
    assert out == tmp_path / "a" / "roc.png"
    _assert_png(out)


def test_plot_roc_curves_validates(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plot_roc_curves({}, tmp_path / "roc.png")
    with pytest.raises(ValueError, match="same length"):
        plot_roc_curves({"m": (np.zeros(3), np.zeros(4))}, tmp_path / "roc.png")


def test_plot_score_histograms(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    scores = rng.normal(loc=y * 2.0, scale=1.0)
    scores[0] = np.nan
    out = plot_score_histograms(y, scores, tmp_path / "h" / "hist.png", title="scores")
    _assert_png(out)
    # one class only, and identical scores
    _assert_png(plot_score_histograms(np.zeros(10), np.ones(10), tmp_path / "one_class.png"))


def test_plot_score_histograms_validates(tmp_path):
    with pytest.raises(ValueError, match="same length"):
        plot_score_histograms([0, 1], [0.1], tmp_path / "h.png")
    with pytest.raises(ValueError, match="empty"):
        plot_score_histograms([], [], tmp_path / "h.png")


def test_plot_curves(tmp_path):
    out = plot_curves({"train loss": [1.0, 0.7, 0.5, 0.45], "val loss": [1.1, 0.8, np.nan]},
                      tmp_path / "c" / "curves.png", ylabel="loss")
    _assert_png(out)
    history = {f"member{m}/{key}": [1.0, 0.5] for m in range(3)
               for key in ("train_loss", "val_loss", "val_x/rmse", "lr")}
    _assert_png(plot_curves(history, tmp_path / "committee.png"))


def test_curve_panels_group_members_and_splits_of_one_quantity():
    panels = curve_panels({"member0/val_x/rmse": [1], "member1/val_x/rmse": [2],
                           "member0/train_loss": [3], "member0/val_loss": [4], "lr": [5],
                           "val_auroc": [6]})
    assert panels == {"x/rmse": {"member0 val": [1], "member1 val": [2]},
                      "loss": {"member0 train": [3], "member0 val": [4]},
                      "lr": {"lr": [5]}, "auroc": {"val": [6]}}
