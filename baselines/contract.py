"""The method contract: scikit-learn's estimator conventions plus three additions.

- ``search_space``: a class attribute, plain data, naming the hyper-parameters Optuna may tune:
  ``{"C": {"type": "float", "low": 1e-4, "high": 10.0, "log": True}, ...}``
  (types "float", "int", "categorical" with "choices").
- ``decline(info)``: a reason (str) not to run on a task, or None.
- ``predict_score(X)``: one score per cutout (lens probability for lens finding, a redshift for
  photo-z) or, for lens modeling, an (n, P) array of parameters in the order of ``info.targets``.

Methods that train in epochs accept ``fit(..., epoch_callback=None)`` and call
``epoch_callback(epoch, {"train_loss": ..., "val_auroc": ...})`` after each epoch; the harness
forwards these curves to the tracker (and Optuna may raise from it to prune a trial). Methods may
instead leave ``history_`` (name -> list per epoch).

Optional, used by the harness when present:

- ``predict_score_with_spread(X)``: (scores, spread) where spread is the standard deviation of a
  committee's member scores; stored beside the scores of the run.
- ``diagnostics()``: a dict of floats describing the fitted method (temperature, validation ECE
  before and after calibration, best epoch, fraction passing a pre-selection...), recorded with the
  metrics of the run under ``diag/``.
- ``predict_variance(X)`` (regression): the predictive variance of each prediction, scored by the
  coverage of its intervals; or ``predict_with_uncertainty(X)`` -> {"mean", "variance", "spread"}.
- ``predict_pdf(X)`` (photo-z; every registered photo-z method has it): p(z) of each galaxy on
  the one shared redshift grid ``lensbench.baselines.photoz.PDF_GRID``, an (n, len(PDF_GRID))
  array, non-negative, each row integrating to 1 by the trapezoid rule; scored with RAIL's
  distribution metrics (PIT, CDE loss).
- ``per_lens_fit = True`` (modeling): the method fits lens by lens and is slow, so the harness gives
  it only the task's fit subset of test lenses.
- a ``checkpoint_dir`` parameter: when the user leaves it unset, the harness points it at the run's
  artefact folder and logs the file the method writes (``checkpoint_path_``) as the run's
  ``checkpoint`` artefact.
- ``persistence``: how a fitted method is saved in a model file (baselines/persistence.py; the
  harness saves every run's as ``model.lbmodel``): by default its fitted attributes (names ending
  in ``_``: numpy arrays, plain data, scikit-learn, xgboost and torch models, nested methods);
  ``"net-finder"`` / ``"net-regressor"`` for methods with their own weights-only checkpoint;
  ``None`` for a method with nothing to save.
No torch here: baselines never import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sklearn.base import BaseEstimator


@dataclass(frozen=True)
class TaskInfo:
    """What a method may know about a task besides the arrays."""

    name: str
    kind: str  # "lens-finding", "modeling", "photoz"
    bands: tuple[str, ...]
    pixel_scale: float  # arcsec / pixel
    image_shape: tuple[int, int, int]  # (bands, H, W)
    survey: str | None = None  # preset name (PSF, noise) of simulated tasks; None for catalogues
    # Regression tasks: the names of the columns of y, in order (modeling: LENS_MODEL_TARGETS).
    targets: tuple[str, ...] = ()


# The modeling task's targets (issue 7; docs/references.md, "Conventions"): the SIE centre x, y
# (arcsec from the stamp centre, x along image columns, y along rows), its complex ellipticity
# e1, e2 = (1-q)/(1+q) (cos 2phi, sin 2phi), the Einstein radius theta_e (arcsec), and the external
# shear gamma1, gamma2. Truth columns of the simulated splits, in the same order.
LENS_MODEL_TARGETS = ("x", "y", "e1", "e2", "theta_e", "gamma1", "gamma2")
TRUTH_COLUMNS = {"x": "lens_x", "y": "lens_y", "e1": "e1", "e2": "e2", "theta_e": "theta_e",
                 "gamma1": "gamma1", "gamma2": "gamma2"}


class Method(BaseEstimator):
    """Base class of lensbench methods: get_params/set_params come from ``__init__``'s signature."""

    search_space: dict = {}
    kinds: tuple[str, ...] = ("lens-finding",)

    def decline(self, info: TaskInfo) -> str | None:
        if info.kind not in self.kinds:
            return f"{type(self).__name__} does {', '.join(self.kinds)}, not {info.kind}"
        return None

    def fit(self, X, y, info: TaskInfo | None = None):  # pragma: no cover - interface
        raise NotImplementedError

    def predict_score(self, X):  # pragma: no cover - interface
        raise NotImplementedError
