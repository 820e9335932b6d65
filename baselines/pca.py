"""A PCA lens finder after Joseph et al. (2014), vectorised over cutouts.

1. Basis: per band, a PCA (scikit-learn) of the central crops of the training NON-lenses, each
   normalised by its flux in the central 1.04" (so the basis describes galaxy shapes, not
   brightness).
2. Lens subtraction: each cutout is reconstructed from the first ``n_components`` components,
   their coefficients fitted by least squares on the pixels within ``fit_radius`` of the centre
   only (so arcs further out do not pull the galaxy model up; None: the plain projection), and
   the reconstruction is subtracted; the residual (in nMgy) is divided by the sky noise per band
   and the bands' S/N maps are summed (/ sqrt(bands)).
3. Ring / arc search: a polar transform of the residual S/N about the centre (annuli of
   ``annulus_width``, ``n_sectors`` sectors, from ``min_radius`` to ``max_radius``); the score is
   the best S/N over contiguous arcs of 1/12 to a full ring of one or two adjacent annuli.
``fit`` also calibrates (Platt) the score into a probability; the ranking is the ring S/N's.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from lensbench.baselines.common import platt_apply, platt_fit, task_geometry
from lensbench.baselines.contract import Method, TaskInfo
from lensbench.baselines.features import APERTURE_RADII_ARCSEC, aperture_matrix, border_noise
from lensbench.baselines.reference import centre_crop
from sklearn.decomposition import PCA

ARC_FRACTIONS = (1 / 12, 1 / 6, 1 / 3, 1 / 2, 1.0)  # arc lengths tried, fractions of a ring


@lru_cache(maxsize=16)
def polar_matrix(shape: tuple[int, int], edges_px: tuple[float, ...], n_sectors: int
                 ) -> np.ndarray:
    """(annuli * sectors, H*W) 0/1 assignment of pixel centres to polar bins about the centre."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    x, y = xx - (w - 1) / 2, yy - (h - 1) / 2
    r = np.hypot(x, y).ravel()
    sector = (((np.arctan2(y, x).ravel() + np.pi) / (2 * np.pi) * n_sectors).astype(int)
              % n_sectors)
    ring = np.searchsorted(np.asarray(edges_px), r, side="right") - 1
    n_rings = len(edges_px) - 1
    matrix = np.zeros((n_rings * n_sectors, h * w), dtype=np.float32)
    inside = (ring >= 0) & (ring < n_rings)
    matrix[(ring * n_sectors + sector)[inside], np.flatnonzero(inside)] = 1.0
    return matrix


def best_arc_snr(sums: np.ndarray, counts: np.ndarray, radial_widths=(1, 2)) -> np.ndarray:
    """Best S/N of a contiguous polar window: ``sums`` (n, rings, sectors) of unit-noise pixels,
    ``counts`` (rings, sectors) pixels per bin. Windows span 1-2 annuli and ARC_FRACTIONS of the
    sectors (wrapping round)."""
    n, n_rings, n_sectors = sums.shape
    best = np.full(n, -np.inf)
    for width in radial_widths:
        if width > n_rings:
            continue
        s = sum(sums[:, k: n_rings - width + 1 + k] for k in range(width))
        c = sum(counts[k: n_rings - width + 1 + k] for k in range(width))
        s_cum = np.concatenate([np.zeros_like(s[..., :1]), np.cumsum(
            np.concatenate([s, s], axis=-1), axis=-1)], axis=-1)
        c_cum = np.concatenate([np.zeros_like(c[..., :1]), np.cumsum(
            np.concatenate([c, c], axis=-1), axis=-1)], axis=-1)
        for fraction in ARC_FRACTIONS:
            length = max(1, int(round(fraction * n_sectors)))
            starts = np.arange(n_sectors if length < n_sectors else 1)
            window = s_cum[..., starts + length] - s_cum[..., starts]
            pixels = c_cum[..., starts + length] - c_cum[..., starts]
            snr = window / np.sqrt(np.maximum(pixels, 1.0))[None]
            snr = np.where(pixels[None] > 0, snr, -np.inf)
            best = np.maximum(best, snr.reshape(n, -1).max(axis=1))
    return np.where(np.isfinite(best), best, 0.0)


