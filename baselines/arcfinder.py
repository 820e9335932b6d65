"""An arc finder after YattaLens (Sonnenfeld et al. 2018), vectorised over cutouts.

1. Lens light: the lens centre and shape (axis ratio, position angle) come from Gaussian-weighted
   second moments of the red band (i, else the reddest); its profile is the median of the red band
   in elliptical annuli (1 px wide) of that shape: a non-parametric elliptical-isophote model that
   the arcs, which cover a fraction of each annulus, barely move. The blue-band (g, else the
   bluest) lens model is the red model scaled by a least-squares amplitude fitted inside 0.5".
2. Detection: the blue residual, smoothed (Gaussian, 1 px), thresholded at ``detect_threshold``
   sigma and segmented into 8-connected islands (scikit-image ``label`` on all cutouts at once).
3. Cuts (the paper's values are the defaults): mean distance from the centre 0.5"-5", axis ratio
   >= 1.4, major axis within 30 deg of tangential, subtended angle >= 25 deg, area 20-500 px (of
   HSC's 0.168" pixels, converted to the task's pixel scale), colour blue - red < 2 (g - i).
   A strongly curved arc (subtending > 90 deg) is measured in polar coordinates: its axis ratio
   is the larger of the Cartesian one and (arc length / radial thickness), and it counts as
   tangential. A single band has no colour cut.
4. Score: each cut becomes a log-sigmoid margin (0 when comfortably met, about -margin when
   missed); an island's score is the sum plus ``snr_weight`` log(1 + S/N); a cutout's score is its
   best island's. Cutouts without islands score below all others, ordered by their peak residual.
   ``fit`` only calibrates (Platt) the scores into probabilities: ranks, hence AUROC, TPR0 and
   TPR10, are those of the fixed cuts.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from lensbench.baselines.common import platt_apply, platt_fit, task_geometry
from lensbench.baselines.contract import Method, TaskInfo
from lensbench.baselines.features import (
    asinh_magnitude,
    blue_red_indices,
    border_noise,
    moment_matrix,
)
from lensbench.datasets.robust import mad_sigma
from skimage.measure import label

HSC_PIXEL_SCALE = 0.168  # arcsec/px: the pixels of Sonnenfeld et al.'s area cut
MARGIN_CLIP = 10.0  # each cut's margin is clipped to +-10 softness units
NO_ISLAND_SCORE = -8.0 * MARGIN_CLIP
CHUNK = 256


@lru_cache(maxsize=16)
def gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """(size, size) 1-D Gaussian convolution matrix (zero padding), for separable smoothing."""
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    matrix = np.exp(-0.5 * (offsets / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)
    return matrix.astype(np.float32)


def group_medians(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of ``values`` per integer group label (NaN for empty groups), by one sort."""
    order = np.lexsort((values, groups))
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_values = values[order]
    lower = starts + np.maximum(counts - 1, 0) // 2
    upper = starts + np.maximum(counts, 1) // 2
    upper = np.where(counts > 0, np.minimum(upper, starts + counts - 1), lower)
    lower = np.minimum(lower, len(values) - 1)
    upper = np.minimum(upper, len(values) - 1)
    medians = 0.5 * (sorted_values[lower] + sorted_values[upper])
    return np.where(counts > 0, medians, np.nan)


SHAPES = ("weighted", "adaptive")
PROFILES = ("median", "sersic-clipped")
# sersic_clipped_profile: annuli whose median lies more than CLIP_SIGMA standard errors above a
# Sersic fit are arcs, not lens; each error is the median's noise plus SERSIC_TOLERANCE of the
# level (elliptical galaxies deviate from their best Sersic profiles by a few per cent:
# Kormendy et al. 2009, ApJS 182, 216); CLIP_ITERATIONS refits, each without the annuli found.
CLIP_SIGMA = 3.0
SERSIC_TOLERANCE = 0.05
CLIP_ITERATIONS = 3
SERSIC_N = tuple(np.round(np.geomspace(0.5, 8.0, 13), 3))  # the fit's grid
SERSIC_R_EFF = tuple(np.round(np.geomspace(1.0, 200.0, 48), 3))  # px
ADAPTIVE_ITERATIONS = 10


