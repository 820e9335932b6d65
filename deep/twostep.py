"""Two-step lens finding after Canameras et al. 2020 (A&A 644, A163): a catalogue pre-selection
(by default the ``catalog-nn`` method: a network on aperture photometry whose ``threshold_`` keeps
99% of the validation lenses) and a CNN committee that scores only what passes.

Scores keep one total ranking, independent of how the test set is batched: cutouts that pass get
0.5 + 0.5 * (CNN score), cutouts that do not get 0.49 * (catalogue score), so every rejected
cutout ranks below every CNN-scored one and rejected cutouts stay ordered by the catalogue. The
share of a set reaching the CNN is therefore the share of its scores >= 0.5; scoring keeps no
count of it (``predict_score`` leaves the fitted method as it was, as the contract asks).
"""

from __future__ import annotations

import numpy as np
from lensbench.baselines.contract import Method, TaskInfo
from lensbench.baselines.registry import resolve_method
from lensbench.deep.methods import as_images

REJECTED_SCALE = 0.49


class TwoStep(Method):
    """``preselector`` and ``cnn`` are registered method names; their keyword arguments go in
    ``preselector_params`` / ``cnn_params`` (dicts). The CNN trains on all training cutouts."""

    search_space: dict = {}

    def __init__(self, preselector: str = "catalog-nn", preselector_params: dict | None = None,
                 cnn: str = "committee", cnn_params: dict | None = None,
                 random_state: int = 0):
        self.preselector = preselector
        self.preselector_params = preselector_params
        self.cnn = cnn
        self.cnn_params = cnn_params
        self.random_state = random_state

    @staticmethod
    def _make(name: str, params: dict | None, random_state: int) -> Method:
        cls = resolve_method(name)
        kwargs = dict(params or {})
        if "random_state" in cls().get_params():
            kwargs.setdefault("random_state", random_state)
        return cls(**kwargs)

    def fit(self, X, y, info: TaskInfo | None = None, epoch_callback=None):
        X = as_images(X)
        y = np.asarray(y)
        self.preselector_ = self._make(self.preselector, self.preselector_params,
                                       self.random_state).fit(X, y, info=info)
        self.pass_fraction_ = float(np.mean(self.preselector_.passes(X))) if len(X) else 0.0
        self.cnn_ = self._make(self.cnn, self.cnn_params, self.random_state + 1)
        self.cnn_.fit(X, y, info=info, epoch_callback=epoch_callback)
        self.history_ = dict(getattr(self.cnn_, "history_", {}) or {})
        return self

    def predict_score(self, X) -> np.ndarray:
        X = as_images(X)
        scores = REJECTED_SCALE * np.clip(
            np.asarray(self.preselector_.predict_score(X), dtype=np.float64), 0.0, 1.0)
        passed = np.asarray(self.preselector_.passes(X), dtype=bool)
        if passed.any():
            cnn = np.asarray(self.cnn_.predict_score(X[passed]), dtype=np.float64)
            scores[passed] = 0.5 + 0.5 * np.clip(cnn, 0.0, 1.0)
        return scores

    def diagnostics(self) -> dict[str, float]:
        """The fraction of training cutouts that reached the CNN, and the CNN's own
        diagnostics."""
        out = {"train_fraction_to_cnn": self.pass_fraction_}
        if hasattr(self.cnn_, "diagnostics"):
            out |= {f"cnn_{k}": v for k, v in self.cnn_.diagnostics().items()}
        return out
