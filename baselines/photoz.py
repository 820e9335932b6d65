"""Photometric-redshift regressors on catalogue photometry (no torch here).

Input ``X``: (n, 2B) float array, the B magnitudes (AB) then their B errors, bands in
``info.bands`` order (``lensbench.datasets.photoz.BANDS``: u, g, r, i, z). Output: z, and
``predict_pdf(X)``: p(z) on the shared grid ``PDF_GRID`` (n, len(PDF_GRID)), non-negative, each
row integrating to 1 by the trapezoid rule (``normalised_pdf``).

- ``knn-photoz`` (:class:`KNNPhotoz`): local linear regression on the k nearest neighbours in
  magnitude + colour space (DEmP, Hsieh & Yee 2014; Beck et al. 2016), ridge-regularised, the fit
  clipped to the neighbours' z range; its variance is the weighted residual variance. p(z): the
  neighbours' redshifts moved to the galaxy's photometry by the local linear fit (prediction +
  each neighbour's residual), distance-weighted, each a Gaussian kernel of width
  ``bandwidth`` (1 + z). Spectroscopic redshift errors (~1e-4) are far too small to smooth with,
  so the bandwidth is chosen on the validation split (the best mean log p(z_spec)) when the
  harness passes one.
- ``xgboost-photoz`` (:class:`XGBoostPhotoz`): gradient-boosted trees on the same features plus
  the u band and log errors, with an absolute-error objective (a conditional median; chosen on
  the BOSS validation part: sigma_NMAD 0.0192 against 0.0203 for squared error on g,r,i,z).
  p(z): a second model of quantile regression (``reg:quantileerror``, the levels
  ``PDF_QUANTILES``), its quantiles sorted (rearrangement, so they never cross), the CDF linear
  between them and smoothed by a Gaussian of width ``bandwidth`` (1 + z), the bandwidth chosen on
  the validation part (the best mean log p(z_spec), as for knn-photoz). Chosen over a binned
  classifier because the quantiles give the CDF directly with 7 outputs on the continuous z,
  where a classifier needs ~100 classes (one tree each per round) and a choice of bins.
- ``mlp-photoz`` (:class:`MLPPhotoz`): an MLP (sklearn) for the mean, and a second regressor of
  log squared residuals on held-out rows for the predictive variance; p(z) the Gaussian of that
  mean and variance (``gaussian_pdf``; both are in z).

Features (:class:`PhotozFeatures`): magnitudes and adjacent colours (or, with
``colours="all"``, every pair) of the bands whose median training error is below
``max_median_error`` (BOSS u, median error ~1 mag, is left out; MGS u is kept), optionally their
log errors, standardised on the training set. For xgboost, all colours and the errors changed
nothing on BOSS (5-fold cross-validation on train + validation: sigma_NMAD 0.0191 with adjacent
colours, all colours, or all colours without errors).
"""

from __future__ import annotations

import numpy as np
from lensbench.baselines.contract import Method

_LOG_CHI2_1_MEAN = -1.2703628454614782  # E[log x], x ~ chi^2_1: psi(1/2) + log 2

# The one redshift grid of every photo-z method's p(z) (``predict_pdf``): z in [0, 1.5] in steps
# of 0.005. The step: at sigma_NMAD ~0.02 and z ~0.5 a p(z) has sigma_z ~0.03, six steps, where
# the trapezoid rule integrates a Gaussian to ~1e-6 and the CDF at z_spec (the PIT) is good to
# ~1e-3; coarser grids (RAIL's evaluator default, 0.0083) start to blur the narrowest pdfs. The
# range: BOSS reaches z ~1.0 and MGS 0.35, so 1.5 leaves room for the tails.
PDF_GRID = np.linspace(0.0, 1.5, 301)
PDF_GRID.setflags(write=False)
PDF_STEP = float(PDF_GRID[1] - PDF_GRID[0])
PDF_QUANTILES = (0.01, 0.05, 0.16, 0.5, 0.84, 0.95, 0.99)  # xgboost-photoz's quantile levels
# kernel widths / (1 + z) tried on the validation split (knn-photoz, xgboost-photoz)
BANDWIDTHS = (0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05)


