"""Lens-model regression baselines for the ``modeling`` suite (issue 7; no torch).

- ``PriorMedian`` ("prior-median"): predicts the training set's median of every parameter, with the
  training variance as its uncertainty. The floor a method must beat: any error at or above the
  prior's means the method has learned nothing about that parameter.
- ``GradientBoostingModeling`` ("xgboost-modeling"): one multi-output XGBoost model on the
  photometric, shape and texture features of :mod:`lensbench.baselines.features` (the same as the
  ``xgboost`` lens finder: per-band centroids and moment ellipticities carry x, y, e1, e2; the
  aperture photometry and Gabor texture carry the ring radius), early stopping on a held-out part
  of the training set. Its sigmas are set on that held-out part so that its 68% interval covers
  68.27% of those lenses (``interval_scale``), as the networks' intervals are calibrated:
  ``uncertainty="per-lens"`` (the default) scales them per lens by a second model of |residual|
  on the same features, ``"constant"`` gives one sigma per parameter
  (``scripts/xgb_modeling_sigma.py`` compares the two on validation lenses). The variance of the
  held-out residuals, used before either, is inflated by their heavy tails: its 68% intervals
  covered 76-85% of the default run's test lenses in x, y, e1, e2 and theta_E
  (reports/modeling.md at 39fd0bf).

``y`` is (n, P) in the order of ``info.targets``; ``predict_score`` returns (n, P) and
``predict_variance`` (n, P).

Also the error statistics the modeling kind scores with and the networks report each epoch on
their validation part: ``half_width_68`` and ``gaussian_nll``.
"""

from __future__ import annotations

import numpy as np
from lensbench.baselines.common import task_geometry
from lensbench.baselines.contract import Method, TaskInfo
from lensbench.baselines.features import all_features


def half_width_68(error: np.ndarray) -> float:
    """Half the 16th-84th percentile range of an error (a Gaussian's sigma, robust to tails)."""
    lo, hi = np.percentile(error, [16, 84])
    return float((hi - lo) / 2)


def gaussian_nll(pred: np.ndarray, true: np.ndarray, variance: np.ndarray) -> float:
    """Mean Gaussian negative log-likelihood of the truth under the predicted means and
    variances, over lenses and parameters: it rewards small errors and honest uncertainties
    together (a too-narrow sigma costs more than a wide one), what a posterior-estimating network
    is for."""
    variance = np.maximum(np.asarray(variance, dtype=np.float64), 1e-12)
    error = np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return float(np.mean(0.5 * (np.log(2 * np.pi * variance) + error ** 2 / variance)))


def interval_scale(error: np.ndarray, sigma, coverage: float = 0.682689) -> np.ndarray:
    """Per parameter (column of ``error``, (n, P)), the factor by which ``sigma`` must be
    multiplied for |error| <= factor * sigma to hold in a fraction ``coverage`` of the rows:
    the calibration of an interval on held-out data (for a Gaussian's 68.27%, 1 when ``sigma``
    is right)."""
    return np.quantile(np.abs(error) / sigma, coverage, axis=0)


def _targets(y, info: TaskInfo | None) -> tuple[np.ndarray, tuple[str, ...]]:
    Y = np.asarray(y, dtype=np.float64)
    if Y.ndim != 2:
        raise ValueError(f"modeling targets must be (n, P), got shape {Y.shape}")
    names = tuple(info.targets) if info is not None and info.targets else tuple(
        f"target{i}" for i in range(Y.shape[1]))
    if len(names) != Y.shape[1]:
        raise ValueError(f"{Y.shape[1]} target columns but the task names {names}")
    return Y, names


class PriorMedian(Method):
    """Predicts the training median of each parameter (variance: the training variance)."""

    kinds = ("modeling",)

    def fit(self, X, y, info: TaskInfo | None = None):
        Y, self.targets_ = _targets(y, info)
        self.median_ = np.median(Y, axis=0)
        self.variance_ = Y.var(axis=0)
        return self

    def predict_score(self, X):
        return np.tile(self.median_, (len(X), 1))

    def predict_variance(self, X):
        return np.tile(self.variance_, (len(X), 1))


UNCERTAINTIES = ("per-lens", "constant")
# The least |residual| / sigma a per-lens model may predict: a guard against a tree's near-zero
# (or negative) output, which would give a lens an interval of nothing.
SIGMA_FLOOR = 0.05