class PCALensFinder(Method):
    """Joseph et al. (2014): PCA basis of non-lens galaxies, subtract the reconstruction, score
    the residual by its best ring/arc S/N in a polar transform about the centre."""

    search_space = {
        "n_components": {"type": "int", "low": 2, "high": 40},
        "crop_arcsec": {"type": "float", "low": 6.0, "high": 16.0},
        "annulus_width": {"type": "float", "low": 0.2, "high": 1.0},
        "fit_radius": {"type": "float", "low": 0.5, "high": 3.0},
    }

    def __init__(self, n_components: int = 12, crop_arcsec: float = 11.0,
                 fit_radius: float | None = 1.0, annulus_width: float = 0.4,
                 n_sectors: int = 24, min_radius: float = 0.5, max_radius: float = 5.0,
                 max_basis_images: int = 3000,
                 calibration_size: int = 1000, random_state: int = 0):
        self.n_components = n_components
        self.crop_arcsec = crop_arcsec
        self.fit_radius = fit_radius
        self.annulus_width = annulus_width
        self.n_sectors = n_sectors
        self.min_radius = min_radius
        self.max_radius = max_radius
        self.max_basis_images = max_basis_images
        self.calibration_size = calibration_size
        self.random_state = random_state

    def _crop(self, X):
        X = np.asarray(X, dtype=np.float32)
        size = max(3, int(round(self.crop_arcsec / self.pixel_scale_)))
        return centre_crop(X, size)

    def _normalised(self, X):
        """(crops / central flux, central flux (n, B), noise (n, B))."""
        noise = border_noise(X)
        crops = self._crop(X)
        n, b, h, w = crops.shape
        aperture = aperture_matrix((h, w), (APERTURE_RADII_ARCSEC[0] / self.pixel_scale_,))[0]
        flux = crops.reshape(n, b, -1) @ aperture
        floor = 5.0 * noise * math.sqrt(max(float(aperture.sum()), 1.0))
        norm = np.maximum(flux, floor).astype(np.float32)
        return crops / norm[:, :, None, None], norm, noise

    def fit(self, X, y, info: TaskInfo | None = None):
        self.pixel_scale_, self.bands_ = task_geometry(X, info)
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y).astype(int)
        rng = np.random.default_rng(self.random_state)
        negatives = np.flatnonzero(y == 0)
        if len(negatives) < 2:
            negatives = np.arange(len(y))  # no non-lenses: a basis of everything
        negatives = rng.permutation(negatives)[: self.max_basis_images]
        z, _, _ = self._normalised(X[negatives])
        n, b, h, w = z.shape
        k = max(1, min(self.n_components, n - 1, h * w))
        self.bases_ = [PCA(n_components=k, svd_solver="randomized" if k < min(n, h * w) // 2
                           else "full", random_state=self.random_state).fit(
                               z[:, band].reshape(n, -1)) for band in range(b)]
        take = rng.permutation(len(X))[: self.calibration_size]
        raw = self.raw_score(X[take])
        self.calibration_ = platt_fit(raw, y[take])
        return self

    def residuals(self, X) -> np.ndarray:
        """Cutout crops minus their PCA reconstruction, in nMgy: (n, B, h, w)."""
        return self._residuals(np.asarray(X, dtype=np.float32))[0]

    def _residuals(self, X):
        z, norm, noise = self._normalised(X)
        n, b, h, w = z.shape
        out = np.empty_like(z)
        weight = None
        if self.fit_radius is not None:
            yy, xx = np.mgrid[:h, :w]
            radius = np.hypot(xx - (w - 1) / 2, yy - (h - 1) / 2).ravel()
            weight = (radius <= max(self.fit_radius / self.pixel_scale_, 1.5)).astype(np.float32)
        for band, basis in enumerate(self.bases_):
            centred = z[:, band].reshape(n, -1) - basis.mean_.astype(np.float32)
            v = basis.components_.astype(np.float32)  # (k, h*w)
            if weight is None:
                coefficients = centred @ v.T
            else:  # weighted least squares on the central pixels (small ridge for stability)
                gram = (v * weight) @ v.T
                gram += 1e-6 * np.trace(gram) / len(gram) * np.eye(len(gram), dtype=np.float32)
                coefficients = np.linalg.solve(gram, ((centred * weight) @ v.T).T).T
            out[:, band] = (centred - coefficients @ v).reshape(n, h, w)
        return out * norm[:, :, None, None], noise

    def raw_score(self, X) -> np.ndarray:
        """The best ring/arc S/N of the residual, (n,)."""
        residual, noise = self._residuals(np.asarray(X, dtype=np.float32))
        n, b, h, w = residual.shape
        snr = (residual / noise[:, :, None, None]).sum(axis=1) / math.sqrt(b)
        edges = np.arange(self.min_radius, self.max_radius + 1e-9, self.annulus_width)
        edges = tuple(float(e) / self.pixel_scale_ for e in edges)
        if len(edges) < 2:
            edges = (self.min_radius / self.pixel_scale_, self.max_radius / self.pixel_scale_)
        matrix = polar_matrix((h, w), edges, self.n_sectors)
        counts = matrix.sum(axis=1).reshape(len(edges) - 1, self.n_sectors)
        sums = (snr.reshape(n, -1) @ matrix.T).reshape(n, len(edges) - 1, self.n_sectors)
        return best_arc_snr(sums.astype(np.float64), counts.astype(np.float64))

    def predict_score(self, X):
        return platt_apply(self.raw_score(X), self.calibration_)