def normalised_pdf(density: np.ndarray, grid: np.ndarray = PDF_GRID) -> np.ndarray:
    """Rows of ``density`` on ``grid``, clipped at 0 and divided by their trapezoid integral."""
    density = np.clip(np.asarray(density, dtype=np.float64), 0.0, None)
    area = np.trapezoid(density, grid, axis=-1)
    if not (area > 0).all():
        raise ValueError(f"{int((~(area > 0)).sum())} p(z) rows have no mass on the grid "
                         f"[{grid[0]:g}, {grid[-1]:g}]")
    return density / area[..., None]


def on_the_grid(z) -> np.ndarray:
    """Point estimates held to ``PDF_GRID``'s range, where every method's p(z) lies: a
    regression runs past it (z < 0 for the brightest galaxies, z > 1.5 for the faintest), and a
    point estimate outside its own distribution contradicts it."""
    return np.clip(np.asarray(z, dtype=np.float64), PDF_GRID[0], PDF_GRID[-1])


def gaussian_pdf(mean: np.ndarray, variance: np.ndarray, grid: np.ndarray = PDF_GRID
                 ) -> np.ndarray:
    """Gaussian p(z) of each (mean, variance) on ``grid``, cut at the grid's ends and
    renormalised. The width is floored at one grid step: narrower Gaussians fall between the
    grid points, where the trapezoid rule cannot integrate them; the mean is clipped to the grid
    so that every row has mass on it."""
    mean = np.clip(np.asarray(mean, dtype=np.float64), grid[0], grid[-1])
    sigma = np.maximum(np.sqrt(np.clip(np.asarray(variance, dtype=np.float64), 0, None)),
                       grid[1] - grid[0])
    return normalised_pdf(np.exp(-0.5 * ((grid[None] - mean[:, None]) / sigma[:, None]) ** 2),
                          grid)


def quantile_density(quantiles: np.ndarray, levels, widths: np.ndarray, z: np.ndarray
                     ) -> np.ndarray:
    """The density at ``z`` (n, m) of the distributions given by quantiles (n, L) at ``levels``
    (L increasing in (0, 1)), smoothed by Gaussians of standard deviation ``widths`` (n,).

    The quantiles are sorted (crossing quantiles rearranged, Chernozhukov et al. 2010); the CDF
    goes through (q_j, level_j) and reaches 0 and 1 one outer gap beyond the first and last
    quantiles; between knots it is linear (a uniform density), and each uniform piece is
    convolved with the Gaussian: sum_j dlevel_j [Phi((z - q_j)/w) - Phi((z - q_j+1)/w)] /
    (q_j+1 - q_j). Non-negative and of unit mass by construction, and without the spikes a
    monotone spline through two nearly equal quantiles has."""
    from scipy.special import ndtr

    levels = np.asarray(levels, dtype=np.float64)
    q = np.sort(np.asarray(quantiles, dtype=np.float64), axis=1)
    knots = np.concatenate([q[:, :1] - (q[:, 1:2] - q[:, :1]), q,
                            q[:, -1:] + (q[:, -1:] - q[:, -2:-1])], axis=1)
    lo, hi = knots[:, :-1, None], knots[:, 1:, None]  # (n, L + 1, 1)
    mass = np.diff(np.concatenate([[0.0], levels, [1.0]]))[None, :, None]
    w = np.asarray(widths, dtype=np.float64).reshape(-1, 1, 1)
    z = np.asarray(z, dtype=np.float64)[:, None, :]  # (n, 1, m)
    # a piece narrower than 1e-3 of the kernel is the kernel itself (the limit of the formula)
    span = np.maximum(hi - lo, 1e-3 * w)
    return (mass * (ndtr((z - lo) / w) - ndtr((z - lo - span) / w)) / span).sum(1)


def quantile_pdf(quantiles: np.ndarray, levels, widths: np.ndarray | float = PDF_STEP,
                 grid: np.ndarray = PDF_GRID) -> np.ndarray:
    """``quantile_density`` on ``grid``, renormalised (the grid cuts the tails)."""
    quantiles = np.asarray(quantiles, dtype=np.float64)
    widths = np.broadcast_to(np.maximum(widths, grid[1] - grid[0]), (len(quantiles),))
    return normalised_pdf(quantile_density(quantiles, levels, widths,
                                           np.broadcast_to(grid, (len(quantiles), len(grid)))),
                          grid)


def pdf_cdf(pdf: np.ndarray, grid: np.ndarray = PDF_GRID) -> np.ndarray:
    """The CDF of each p(z) row at the grid points (cumulative trapezoid rule)."""
    steps = 0.5 * (pdf[:, 1:] + pdf[:, :-1]) * np.diff(grid)[None]
    return np.concatenate([np.zeros((len(pdf), 1)), np.cumsum(steps, axis=1)], axis=1)


