"""Classifiers on hand-made features (no torch).

- ``GradientBoosting`` ("xgboost"): XGBoost on the photometric, shape and texture features of
  ``lensbench.baselines.features``, early stopping on a stratified validation split held out of
  the training data.
- ``CatalogueNetwork`` ("catalog-nn"): step 1 of Cañameras et al. (2020), a fully connected
  network on aperture photometry (asinh magnitudes, colours, radial gradients), with a threshold
  ``threshold_`` that keeps 99% of the validation lenses, so a two-step pipeline can put it in
  front of a CNN (``passes(X)``).
"""

from __future__ import annotations

import numpy as np
from lensbench.baselines.common import task_geometry, validation_split
from lensbench.baselines.contract import Method, TaskInfo
from lensbench.baselines.features import all_features, catalogue_features
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


class GradientBoosting(Method):
    """XGBoost (hist trees, 2 threads) on aperture photometry + shape + Gabor texture features;
    the number of trees is set by early stopping on a held-out stratified validation split."""

    search_space = {
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        "max_depth": {"type": "int", "low": 2, "high": 8},
        "min_child_weight": {"type": "float", "low": 0.1, "high": 20.0, "log": True},
        "subsample": {"type": "float", "low": 0.5, "high": 1.0},
        "colsample_bytree": {"type": "float", "low": 0.3, "high": 1.0},
        "reg_lambda": {"type": "float", "low": 1e-2, "high": 10.0, "log": True},
    }

    def __init__(self, n_estimators: int = 1000, learning_rate: float = 0.05, max_depth: int = 5,
                 min_child_weight: float = 1.0, subsample: float = 0.8,
                 colsample_bytree: float = 0.8, reg_lambda: float = 1.0,
                 early_stopping_rounds: int = 50, validation_fraction: float = 0.2,
                 n_jobs: int = 2, random_state: int = 0):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _features(self, X):
        return all_features(X, self.pixel_scale_, self.bands_)[0]

    def fit(self, X, y, info: TaskInfo | None = None):
        from xgboost import XGBClassifier

        self.pixel_scale_, self.bands_ = task_geometry(X, info)
        features, self.feature_names_ = all_features(X, self.pixel_scale_, self.bands_)
        y = np.asarray(y).astype(int)
        train, val = validation_split(y, self.validation_fraction, self.random_state)
        self.model_ = XGBClassifier(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate,
            max_depth=self.max_depth, min_child_weight=self.min_child_weight,
            subsample=self.subsample, colsample_bytree=self.colsample_bytree,
            reg_lambda=self.reg_lambda, tree_method="hist", n_jobs=self.n_jobs,
            eval_metric="logloss", early_stopping_rounds=self.early_stopping_rounds,
            random_state=self.random_state)
        self.model_.fit(features[train], y[train], eval_set=[(features[val], y[val])],
                        verbose=False)
        self.best_iteration_ = int(self.model_.best_iteration)
        self.history_ = {"val_logloss": list(self.model_.evals_result()["validation_0"]
                                             ["logloss"])}
        return self

    def predict_score(self, X):
        return self.model_.predict_proba(self._features(X))[:, 1]


class CatalogueNetwork(Method):
    """Cañameras et al. (2020) step 1: a fully connected network (scikit-learn MLP, standardised
    inputs) on aperture photometry in radii 1.04", 1.76", 3.00", 4.64" (asinh magnitudes,
    colours, radial gradients). ``threshold_`` keeps ``keep_fraction`` of the lenses of the
    held-out validation split; ``passes(X)`` applies it."""

    search_space = {
        "alpha": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
        "learning_rate_init": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "hidden_layer_sizes": {"type": "categorical",
                               "choices": [[32], [64, 32], [128, 64], [128, 64, 32]]},
    }

    def __init__(self, hidden_layer_sizes=(64, 32), alpha: float = 1e-4,
                 learning_rate_init: float = 1e-3, max_iter: int = 500,
                 validation_fraction: float = 0.2, keep_fraction: float = 0.99,
                 random_state: int = 0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alpha = alpha
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.validation_fraction = validation_fraction
        self.keep_fraction = keep_fraction
        self.random_state = random_state

    def _features(self, X):
        return catalogue_features(X, self.pixel_scale_, self.bands_)[0]

    def fit(self, X, y, info: TaskInfo | None = None):
        self.pixel_scale_, self.bands_ = task_geometry(X, info)
        features, self.feature_names_ = catalogue_features(X, self.pixel_scale_, self.bands_)
        y = np.asarray(y).astype(int)
        train, val = validation_split(y, self.validation_fraction, self.random_state)
        self.model_ = make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=tuple(self.hidden_layer_sizes), alpha=self.alpha,
            learning_rate_init=self.learning_rate_init, max_iter=self.max_iter,
            early_stopping=len(train) >= 50, n_iter_no_change=20,
            random_state=self.random_state))
        self.model_.fit(features[train], y[train])
        val_scores = self.model_.predict_proba(features[val])[:, 1]
        self.threshold_ = self.lens_keeping_threshold(val_scores[y[val] == 1],
                                                      self.keep_fraction)
        self.validation_kept_ = (float(np.mean(val_scores[y[val] == 1] >= self.threshold_))
                                 if np.any(y[val] == 1) else float("nan"))
        self.validation_rejected_ = (float(np.mean(val_scores[y[val] == 0] < self.threshold_))
                                     if np.any(y[val] == 0) else float("nan"))
        return self

    @staticmethod
    def lens_keeping_threshold(lens_scores, keep_fraction: float) -> float:
        """The highest threshold t with mean(lens_scores >= t) >= keep_fraction (-inf if none)."""
        scores = np.sort(np.asarray(lens_scores, dtype=np.float64))
        if len(scores) == 0:
            return -np.inf
        drop = int(np.floor((1.0 - keep_fraction) * len(scores) + 1e-9))
        return float(scores[min(drop, len(scores) - 1)])

    def predict_score(self, X):
        return self.model_.predict_proba(self._features(X))[:, 1]

    def passes(self, X) -> np.ndarray:
        """Boolean mask of the cutouts kept by step 1 (score >= ``threshold_``)."""
        return self.predict_score(X) >= self.threshold_
