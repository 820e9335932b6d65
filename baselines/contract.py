"""The method contract (DESIGN.md): scikit-learn's estimator conventions plus three additions.

- ``search_space``: a class attribute, plain data, naming the hyper-parameters Optuna may tune:
  ``{"C": {"type": "float", "low": 1e-4, "high": 10.0, "log": True}, ...}``
  (types "float", "int", "categorical" with "choices").
- ``decline(info)``: a reason (str) not to run on a task, or None.
- ``predict_score(X)``: one score per cutout (lens probability for lens finding).

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
- a ``checkpoint_dir`` parameter: when the user leaves it unset, the harness points it at the run's
  artefact folder and logs the file the method writes (``checkpoint_path_``) as the run's
  ``checkpoint`` artefact.
No torch here: baselines never import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sklearn.base import BaseEstimator


@dataclass(frozen=True)
class TaskInfo:
    """What a method may know about a task besides the arrays."""

    name: str
    kind: str  # "lens-finding"
    bands: tuple[str, ...]
    pixel_scale: float  # arcsec / pixel
    image_shape: tuple[int, int, int]  # (bands, H, W)


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