def pit_of(pdf: np.ndarray, z: np.ndarray, grid: np.ndarray = PDF_GRID) -> np.ndarray:
    """The PIT of each row: its CDF at ``z`` (linear between grid points)."""
    cdf = pdf_cdf(pdf, grid)
    return np.array([np.interp(value, grid, row) for value, row in zip(z, cdf, strict=True)])


def pit_recalibration(pdf: np.ndarray, z: np.ndarray, n_levels: int = 51,
                      grid: np.ndarray = PDF_GRID) -> np.ndarray:
    """The held-out PIT values' quantiles at ``n_levels`` even levels from 0 to 1 (strictly
    increasing, the ends stretched to 0 and 1): the map ``recalibrated_pdf`` applies."""
    pits = np.quantile(pit_of(pdf, z, grid), np.linspace(0.0, 1.0, n_levels))
    pits = np.maximum.accumulate(pits + 1e-9 * np.arange(n_levels))  # a pile of equal PITs
    pits[0], pits[-1] = min(pits[0], 0.0), max(pits[-1], 1.0)
    return pits


def recalibrated_pdf(pdf: np.ndarray, pit_quantiles: np.ndarray,
                     grid: np.ndarray = PDF_GRID) -> np.ndarray:
    """p(z) recalibrated by the PIT distribution of a held-out set (Bordoloi, Lilly & Amara 2010,
    MNRAS 406, 881): the new CDF is G(F(z)), F the CDF of p(z) and G the held-out PITs' CDF
    (linear between their quantiles ``pit_quantiles``, from ``pit_recalibration``), so that the
    held-out PITs become uniform; G is monotone, so the result is still a distribution, and a
    calibrated set (uniform PITs) is left as it was."""
    levels = np.linspace(0.0, 1.0, len(pit_quantiles))
    cdf = np.interp(pdf_cdf(pdf, grid), pit_quantiles, levels)
    return normalised_pdf(np.gradient(cdf, grid, axis=1), grid)