class GradientBoostingModeling(Method):
    """Multi-output XGBoost regression (hist trees) of standardised lens-model parameters on the
    hand-made image features; trees chosen by early stopping on a held-out part."""

    kinds = ("modeling",)
    search_space = {
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        "max_depth": {"type": "int", "low": 3, "high": 10},
        "min_child_weight": {"type": "float", "low": 0.1, "high": 20.0, "log": True},
        "subsample": {"type": "float", "low": 0.5, "high": 1.0},
        "colsample_bytree": {"type": "float", "low": 0.3, "high": 1.0},
    }

    def __init__(self, n_estimators: int = 2000, learning_rate: float = 0.05, max_depth: int = 6,
                 min_child_weight: float = 1.0, subsample: float = 0.8,
                 colsample_bytree: float = 0.8, early_stopping_rounds: int = 50,
                 validation_fraction: float = 0.15, uncertainty: str = "per-lens",
                 sigma_trees: int = 200, sigma_depth: int = 3, n_jobs: int = 2,
                 random_state: int = 0):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.uncertainty = uncertainty
        self.sigma_trees = sigma_trees
        self.sigma_depth = sigma_depth
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _features(self, X):
        return all_features(X, self.pixel_scale_, self.bands_)[0]

    def fit(self, X, y, info: TaskInfo | None = None):
        self.pixel_scale_, self.bands_ = task_geometry(X, info)
        features, self.feature_names_ = all_features(X, self.pixel_scale_, self.bands_)
        return self.fit_features(features, y, info)

    def held_out_rows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(held-out, fitted) rows of a training set of ``n`` lenses."""
        order = np.random.default_rng(self.random_state).permutation(n)
        n_val = max(1, int(round(self.validation_fraction * n)))
        return order[:n_val], order[n_val:]

    def fit_features(self, features: np.ndarray, y, info: TaskInfo | None = None):
        """``fit`` on the image features (``_features``) of the training lenses."""
        from xgboost import XGBRegressor

        Y, self.targets_ = _targets(y, info)
        self.mean_, self.scale_ = Y.mean(axis=0), Y.std(axis=0) + 1e-12
        Z = (Y - self.mean_) / self.scale_  # one tree ensemble, so the targets share a scale
        val, train = self.held_out_rows(len(Y))
        self.model_ = XGBRegressor(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate,
            max_depth=self.max_depth, min_child_weight=self.min_child_weight,
            subsample=self.subsample, colsample_bytree=self.colsample_bytree,
            tree_method="hist", n_jobs=self.n_jobs, random_state=self.random_state,
            early_stopping_rounds=self.early_stopping_rounds)
        self.model_.fit(features[train], Z[train], eval_set=[(features[val], Z[val])],
                        verbose=False)
        self.best_iteration_ = int(self.model_.best_iteration)
        self.history_ = {"val_rmse": list(self.model_.evals_result()["validation_0"]["rmse"])}
        residual = self.mean_of_features(features[val]) - Y[val]
        self.fit_uncertainty(features[val], residual)
        return self

    def fit_uncertainty(self, features: np.ndarray, residual: np.ndarray) -> None:
        """The sigmas, from the held-out part's ``features`` and ``residual`` (n, P).

        ``"constant"``: one sigma per parameter, whose 68% interval covers 68.27% of the held-out
        lenses. ``"per-lens"``: that sigma times a model of |residual| on the features (xgboost,
        ``sigma_trees`` trees of depth ``sigma_depth``), fitted on each half of the held-out part
        and applied to the other, so that the interval is calibrated, as the constant one, on
        predictions for lenses its models did not see; a lens is given the mean of the two."""
        if self.uncertainty not in UNCERTAINTIES:
            raise ValueError(f"xgboost-modeling.uncertainty={self.uncertainty!r}: expected one "
                             f"of {', '.join(UNCERTAINTIES)}")
        sigma = interval_scale(residual, 1.0)
        self.sigma_models_ = []
        if self.uncertainty == "per-lens":
            from xgboost import XGBRegressor

            half = np.random.default_rng(self.random_state + 1).permutation(len(residual))
            halves = (half[:len(half) // 2], half[len(half) // 2:])
            relative = np.abs(residual) / sigma
            out_of_half = np.empty_like(relative)
            for fit_rows, other in (halves, halves[::-1]):
                model = XGBRegressor(n_estimators=self.sigma_trees, max_depth=self.sigma_depth,
                                     learning_rate=0.05, subsample=0.8, colsample_bytree=0.8,
                                     tree_method="hist", n_jobs=self.n_jobs,
                                     random_state=self.random_state)
                model.fit(features[fit_rows], relative[fit_rows], verbose=False)
                out_of_half[other] = self._relative_sigma([model], features[other])
                self.sigma_models_.append(model)
            sigma = sigma * interval_scale(residual, out_of_half * sigma)
        self.variance_ = sigma ** 2  # per-lens: the square of the sigma the models scale

    def _relative_sigma(self, models, features) -> np.ndarray:
        """(n, P) mean of ``models``' |residual| / sigma, at least SIGMA_FLOOR."""
        predicted = np.mean([np.asarray(m.predict(features)).reshape(len(features), -1)
                             for m in models], axis=0)
        return np.maximum(predicted, SIGMA_FLOOR)

    def predict_score(self, X):
        return self.mean_of_features(self._features(X))

    def predict_variance(self, X):
        return self.variance_of_features(self._features(X))

    def predict_with_uncertainty(self, X) -> dict[str, np.ndarray]:
        """mean (n, P) and variance (n, P), from one computation of the features."""
        features = self._features(X)
        return {"mean": self.mean_of_features(features),
                "variance": self.variance_of_features(features)}

    def mean_of_features(self, features: np.ndarray) -> np.ndarray:
        """(n, P) predicted parameters of lenses given by their image features (``_features``)."""
        Z = np.asarray(self.model_.predict(features), dtype=np.float64)
        return Z.reshape(-1, len(self.targets_)) * self.scale_ + self.mean_

    def variance_of_features(self, features: np.ndarray) -> np.ndarray:
        """(n, P) variances of lenses given by their image features (``_features``)."""
        if not getattr(self, "sigma_models_", None):  # "constant" (or saved before per-lens)
            return np.tile(self.variance_, (len(features), 1))
        return self._relative_sigma(self.sigma_models_, features) ** 2 * self.variance_

    def diagnostics(self) -> dict[str, float]:
        return {"best_iteration": float(self.best_iteration_)}
