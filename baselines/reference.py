"""Two honest reference methods that exercise the harness: a random scorer (AUROC ~ 0.5 by
construction) and logistic regression on pixel values (what a linear model sees)."""

from __future__ import annotations

import hashlib

import numpy as np
from lensbench.baselines.contract import Method, TaskInfo
from lensbench.datasets.robust import mad_sigma
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


class RandomScorer(Method):
    """Uniform random scores, independent of the label: the floor every method must beat.

    Each cutout's score is drawn from a generator seeded by ``random_state`` and the cutout's
    bytes, so scoring keeps no state (the contract), a cutout scores the same in any batch, and a
    rotated cutout gets an unrelated score."""

    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    def fit(self, X, y, info: TaskInfo | None = None):
        self.n_features_in_ = int(np.prod(np.shape(X)[1:]))
        return self

    def predict_score(self, X):
        X = np.ascontiguousarray(X)
        return np.array([np.random.default_rng(
            [self.random_state, *np.frombuffer(hashlib.sha256(x.tobytes()).digest(), np.uint32)]
        ).random() for x in X])


def centre_crop(X: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` pixels of images (n, B, H, W)."""
    h, w = X.shape[-2:]
    size = min(size, h, w)
    top, left = (h - size) // 2, (w - size) // 2
    return X[..., top: top + size, left: left + size]


class PixelLogisticRegression(Method):
    """L2 logistic regression on the arcsinh-stretched pixels of the central crop.

    The arcsinh stretch (softening ``stretch`` in units of each band's robust noise) tames the
    bright lens cores so faint arcs carry weight; features are then standardised."""

    search_space = {
        "C": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "crop": {"type": "int", "low": 16, "high": 64, "at_most": "stamp"},
    }

    def __init__(self, C: float = 0.01, crop: int = 32, stretch: float = 3.0,
                 max_iter: int = 300, random_state: int = 0):
        self.C = C
        self.crop = crop
        self.stretch = stretch
        self.max_iter = max_iter
        self.random_state = random_state

    def _features(self, X):
        X = centre_crop(np.asarray(X, dtype=np.float32), self.crop)
        return np.arcsinh(X / (self.stretch * self.noise_[None, :, None, None])).reshape(
            len(X), -1)

    def fit(self, X, y, info: TaskInfo | None = None):
        X = np.asarray(X, dtype=np.float32)
        edge = np.concatenate([X[:, :, :2].reshape(*X.shape[:2], -1),
                               X[:, :, -2:].reshape(*X.shape[:2], -1)], axis=2)
        # Robust per-band sky noise from the stamp borders (1.4826 MAD).
        self.noise_ = np.maximum(mad_sigma(edge, axis=(0, 2)), 1e-12)
        self.model_ = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C, max_iter=self.max_iter,
                               random_state=self.random_state))
        self.model_.fit(self._features(X), np.asarray(y))
        return self

    def predict_score(self, X):
        return self.model_.predict_proba(self._features(X))[:, 1]