class PhotozFeatures:
    """Magnitudes, colours and (optionally) log10 errors of the well-measured bands, standardised
    on the training rows.

    Columns, in order (``names_`` after ``fit``; B = the kept bands, in catalogue order):
    the B magnitudes; the colours, either the B-1 adjacent ones (``colours="adjacent"``:
    ``g-r, r-i, ...``) or all B(B-1)/2 pairs (``colours="all"``: ``g-r, g-i, ..., i-z``);
    with ``with_errors`` the B log10 magnitude errors (errors clipped at 1e-3 mag).
    A band is kept when its median training error is <= ``max_median_error`` (at least the two
    best-measured bands are kept)."""

    def __init__(self, max_median_error: float = 0.5, with_errors: bool = False,
                 colours: str = "adjacent"):
        self.max_median_error = max_median_error
        self.with_errors = with_errors
        self.colours = colours

    def fit(self, X: np.ndarray, bands: tuple[str, ...] | None = None) -> PhotozFeatures:
        if self.colours not in ("adjacent", "all"):
            raise ValueError(f"colours must be 'adjacent' or 'all', not {self.colours!r}")
        X = np.asarray(X, dtype=np.float64)
        n_bands = X.shape[1] // 2
        median_err = np.median(X[:, n_bands:], axis=0)
        self.bands_ = np.flatnonzero(median_err <= self.max_median_error)
        if len(self.bands_) < 2:
            self.bands_ = np.sort(np.argsort(median_err)[:2])
        label = [str(bands[b]) if bands is not None else f"m{b}" for b in self.bands_]
        pairs = self._pairs(len(self.bands_))
        self.names_ = [*label, *(f"{label[i]}-{label[j]}" for i, j in pairs)]
        if self.with_errors:
            self.names_ += [f"log10_err_{name}" for name in label]
        raw = self._raw(X)
        self.mean_, self.scale_ = raw.mean(0), raw.std(0) + 1e-9
        return self

    def _pairs(self, n: int) -> list[tuple[int, int]]:
        if self.colours == "adjacent":
            return [(i, i + 1) for i in range(n - 1)]
        return [(i, j) for i in range(n) for j in range(i + 1, n)]

    def _raw(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        n_bands = X.shape[1] // 2
        mags = X[:, self.bands_]
        pairs = self._pairs(len(self.bands_))
        colours = np.stack([mags[:, i] - mags[:, j] for i, j in pairs], axis=1)
        parts = [mags, colours]
        if self.with_errors:
            parts.append(np.log10(np.clip(X[:, n_bands + self.bands_], 1e-3, None)))
        return np.hstack(parts)

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (self._raw(X) - self.mean_) / self.scale_


class PhotozMethod(Method):
    """Base of the photo-z regressors: kind "photoz", catalogue inputs, predict_score = z."""

    kinds = ("photoz",)
    inputs = "catalogue"

    def predict_score(self, X):
        return self.predict(X)


class KNNPhotoz(PhotozMethod):
    """Local linear regression of z on the features of the k nearest training galaxies; p(z) a
    kernel density of the neighbours' redshifts moved to the galaxy by that fit."""

    search_space = {
        "n_neighbors": {"type": "int", "low": 16, "high": 256, "log": True},
        "ridge": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
        "weighting": {"type": "categorical", "choices": ["uniform", "distance"]},
    }
    BANDWIDTHS = BANDWIDTHS  # tried on the validation split when ``bandwidth`` is None

    def __init__(self, n_neighbors: int = 96, ridge: float = 0.1, weighting: str = "distance",
                 bandwidth: float | None = None, max_median_error: float = 0.5,
                 batch_size: int = 2048):
        self.n_neighbors = n_neighbors
        self.ridge = ridge
        self.weighting = weighting
        self.bandwidth = bandwidth
        self.max_median_error = max_median_error
        self.batch_size = batch_size

    def fit(self, X, y, info=None, validation=None):
        from sklearn.neighbors import NearestNeighbors

        self.features_ = PhotozFeatures(self.max_median_error).fit(X)
        self.train_ = self.features_.transform(X)
        self.z_ = np.asarray(y, dtype=np.float64)
        k = min(self.n_neighbors, len(self.z_))
        self.index_ = NearestNeighbors(n_neighbors=k).fit(self.train_)
        self.bandwidth_ = self.bandwidth if self.bandwidth is not None else 0.01
        if self.bandwidth is None and validation is not None:
            self.bandwidth_ = self._best_bandwidth(validation[0],
                                                   np.asarray(validation[1], dtype=np.float64))
        return self

    def _neighbourhoods(self, X, batch_size=None):
        """Per batch of rows: (z, weighted residual variance, the neighbours' redshifts moved to
        the row's photometry by the local fit (m, k), their weights (m, k))."""
        F = self.features_.transform(X)
        batch_size = batch_size or self.batch_size
        for start in range(0, len(F), batch_size):
            f = F[start:start + batch_size]
            dist, idx = self.index_.kneighbors(f)
            zn = self.z_[idx]  # (m, k)
            if self.weighting == "distance":
                w = 1.0 / (dist + np.median(dist, axis=1, keepdims=True) * 0.1 + 1e-9)
            else:
                w = np.ones_like(dist)
            w = w / w.sum(1, keepdims=True)
            A = np.concatenate([np.ones((*idx.shape, 1)), self.train_[idx] - f[:, None]], -1)
            AtW = A.transpose(0, 2, 1) * w[:, None, :]
            penalty = self.ridge / idx.shape[1] * np.eye(A.shape[-1])
            penalty[0, 0] = 0.0  # the intercept (the prediction) is not shrunk
            coef = np.linalg.solve(AtW @ A + penalty, (AtW @ zn[..., None]))[..., 0]
            z = np.clip(coef[:, 0], zn.min(1), zn.max(1))
            resid = zn - (A @ coef[..., None])[..., 0]
            moved = np.clip(z[:, None] + resid, PDF_GRID[0], PDF_GRID[-1])  # z >= 0
            yield z, (w * resid**2).sum(1), moved, w

    def _predict(self, X):
        parts = [(z, var) for z, var, _, _ in self._neighbourhoods(X)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def predict(self, X):
        return self._predict(X)[0]

    def predict_variance(self, X):
        return self._predict(X)[1]

    @staticmethod
    def _kernel_widths(z, bandwidth):
        return np.maximum(bandwidth * (1 + np.clip(z, 0, None)), PDF_STEP)[:, None, None]

    def _best_bandwidth(self, X_val, z_val) -> float:
        """The bandwidth of ``BANDWIDTHS`` with the highest mean log p(z_spec) on the
        validation rows (the log score, a proper scoring rule)."""
        scores = np.zeros(len(self.BANDWIDTHS))
        start = 0
        for z, _, centres, w in self._neighbourhoods(X_val):
            truth = z_val[start:start + len(z)]
            start += len(z)
            for j, h in enumerate(self.BANDWIDTHS):
                s = self._kernel_widths(z, h)[..., 0]
                p = (w * np.exp(-0.5 * ((truth[:, None] - centres) / s) ** 2) / s).sum(1)
                scores[j] += np.log(p / np.sqrt(2 * np.pi) + 1e-300).sum()
        return float(self.BANDWIDTHS[int(np.argmax(scores))])

    def predict_pdf(self, X):
        """p(z) on ``PDF_GRID``: (n, len(PDF_GRID))."""
        pdfs = []
        # 256 rows x k neighbours x the grid stay ~60 MB
        for z, _, centres, w in self._neighbourhoods(X, batch_size=256):
            s = self._kernel_widths(z, self.bandwidth_)
            kernels = np.exp(-0.5 * ((PDF_GRID[None, None] - centres[..., None]) / s) ** 2) / s
            pdfs.append(normalised_pdf((w[..., None] * kernels).sum(1)))
        return np.concatenate(pdfs)


class XGBoostPhotoz(PhotozMethod):
    """XGBoost (hist trees) regression of z; early stopping on the validation split when the
    harness passes one, else on 10% of the training rows."""

    search_space = {
        "n_estimators": {"type": "int", "low": 200, "high": 3000, "log": True},
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        "max_depth": {"type": "int", "low": 3, "high": 10},
        "min_child_weight": {"type": "float", "low": 1.0, "high": 50.0, "log": True},
        "subsample": {"type": "float", "low": 0.5, "high": 1.0},
        "objective": {"type": "categorical",
                      "choices": ["reg:absoluteerror", "reg:squarederror"]},
    }

    def __init__(self, n_estimators: int = 3000, learning_rate: float = 0.03,
                 max_depth: int = 6, min_child_weight: float = 5.0, subsample: float = 0.8,
                 colsample_bytree: float = 0.8, objective: str = "reg:absoluteerror",
                 max_median_error: float = 2.0, with_errors: bool = True,
                 pdf_learning_rate: float = 0.1, n_jobs: int = 2, random_state: int = 0):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.objective = objective
        self.max_median_error = max_median_error
        self.with_errors = with_errors
        self.pdf_learning_rate = pdf_learning_rate
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y, info=None, validation=None):
        import xgboost as xgb

        self.features_ = PhotozFeatures(self.max_median_error, self.with_errors).fit(X)
        F, y = self.features_.transform(X), np.asarray(y, dtype=np.float64)
        if validation is None:
            rng = np.random.default_rng(self.random_state)
            val = rng.random(len(y)) < 0.1
            F_val, y_val, F, y = F[val], y[val], F[~val], y[~val]
        else:
            F_val, y_val = self.features_.transform(validation[0]), np.asarray(validation[1])
        trees = dict(max_depth=self.max_depth, min_child_weight=self.min_child_weight,
                     subsample=self.subsample, colsample_bytree=self.colsample_bytree,
                     tree_method="hist", n_jobs=self.n_jobs, random_state=self.random_state,
                     early_stopping_rounds=100)
        self.model_ = xgb.XGBRegressor(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate,
            objective=self.objective, eval_metric="mae", **trees)
        self.model_.fit(F, y, eval_set=[(F_val, y_val)], verbose=False)
        # p(z): one multi-quantile model; a larger learning rate, since it grows a tree per
        # level each round
        self.quantile_model_ = xgb.XGBRegressor(
            n_estimators=self.n_estimators, learning_rate=self.pdf_learning_rate,
            objective="reg:quantileerror", quantile_alpha=np.array(PDF_QUANTILES), **trees)
        self.quantile_model_.fit(F, y, eval_set=[(F_val, y_val)], verbose=False)
        quantiles = self._quantiles(F_val)
        scores = [np.log(quantile_density(quantiles, PDF_QUANTILES,
                                          self._widths(quantiles, h), y_val[:, None]) + 1e-300
                         ).mean() for h in BANDWIDTHS]
        self.bandwidth_ = float(BANDWIDTHS[int(np.argmax(scores))])
        self.history_ = {"val_mae": self.model_.evals_result()["validation_0"]["mae"],
                         "val_quantile_loss":
                             self.quantile_model_.evals_result()["validation_0"]["quantile"]}
        return self

    def _quantiles(self, F):
        return np.asarray(self.quantile_model_.predict(F), dtype=np.float64).reshape(len(F), -1)

    @staticmethod
    def _widths(quantiles, bandwidth):
        """The smoothing width of each row: bandwidth (1 + the median), at least a grid step."""
        median = quantiles[:, len(PDF_QUANTILES) // 2]
        return np.maximum(bandwidth * (1 + np.clip(median, 0, None)), PDF_STEP)

    def predict_pdf(self, X):
        """p(z) on ``PDF_GRID`` from the predicted quantiles: (n, len(PDF_GRID))."""
        quantiles = self._quantiles(self.features_.transform(X))
        widths = self._widths(quantiles, self.bandwidth_)
        return np.concatenate([  # 1024 rows x 8 pieces x the grid: ~20 MB a step
            quantile_pdf(quantiles[start:start + 1024], PDF_QUANTILES, widths[start:start + 1024])
            for start in range(0, len(quantiles), 1024)])

    def predict(self, X):
        return on_the_grid(self.model_.predict(self.features_.transform(X)))


class MLPPhotoz(PhotozMethod):
    """An MLP for the mean z and a gradient-boosted model of log squared residuals (fitted on
    ``variance_fraction`` of the training rows the MLP never saw) for the predictive variance,
    de-biased by E[log chi^2_1] so that exp(prediction) estimates the variance of a Gaussian."""

    search_space = {
        "hidden": {"type": "int", "low": 32, "high": 256, "log": True},
        "layers": {"type": "int", "low": 1, "high": 4},
        "alpha": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
        "learning_rate_init": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    }

    def __init__(self, hidden: int = 128, layers: int = 3, alpha: float = 1e-4,
                 learning_rate_init: float = 1e-3, max_iter: int = 200, batch_size: int = 256,
                 n_members: int = 3, variance_fraction: float = 0.15,
                 max_median_error: float = 0.5, random_state: int = 0):
        self.hidden = hidden
        self.layers = layers
        self.alpha = alpha
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.n_members = n_members
        self.variance_fraction = variance_fraction
        self.max_median_error = max_median_error
        self.random_state = random_state

    def fit(self, X, y, info=None, epoch_callback=None):
        from sklearn.ensemble import HistGradientBoostingRegressor
        from sklearn.neural_network import MLPRegressor

        self.features_ = PhotozFeatures(self.max_median_error).fit(X)
        F, y = self.features_.transform(X), np.asarray(y, dtype=np.float64)
        rng = np.random.default_rng(self.random_state)
        held = rng.random(len(y)) < self.variance_fraction
        self.members_ = []
        for member in range(max(1, self.n_members)):
            mlp = MLPRegressor(hidden_layer_sizes=(self.hidden,) * self.layers, alpha=self.alpha,
                               learning_rate_init=self.learning_rate_init,
                               max_iter=self.max_iter, batch_size=self.batch_size,
                               early_stopping=True, n_iter_no_change=15,
                               random_state=self.random_state + member)
            self.members_.append(mlp.fit(F[~held], y[~held]))
        curve = self.members_[0].loss_curve_
        self.history_ = {"train_loss": list(curve),
                         "val_r2": list(self.members_[0].validation_scores_)}
        if epoch_callback is not None:
            for epoch, loss in enumerate(curve):
                epoch_callback(epoch, {"train_loss": loss})
        resid2 = (y[held] - self._mean(F[held])) ** 2
        self.variance_model_ = HistGradientBoostingRegressor(
            max_iter=200, learning_rate=0.05, random_state=self.random_state)
        self.variance_model_.fit(F[held], np.log(resid2 + 1e-8) - _LOG_CHI2_1_MEAN)
        return self

    def _mean(self, F):
        return np.mean([m.predict(F) for m in self.members_], axis=0)

    def predict(self, X):
        return on_the_grid(self._mean(self.features_.transform(X)))

    def predict_variance(self, X):
        return np.exp(self.variance_model_.predict(self.features_.transform(X)))

    def predict_pdf(self, X):
        """The Gaussian of the predicted mean and variance on ``PDF_GRID``."""
        return gaussian_pdf(self.predict(X), self.predict_variance(X))