def adaptive_moments(red: np.ndarray, cx: np.ndarray, cy: np.ndarray, sigma_px: float
                     ) -> tuple[np.ndarray, ...]:
    """Centre (cx, cy; pixels from the stamp centre) and second moments (ixx, iyy, ixy), each
    (n,), of ``red`` (n, H, W) under an elliptical Gaussian weight iterated to the galaxy's own
    centre and shape (adaptive moments, Bernstein & Jarvis 2002): the weight is re-centred on
    the weighted centroid and its covariance becomes twice the weighted covariance, from a round
    ``sigma_px`` weight at ``cx, cy``. A fixed round weight makes an elongated galaxy look rounder
    and pulls its centre toward the weight's: on simulated VIS lenses the 1" round weight
    measured the light's axis ratio 0.13 too round (the adaptive weight 0.04, the rest the PSF's),
    and a model of the wrong shape or centre leaves four-lobed and two-lobed residuals as bright
    as faint arcs. The centre moves at most a pixel from the start."""
    n, h, w = red.shape
    yy, xx = np.mgrid[:h, :w]
    x0 = xx.ravel()[None] - (w - 1) / 2
    y0 = yy.ravel()[None] - (h - 1) / 2
    image = np.maximum(red, 0).reshape(n, -1).astype(np.float64)
    low, high = 0.25, (min(h, w) / 4) ** 2  # px^2: a pixel's scale to a quarter of the stamp
    a, b, c = np.full(n, float(sigma_px) ** 2), np.full(n, float(sigma_px) ** 2), np.zeros(n)
    start_x, start_y = np.asarray(cx, dtype=np.float64), np.asarray(cy, dtype=np.float64)
    cx, cy = start_x.copy(), start_y.copy()
    for _ in range(ADAPTIVE_ITERATIONS):
        x, y = x0 - cx[:, None], y0 - cy[:, None]
        det = (a * b - c * c)[:, None]
        weighted = image * np.exp(-0.5 * (b[:, None] * x * x - 2 * c[:, None] * x * y
                                          + a[:, None] * y * y) / det)
        m0 = np.maximum(weighted.sum(axis=1), 1e-30)
        dx, dy = (weighted * x).sum(axis=1) / m0, (weighted * y).sum(axis=1) / m0
        a = np.clip(2 * ((weighted * x * x).sum(axis=1) / m0 - dx * dx), low, high)
        b = np.clip(2 * ((weighted * y * y).sum(axis=1) / m0 - dy * dy), low, high)
        limit = 0.99 * np.sqrt(a * b)
        c = np.clip(2 * ((weighted * x * y).sum(axis=1) / m0 - dx * dy), -limit, limit)
        cx = np.clip(cx + dx, start_x - 1, start_x + 1)
        cy = np.clip(cy + dy, start_y - 1, start_y + 1)
    return cx, cy, a, b, c


