"""Autoencoder features + Gaussian mixtures, after Cheng et al. 2020 (MNRAS 494, 3750).

A convolutional autoencoder is trained (the shared loop, reconstruction loss) on all training
cutouts without their labels; its latent vectors are standardised and then

* ``ae-bgmm`` (:class:`AutoencoderBGMM`): clustered with a Bayesian Gaussian mixture; each
  cluster is labelled by the (smoothed) fraction of lenses among the training cutouts it holds,
  and a cutout's score is the responsibility-weighted lens fraction of its clusters;
* ``ae-outlier`` (:class:`AutoencoderOutlier`): a mixture fitted to the latents of non-lenses
  only; the score is the negative log-likelihood, mapped monotonically into (0, 1) (an
  unsupervised anomaly score: lenses are what non-lenses do not look like).
"""

from __future__ import annotations

import numpy as np
from lensbench.baselines.contract import Method, TaskInfo
from lensbench.deep.methods import _member_callback, as_images
from lensbench.deep.nets import build_net
from lensbench.deep.preprocess import Augment, Preprocessor
from lensbench.deep.train import (
    Reconstruction,
    TrainConfig,
    deterministic,
    resolve_device,
    stratified_split,
    train_net,
)
from sklearn.mixture import BayesianGaussianMixture


class _AutoencoderMethod(Method):
    """Fits the autoencoder and the latent standardisation; subclasses fit the mixture."""

    search_space = {
        "latent": {"type": "int", "low": 4, "high": 32},
        "n_components": {"type": "int", "low": 2, "high": 30},
        "lr": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
    }

    def __init__(self, latent: int = 16, width: int = 16, n_components: int = 10,
                 covariance_type: str = "full", crop: int | None = 64, stretch: str = "asinh",
                 max_epochs: int = 20, batch_size: int = 64, lr: float = 3e-3,
                 patience: int | None = 5, validation_fraction: float = 0.15,
                 device: str = "auto", num_threads: int | None = None, random_state: int = 0):
        self.latent = latent
        self.width = width
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.crop = crop
        self.stretch = stretch
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.device = device
        self.num_threads = num_threads
        self.random_state = random_state

    def fit(self, X, y, info: TaskInfo | None = None, epoch_callback=None):
        X = as_images(X)
        y = np.asarray(y).astype(int).ravel()
        self.preprocessor_ = Preprocessor(stretch=self.stretch, crop=self.crop)
        Xn = self.preprocessor_.fit_normalise(X)
        train_idx, val_idx = stratified_split(y, float(self.validation_fraction),
                                              int(self.random_state))
        cfg = TrainConfig(max_epochs=int(self.max_epochs), batch_size=int(self.batch_size),
                          lr=float(self.lr), patience=self.patience,
                          augment=Augment(shift=0.0, flux_scale=0.0), device=self.device,
                          num_threads=self.num_threads)
        self.history_: dict[str, list[float]] = {}
        with deterministic(int(self.random_state), self.num_threads):
            self.net_ = build_net("autoencoder", X.shape[1], width=int(self.width),
                                  latent=int(self.latent))
            result = train_net(self.net_, Xn[train_idx], y[train_idx], Xn[val_idx], y[val_idx],
                               self.preprocessor_, cfg, seed=int(self.random_state),
                               objective=Reconstruction(),
                               epoch_callback=_member_callback(self.history_, epoch_callback,
                                                               0, 0),
                               label=f"{type(self).__name__} training")
        self.best_epoch_ = result.best_epoch
        z = self._raw_latents(Xn)
        self.latent_mean_ = z.mean(axis=0)
        self.latent_scale_ = np.maximum(z.std(axis=0), 1e-6)
        self._fit_mixture((z - self.latent_mean_) / self.latent_scale_, y)
        return self

    def _raw_latents(self, Xn: np.ndarray) -> np.ndarray:
        import torch

        device = resolve_device(self.device)
        self.net_.to(device).eval()
        out = []
        with deterministic(0, self.num_threads), torch.no_grad():
            for start in range(0, len(Xn), 512):
                x = torch.from_numpy(np.ascontiguousarray(Xn[start:start + 512])).to(device)
                out.append(self.net_.encode(self.preprocessor_.apply_stretch(x)).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, int(self.latent)))

    def latents(self, X) -> np.ndarray:
        """Standardised latent vectors (n, latent) of images X."""
        z = self._raw_latents(self.preprocessor_.normalise(as_images(X)))
        return (z - self.latent_mean_) / self.latent_scale_

    def _mixture(self, n_samples: int) -> BayesianGaussianMixture:
        return BayesianGaussianMixture(
            n_components=max(1, min(int(self.n_components), n_samples)),
            covariance_type=self.covariance_type, reg_covar=1e-3, max_iter=500,
            random_state=int(self.random_state))

    def _fit_mixture(self, z: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError


class AutoencoderBGMM(_AutoencoderMethod):
    """Cheng et al. 2020: autoencoder latents clustered by a Bayesian Gaussian mixture, clusters
    labelled by their fraction of training lenses (Beta(1, 1)-smoothed towards the global
    fraction); score = sum_k P(k | x) f_k."""

    def _fit_mixture(self, z, y):
        self.mixture_ = self._mixture(len(z)).fit(z)
        resp = self.mixture_.predict_proba(z)
        prior = float(np.mean(y)) if len(y) else 0.5
        self.cluster_lens_fraction_ = (resp.T @ y + prior) / (resp.sum(axis=0) + 1.0)

    def predict_score(self, X) -> np.ndarray:
        X = as_images(X)
        if len(X) == 0:
            return np.zeros(0)
        return np.clip(self.mixture_.predict_proba(self.latents(X)) @ self.cluster_lens_fraction_,
                       0.0, 1.0)


class AutoencoderOutlier(_AutoencoderMethod):
    """Unsupervised anomaly score: the negative log-likelihood of a cutout's latent vector under a
    Bayesian Gaussian mixture of the non-lens latents, mapped into (0, 1) by
    0.5 + arctan((nll - median) / IQR) / pi of the training non-lenses (monotone, no ties)."""

    def _fit_mixture(self, z, y):
        negatives = z[y == 0] if np.any(y == 0) else z
        self.mixture_ = self._mixture(len(negatives)).fit(negatives)
        nll = -self.mixture_.score_samples(negatives)
        q25, q50, q75 = np.percentile(nll, [25, 50, 75])
        self.nll_median_ = float(q50)
        self.nll_scale_ = float(max(q75 - q25, 1e-6))

    def anomaly(self, X) -> np.ndarray:
        """Negative log-likelihood under the non-lens mixture (higher: more anomalous)."""
        return -self.mixture_.score_samples(self.latents(X))

    def predict_score(self, X) -> np.ndarray:
        X = as_images(X)
        if len(X) == 0:
            return np.zeros(0)
        z = (self.anomaly(X) - self.nll_median_) / self.nll_scale_
        return 0.5 + np.arctan(z) / np.pi