def lens_shape(red: np.ndarray, pixel_scale: float, shape: str = "weighted"
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre (cx, cy; pixels from the stamp centre), position angle (radians) and axis ratio
    (clipped to 0.3-1), each (n,), of the light in ``red`` (n, H, W): from Gaussian-weighted
    (1") moments (``shape="weighted"``, the arc finder's) or from adaptive moments
    (``"adaptive"``: :func:`adaptive_moments`)."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    n, h, w = red.shape
    moments = (np.maximum(red, 0).reshape(n, -1) @ moment_matrix((h, w), 1.0 / pixel_scale).T
               ).astype(np.float64)
    m0 = np.maximum(moments[:, 0], 1e-12)
    cx = np.clip(moments[:, 1] / m0, -0.5 / pixel_scale, 0.5 / pixel_scale)
    cy = np.clip(moments[:, 2] / m0, -0.5 / pixel_scale, 0.5 / pixel_scale)
    ixx = np.maximum(moments[:, 3] / m0 - cx ** 2, 1e-6)
    iyy = np.maximum(moments[:, 4] / m0 - cy ** 2, 1e-6)
    ixy = moments[:, 5] / m0 - cx * cy
    if shape == "adaptive":
        cx, cy, ixx, iyy, ixy = adaptive_moments(red, cx, cy, 1.0 / pixel_scale)
    angle = 0.5 * np.arctan2(2 * ixy, ixx - iyy)
    root = np.sqrt(((ixx - iyy) / 2) ** 2 + ixy ** 2)
    q = np.clip(np.sqrt(np.maximum((ixx + iyy) / 2 - root, 1e-6)
                        / ((ixx + iyy) / 2 + root)), 0.3, 1.0)
    return cx, cy, angle, q


def elliptical_model(red: np.ndarray, pixel_scale: float, shape: str = "weighted",
                     profile: str = "median") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lens model of ``red`` (n, H, W): (model, x, y) with x, y the pixel offsets (n, H, W) from
    the fitted lens centre. Centre and shape from :func:`lens_shape`; profile from
    elliptical-annulus medians (``profile="median"``), or those with the annuli that arcs raised
    replaced by a Sersic fit (``"sersic-clipped"``: :func:`sersic_clipped_profile`), linearly
    interpolated in elliptical radius."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    cx, cy, angle, q = lens_shape(red, pixel_scale, shape)
    n, h, w = red.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    x = xx[None] - ((w - 1) / 2 + cx[:, None, None]).astype(np.float32)
    y = yy[None] - ((h - 1) / 2 + cy[:, None, None]).astype(np.float32)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    major, minor = x * cos + y * sin, -x * sin + y * cos
    qq = q[:, None, None]
    radius = np.sqrt(qq * major ** 2 + minor ** 2 / qq).astype(np.float32)
    n_bins = int(math.ceil(math.hypot(h, w) / math.sqrt(0.3))) + 2
    bins = np.minimum(radius.astype(np.int64), n_bins - 1)
    groups = (np.arange(n)[:, None, None] * n_bins + bins).ravel()
    values = red.ravel().astype(np.float64)
    medians = group_medians(values, groups, n * n_bins).reshape(n, n_bins)
    model = _profile_image(medians, radius)
    if profile == "sersic-clipped":
        counts = np.bincount(groups, minlength=n * n_bins).reshape(n, n_bins)
        residual = (values - model.ravel()).reshape(n, -1)
        # Noise of one pixel from the residuals (mostly sky; arcs are few), times the
        # variance inflation of lag-1 correlated noise, so that an annulus of N pixels has a
        # median error of 1.25 sigma / sqrt(N) as for white noise of N / inflation pixels.
        sigma = mad_sigma(residual, axis=1)
        sigma = 1.2533 * sigma * np.sqrt(_correlation_inflation(residual.reshape(n, h, w)))
        profile_values = sersic_clipped_profile(medians, counts, sigma, inner=2.0,
                                                outer=(min(h, w) - 1) / 2)
        model = _profile_image(profile_values, radius)
    return model.astype(np.float32), x, y


def _correlation_inflation(residual: np.ndarray) -> np.ndarray:
    """(n,) variance inflation of the mean of many pixels of ``residual`` (n, H, W) whose
    noise is correlated between neighbours: (1 + 2 rho_x)(1 + 2 rho_y), rho the lag-1
    correlations (clipped to [0, 0.5))."""
    centred = residual - residual.mean(axis=(1, 2), keepdims=True)
    variance = np.maximum((centred ** 2).mean(axis=(1, 2)), 1e-30)
    rho_x = (centred[:, :, 1:] * centred[:, :, :-1]).mean(axis=(1, 2)) / variance
    rho_y = (centred[:, 1:] * centred[:, :-1]).mean(axis=(1, 2)) / variance
    return (1 + 2 * np.clip(rho_x, 0, 0.499)) * (1 + 2 * np.clip(rho_y, 0, 0.499))


def _profile_image(profile: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """The annulus levels ``profile`` (n, n_bins; annulus k at elliptical radius k + 0.5 px)
    linearly interpolated at ``radius`` (n, H, W); empty annuli (steps of the pixel grid near
    the centre, beyond the corners) take the nearest inner level."""
    n, n_bins = profile.shape
    valid = ~np.isnan(profile)
    last = np.maximum.accumulate(np.where(valid, np.arange(n_bins)[None], 0), axis=1)
    flat = np.take_along_axis(np.nan_to_num(profile), last, axis=1)
    position = np.clip(radius - 0.5, 0, n_bins - 1.001)
    low = position.astype(np.int64)
    frac = position - low
    shape = radius.shape
    lower = np.take_along_axis(flat, low.reshape(n, -1), axis=1).reshape(shape)
    upper = np.take_along_axis(flat, np.minimum(low + 1, n_bins - 1).reshape(n, -1),
                               axis=1).reshape(shape)
    return (1 - frac) * lower + frac * upper


@lru_cache(maxsize=8)
def sersic_templates(n_bins: int) -> np.ndarray:
    """(len(SERSIC_N) * len(SERSIC_R_EFF), n_bins) Sersic profiles of unit amplitude at the
    annulus radii k + 0.5 px (astropy's Sersic1D), on the grid of indices and effective radii
    that :func:`sersic_clipped_profile` searches."""
    from astropy.modeling.functional_models import Sersic1D

    radius = np.arange(n_bins) + 0.5
    return np.stack([Sersic1D.evaluate(radius, 1.0, r_eff, index)
                     for index in SERSIC_N for r_eff in SERSIC_R_EFF])


def sersic_clipped_profile(medians: np.ndarray, counts: np.ndarray, sigma: np.ndarray,
                           inner: float, outer: float) -> np.ndarray:
    """The annulus medians (n, n_bins) with the annuli that arcs raised replaced by a Sersic
    fit of the others.

    The median of an annulus is arc light where an arc or a ring covers most of it (on VIS
    lenses with the task's noise the median model kept 0.09 of the arc flux where the arcs cover
    most of the Einstein ring: ``python scripts/lens_light_arcs_kept.py real-vis --noise``). A
    Sersic profile cannot bend around a ring, so an annulus more than CLIP_SIGMA errors above
    the profile fitted to the annuli between ``inner`` and ``outer`` px is taken for arcs, and
    the fit is repeated without it. Only those annuli change, so a real galaxy keeps its own
    profile wherever it has no ring. ``sigma`` (n,): the error of the median of one pixel
    (an annulus of N pixels has sigma / sqrt(N)); ``counts``: the pixels of each annulus. The
    fit is a grid search over (SERSIC_N, SERSIC_R_EFF) with the amplitude solved by weighted
    least squares for each: some hundred templates for a batch, and no iterative optimiser to
    fail on a noisy profile."""
    n, n_bins = medians.shape
    templates = sersic_templates(n_bins)
    radius = np.arange(n_bins) + 0.5
    usable = (counts >= 8) & (radius >= inner)[None] & (radius <= outer)[None]
    usable &= ~np.isnan(medians)
    level = np.nan_to_num(medians)
    error = np.hypot(sigma[:, None] / np.sqrt(np.maximum(counts, 1)),
                     SERSIC_TOLERANCE * np.abs(level))
    error = np.maximum(error, 1e-12)
    clipped = np.zeros_like(usable)
    fit = level
    for _ in range(CLIP_ITERATIONS):
        weight = np.where(usable & ~clipped, 1.0 / error ** 2, 0.0)
        cross = (weight * level) @ templates.T
        norm = weight @ (templates ** 2).T
        amplitude = np.clip(cross / np.maximum(norm, 1e-300), 0.0, None)
        chi2 = -(2 * amplitude * cross - amplitude ** 2 * norm)  # up to the constant sum w m^2
        best = np.argmin(chi2, axis=1)
        fit = amplitude[np.arange(n), best][:, None] * templates[best]
        clipped = usable & (level - fit > CLIP_SIGMA * error)
    return np.where(clipped, fit, medians)


def model_amplitude(image: np.ndarray, model: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Least-squares amplitude (n,), clipped at 0, of ``model`` in ``image`` (both (n, H, W))
    over the pixels where ``inner`` (n, H*W) holds: how much of a band the red-band lens model
    explains near the lens centre, inside the arcs."""
    n = len(image)
    m_flat = model.reshape(n, -1) * inner
    amplitude = ((image.reshape(n, -1) * m_flat).sum(1)
                 / np.maximum((m_flat ** 2).sum(1), 1e-20))
    return np.clip(amplitude, 0.0, None)


def _sigmoid_margin(margin: np.ndarray) -> np.ndarray:
    """log(sigmoid(margin)), margins clipped to +-MARGIN_CLIP."""
    margin = np.clip(margin, -MARGIN_CLIP, MARGIN_CLIP)
    return -np.logaddexp(0.0, -margin)


class ArcFinder(Method):
    """YattaLens-style arc finder: red-band lens model scaled into the blue band, residual
    islands, the paper's cuts made soft into a continuous score (see the module docstring)."""

    search_space = {
        "detect_threshold": {"type": "float", "low": 1.0, "high": 4.0},
        "snr_weight": {"type": "float", "low": 0.1, "high": 5.0, "log": True},
        "smoothing": {"type": "float", "low": 0.5, "high": 2.0},
    }

    def __init__(self, min_distance: float = 0.5, max_distance: float = 5.0,
                 min_axis_ratio: float = 1.4, max_tangential_angle: float = 30.0,
                 min_subtended_angle: float = 25.0, min_area: float = 20.0,
                 max_area: float = 500.0, area_pixel_scale: float = HSC_PIXEL_SCALE,
                 max_colour: float = 2.0, detect_threshold: float = 2.0,
                 smoothing: float = 1.0, snr_weight: float = 1.0, calibration_size: int = 1000,
                 random_state: int = 0):
        self.min_distance = min_distance
        self.max_distance = max_distance
        self.min_axis_ratio = min_axis_ratio
        self.max_tangential_angle = max_tangential_angle
        self.min_subtended_angle = min_subtended_angle
        self.min_area = min_area
        self.max_area = max_area
        self.area_pixel_scale = area_pixel_scale
        self.max_colour = max_colour
        self.detect_threshold = detect_threshold
        self.smoothing = smoothing
        self.snr_weight = snr_weight
        self.calibration_size = calibration_size
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, info: TaskInfo | None = None):
        self.pixel_scale_, self.bands_ = task_geometry(X, info)
        self.blue_index_, self.red_index_ = blue_red_indices(self.bands_)
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y).astype(int)
        rng = np.random.default_rng(self.random_state)
        take = rng.permutation(len(X))[: self.calibration_size]
        raw = self.raw_score(X[take])
        self.calibration_ = platt_fit(raw, y[take])
        return self

    def predict_score(self, X):
        raw = self.raw_score(np.asarray(X, dtype=np.float32))
        return platt_apply(raw, self.calibration_)

    def raw_score(self, X) -> np.ndarray:
        """Uncalibrated arc scores (n,), higher = better arc candidate."""
        X = np.asarray(X, dtype=np.float32)
        return np.concatenate([self.best_arcs(X[s: s + CHUNK])["score"]
                               for s in range(0, len(X), CHUNK)]) if len(X) else np.zeros(0)

    # ------------------------------------------------------------------ the pipeline
    def best_arcs(self, X) -> dict[str, np.ndarray]:
        """Per cutout, the properties of its best-scoring residual island (NaN where none):
        score, snr, distance (") , axis_ratio, misalignment (deg), subtended (deg), area (task
        px), colour, n_passing (islands meeting every cut, the paper's hard classification)."""
        X = np.asarray(X, dtype=np.float32)
        n, _, h, w = X.shape
        scale = self.pixel_scale_
        blue_i, red_i = self.blue_index_, self.red_index_
        sigma = border_noise(X)
        red, blue = X[:, red_i], X[:, blue_i]
        model_red, x, y = elliptical_model(red, scale)
        inner = (np.hypot(x, y) <= max(self.min_distance / scale, 1.5)).reshape(n, -1)
        amplitude = model_amplitude(blue, model_red, inner)[:, None, None]
        res_blue = blue - amplitude * model_red
        res_red = red - model_red
        g = gaussian_matrix(h, self.smoothing), gaussian_matrix(w, self.smoothing)
        kernel_norm = float(np.sqrt((g[0][h // 2] ** 2).sum() * (g[1][w // 2] ** 2).sum()))
        snr_blue = res_blue / sigma[:, blue_i, None, None]
        smooth = g[0] @ snr_blue @ g[1].T / kernel_norm
        mask = smooth > self.detect_threshold
        stacked = np.zeros((n, h + 1, w), dtype=bool)
        stacked[:, :h] = mask
        labels = label(stacked.reshape(n * (h + 1), w), connectivity=2)
        rows, cols = np.nonzero(labels)
        result = {key: np.full(n, np.nan) for key in (
            "snr", "distance", "axis_ratio", "misalignment", "subtended", "area", "colour")}
        result["n_passing"] = np.zeros(n, dtype=int)
        radius = np.hypot(x, y)
        annulus = ((radius >= self.min_distance / scale) & (radius <= self.max_distance / scale))
        peak = np.where(annulus, smooth, -np.inf).reshape(n, -1).max(axis=1)
        result["score"] = NO_ISLAND_SCORE + np.clip(np.nan_to_num(peak, neginf=0.0), 0, 5)
        if len(rows) == 0:
            return result
        lab = labels[rows, cols] - 1
        image = rows // (h + 1)
        row = rows % (h + 1)
        n_lab = int(lab.max()) + 1
        props = self._island_properties(lab, n_lab, image, x[image, row, cols],
                                        y[image, row, cols], snr_blue[image, row, cols],
                                        res_blue[image, row, cols], res_red[image, row, cols],
                                        sigma[image])
        owner = np.bincount(lab, weights=image, minlength=n_lab) / np.maximum(
            np.bincount(lab, minlength=n_lab), 1)
        owner = np.round(owner).astype(int)
        best = np.full(n, -np.inf)
        np.maximum.at(best, owner, props["score"])
        is_best = props["score"] >= best[owner]
        for key in result:
            if key in props:
                result[key][owner[is_best]] = props[key][is_best]
        np.add.at(result["n_passing"], owner, props["passing"].astype(int))
        return result

    def _island_properties(self, lab, n_lab, image, x, y, snr, res_blue, res_red, sigma):
        """Per island (bincount over its pixels): cut quantities, margins and score."""
        scale = self.pixel_scale_
        count = np.bincount(lab, minlength=n_lab).astype(np.float64)

        def total(values):
            return np.bincount(lab, weights=values, minlength=n_lab)

        weight = np.maximum(snr, 1e-6).astype(np.float64)
        w_sum = total(weight)

        def mean(values):
            return total(weight * values) / w_sum

        mx, my = mean(x), mean(y)
        dx, dy = x - mx[lab], y - my[lab]
        ixx, iyy, ixy = mean(dx * dx) + 1 / 12, mean(dy * dy) + 1 / 12, mean(dx * dy)
        root = np.sqrt(((ixx - iyy) / 2) ** 2 + ixy ** 2)
        cart_ratio = np.sqrt(((ixx + iyy) / 2 + root) / np.maximum((ixx + iyy) / 2 - root, 1e-9))
        major = 0.5 * np.arctan2(2 * ixy, ixx - iyy)
        # Polar description about the lens centre.
        r = np.hypot(x, y).astype(np.float64)
        phi = np.arctan2(y, x).astype(np.float64)
        mean_phi = np.arctan2(mean(np.sin(phi)), mean(np.cos(phi)))
        dphi = np.angle(np.exp(1j * (phi - mean_phi[lab])))
        lo = np.full(n_lab, np.inf)
        hi = np.full(n_lab, -np.inf)
        np.minimum.at(lo, lab, dphi)
        np.maximum.at(hi, lab, dphi)
        mean_r = mean(r)
        pixel_angle = 1.0 / np.maximum(mean_r, 0.5)  # one pixel's angular width
        subtended = np.degrees(np.minimum(hi - lo + pixel_angle, 2 * np.pi))
        var_r = np.maximum(mean(r * r) - mean_r ** 2, 0.0) + 1 / 12
        var_t = np.maximum(mean(dphi * dphi) - mean(dphi) ** 2, 0.0) * mean_r ** 2 + 1 / 12
        polar_ratio = np.sqrt(var_t / var_r)
        axis_ratio = np.maximum(cart_ratio, polar_ratio)
        tangential = mean_phi + np.pi / 2
        misalignment = np.degrees(np.abs(np.angle(np.exp(2j * (major - tangential)))) / 2)
        misalignment = np.where(subtended > 90.0, 0.0, misalignment)
        area = count * (scale / self.area_pixel_scale) ** 2  # in the paper's pixels
        blue_flux = total(res_blue.astype(np.float64))
        noise_blue = np.sqrt(total(sigma[:, self.blue_index_].astype(np.float64) ** 2))
        island_snr = blue_flux / np.maximum(noise_blue, 1e-12)
        distance = mean_r * scale
        margins = [
            np.minimum(distance - self.min_distance, self.max_distance - distance) / 0.2,
            (np.log(axis_ratio) - math.log(self.min_axis_ratio)) / 0.1,
            (self.max_tangential_angle - misalignment) / 10.0,
            (subtended - self.min_subtended_angle) / 10.0,
            np.minimum(np.log(area / self.min_area), np.log(self.max_area / area)) / 0.3,
        ]
        colour = np.full(n_lab, np.nan)
        if self.blue_index_ != self.red_index_:
            red_flux = total(res_red.astype(np.float64))
            noise_red = np.sqrt(total(sigma[:, self.red_index_].astype(np.float64) ** 2))
            colour = (asinh_magnitude(blue_flux, noise_blue)
                      - asinh_magnitude(red_flux, noise_red))
            margins.append((self.max_colour - colour) / 0.5)
        margins = np.stack(margins)
        cut_score = _sigmoid_margin(margins).sum(axis=0)
        score = cut_score + self.snr_weight * np.log1p(np.maximum(island_snr, 0.0))
        return {"score": score, "snr": island_snr, "distance": distance,
                "axis_ratio": axis_ratio, "misalignment": misalignment,
                "subtended": subtended, "area": count, "colour": colour,
                "passing": (margins > 0).all(axis=0)}
