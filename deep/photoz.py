"""NetZ-style photo-z CNN (Schuldt et al. 2021b; Pasquet et al. 2019) on simulated galaxy images
whose band fluxes are real catalogue photometry, optionally fused with catalogue features.

Inputs are the catalogue rows of the photoz suite (``X``: B magnitudes then B errors, bands
``info.bands``); the method paints each galaxy itself with
:func:`lensbench.datasets.photoz.render_photoz_images` (seeded by ``random_state`` and the rows,
so the same rows give the same images), so the images carry the catalogue's real colour-redshift
relation and their morphology carries none. Images are divided by each band's background sigma
and asinh-stretched. The net predicts a mean and a log variance of the standardised z and is
trained with the Gaussian negative log-likelihood (``predict_variance`` is its variance;
``predict_pdf`` that Gaussian on the shared grid ``baselines.photoz.PDF_GRID``, in z as the net
predicts it).

``NetZPhotoz`` is images only; ``NetZFusionPhotoz`` (``fuse_catalogue=True``) also feeds the
standardised magnitudes and colours (``baselines.photoz.PhotozFeatures``) into the head.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from lensbench.baselines.contract import Method
from lensbench.baselines.photoz import PhotozFeatures, gaussian_pdf, on_the_grid
from lensbench.baselines.transforms import dihedral
from lensbench.datasets.robust import mad_sigma
from lensbench.deep.progress import Progress
from torch import nn


@contextlib.contextmanager
def seeded(seed: int, num_threads: int | None = None):
    """torch seeded by ``seed`` (global RNG restored afterwards) with ``num_threads`` threads."""
    previous = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if num_threads:
            torch.set_num_threads(int(num_threads))
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def validation_sigma_nmad(z_phot: np.ndarray, z_spec: np.ndarray) -> float:
    """sigma_NMAD of dz = (z_phot - z_spec)/(1 + z_spec), for the nets' per-epoch validation
    (the harness scores runs with bench/photoz_metrics.py, which deep/ does not import)."""
    dz = (np.asarray(z_phot, dtype=np.float64) - z_spec) / (1 + z_spec)
    return float(mad_sigma(dz))


@dataclass(frozen=True)
class NetZConfig:
    in_bands: int = 4
    channels: tuple[int, ...] = (8, 16, 32)
    n_catalogue: int = 0  # catalogue features fused into the head (0: images only)
    hidden: int = 128
    dropout: float = 0.1


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.MaxPool2d(2))


class NetZ(nn.Module):
    """Conv blocks (2 x conv3x3 + BN + ReLU, max-pool) -> global average pool, concatenated
    with an MLP embedding of the catalogue features when ``n_catalogue`` > 0 -> (mean, log var)."""

    def __init__(self, config: NetZConfig):
        super().__init__()
        # how to build it again: a saved model rebuilds its network from this (persistence.py)
        self.build_spec = {"builder": "netz", "kwargs": asdict(config)}
        chans = (config.in_bands, *config.channels)
        self.features = nn.Sequential(*[_block(a, b) for a, b in zip(chans[:-1], chans[1:],
                                                                      strict=True)])
        width = chans[-1]
        self.catalogue = None
        if config.n_catalogue:
            self.catalogue = nn.Sequential(nn.Linear(config.n_catalogue, config.hidden),
                                           nn.ReLU(), nn.Linear(config.hidden, config.hidden),
                                           nn.ReLU())
            width += config.hidden
        self.head = nn.Sequential(nn.Linear(width, config.hidden), nn.ReLU(),
                                  nn.Dropout(config.dropout), nn.Linear(config.hidden, 2))

    def forward(self, images: torch.Tensor, catalogue: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(images).mean(dim=(2, 3))
        if self.catalogue is not None:
            h = torch.cat([h, self.catalogue(catalogue)], dim=1)
        out = self.head(h)
        return out[:, 0], out[:, 1].clamp(-12, 6)


def build_netz(**config) -> NetZ:
    """The NetZ of a saved ``build_spec``."""
    if "channels" in config:
        config["channels"] = tuple(config["channels"])
    return NetZ(NetZConfig(**config))


class NetZPhotoz(Method):
    """Photo-z CNN on images painted from the catalogue photometry (NetZ-like)."""

    kinds = ("photoz",)
    search_space = {
        "learning_rate": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
        "epochs": {"type": "int", "low": 4, "high": 30},
        "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True},
        "hidden": {"type": "int", "low": 32, "high": 256, "log": True},
    }

    def __init__(self, epochs: int = 10, batch_size: int = 256, learning_rate: float = 2e-3,
                 weight_decay: float = 1e-4, hidden: int = 128, channels: tuple = (8, 16, 32),
                 stamp_size: int = 16, fuse_catalogue: bool = False, num_threads: int = 2,
                 device: str = "cpu", random_state: int = 0):
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.hidden = hidden
        self.channels = channels
        self.stamp_size = stamp_size
        self.fuse_catalogue = fuse_catalogue
        self.num_threads = num_threads
        self.device = device
        self.random_state = random_state

    # ------------------------------------------------------------------ inputs
    def _image_config(self):
        """How this model paints its galaxies: as recorded at fit (``image_config_``, saved with
        the model, so that a model predicts on images painted as its training images were, when
        the defaults have changed since), else the current defaults at ``stamp_size``."""
        from lensbench.datasets.photoz import image_config_from

        if hasattr(self, "image_config_"):
            return image_config_from(self.image_config_, self.stamp_size,
                                     f"{type(self).__name__}.image_config_")
        if hasattr(self, "net_"):  # saved before the rendering was recorded
            warnings.warn(f"this {type(self).__name__} model does not record how its training "
                          "images were painted (saved before lensbench recorded it): its "
                          "galaxies are painted with today's defaults, whose Sersic cores are "
                          "integrated; a model trained before commit 7f07877 (2026-12-07) saw "
                          "sampled cores: refit it", stacklevel=3)
        return self._default_image_config()

    def check_restored_state(self, path) -> None:
        """A loaded model's recorded rendering, checked as it is read (persistence.py)."""
        from lensbench.datasets.photoz import image_config_from

        if hasattr(self, "image_config_"):
            image_config_from(self.image_config_, self.stamp_size, f"{path}: state.image_config_")

    def _default_image_config(self):
        from lensbench.datasets.photoz import ImageConfig

        return ImageConfig(stamp_size=int(self.stamp_size))

    def _images(self, X: np.ndarray) -> np.ndarray:
        """Painted, noise-normalised, asinh-stretched images of catalogue rows (n, B, S, S)."""
        from lensbench.datasets.photoz import image_noise_nanomaggies, render_photoz_images

        X = np.asarray(X, dtype=np.float64)
        digest = hashlib.sha256(np.ascontiguousarray(X).tobytes()).digest()
        seed = (int(self.random_state) * 1_000_003 + int.from_bytes(digest[:4], "little")) \
            % 2**31
        config = self._image_config()
        images, _ = render_photoz_images(X[:, :len(self.bands_)], self.bands_, seed, config)
        noise = image_noise_nanomaggies(config).astype(np.float32)[None, :, None, None]
        return np.arcsinh(images / noise).astype(np.float32)

    def _inputs(self, X):
        images = torch.as_tensor(self._images(X))
        catalogue = None
        if self.fuse_catalogue:
            catalogue = torch.as_tensor(self.features_.transform(X), dtype=torch.float32)
        return images, catalogue

    # ------------------------------------------------------------------ fit / predict
    def fit(self, X, y, info=None, validation=None, epoch_callback=None):
        from lensbench.datasets.photoz import BANDS

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.bands_ = tuple(info.bands) if info is not None else BANDS
        self.features_ = PhotozFeatures().fit(X)
        self.z_mean_, self.z_scale_ = float(y.mean()), float(y.std() + 1e-9)
        self.image_config_ = asdict(self._default_image_config())
        device = torch.device("cuda" if self.device == "auto" and torch.cuda.is_available()
                              else ("cpu" if self.device == "auto" else self.device))
        with seeded(self.random_state, self.num_threads):
            images, catalogue = self._inputs(X)
            target = torch.as_tensor((y - self.z_mean_) / self.z_scale_, dtype=torch.float32)
            val = None
            if validation is not None:
                val_images, val_catalogue = self._inputs(validation[0])
                val = (val_images, val_catalogue, np.asarray(validation[1], dtype=np.float64))
            config = NetZConfig(in_bands=images.shape[1], channels=tuple(self.channels),
                                n_catalogue=catalogue.shape[1] if catalogue is not None else 0,
                                hidden=int(self.hidden))
            self.config_ = config
            net = NetZ(config).to(device)
            optimizer = torch.optim.AdamW(net.parameters(), lr=self.learning_rate,
                                          weight_decay=self.weight_decay)
            steps = max(1, self.epochs * math.ceil(len(y) / self.batch_size))
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, self.learning_rate,
                                                           total_steps=steps)
            generator = torch.Generator().manual_seed(int(self.random_state))
            self.history_ = {"train_loss": []}
            best, best_state = math.inf, None
            with Progress(self.epochs, f"{type(self).__name__} training",
                          unit="epoch") as progress:
                for epoch in range(self.epochs):
                    net.train()
                    order = torch.randperm(len(y), generator=generator)
                    total = 0.0
                    for start in range(0, len(y), self.batch_size):
                        rows = order[start:start + self.batch_size]
                        flips = torch.randint(0, 8, (1,), generator=generator).item()
                        batch = dihedral(images[rows], flips).to(device)
                        cat = catalogue[rows].to(device) if catalogue is not None else None
                        mean, log_var = net(batch, cat)
                        loss = nn.functional.gaussian_nll_loss(mean, target[rows].to(device),
                                                               log_var.exp())
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                        schedule.step()
                        total += float(loss.detach()) * len(rows)
                        progress.alive(f"epoch {epoch + 1}: {start + len(rows)}/{len(y)} galaxies")
                    metrics = {"train_loss": total / len(y)}
                    self.history_["train_loss"].append(metrics["train_loss"])
                    if val is not None:
                        self.net_ = net
                        z_val = self._predict(val[0], val[1])[0]
                        metrics["val_sigma_nmad"] = validation_sigma_nmad(z_val, val[2])
                        self.history_.setdefault("val_sigma_nmad", []).append(
                            metrics["val_sigma_nmad"])
                        if metrics["val_sigma_nmad"] < best:
                            best = metrics["val_sigma_nmad"]
                            best_state = {k: v.detach().clone()
                                          for k, v in net.state_dict().items()}
                    progress.update(**metrics)
                    if epoch_callback is not None:
                        epoch_callback(epoch, metrics)
            if best_state is not None:  # the best epoch on the validation part
                net.load_state_dict(best_state)
        self.net_ = net.eval()
        return self

    @torch.no_grad()
    def _predict(self, images: torch.Tensor, catalogue: torch.Tensor | None
                 ) -> tuple[np.ndarray, np.ndarray]:
        net = self.net_.eval()
        device = next(net.parameters()).device
        means, variances = [], []
        for start in range(0, len(images), 1024):
            cat = catalogue[start:start + 1024].to(device) if catalogue is not None else None
            mean, log_var = net(images[start:start + 1024].to(device), cat)
            means.append(mean.cpu().numpy())
            variances.append(log_var.exp().cpu().numpy())
        mean = np.concatenate(means).astype(np.float64) * self.z_scale_ + self.z_mean_
        return mean, np.concatenate(variances).astype(np.float64) * self.z_scale_ ** 2

    def _predict_rows(self, X):
        with seeded(self.random_state, self.num_threads):
            return self._predict(*self._inputs(X))

    def predict(self, X):
        return on_the_grid(self._predict_rows(X)[0])

    def predict_score(self, X):
        return self.predict(X)

    def predict_variance(self, X):
        return self._predict_rows(X)[1]

    def predict_pdf(self, X):
        """p(z) on ``PDF_GRID``: the Gaussian of the predicted mean and variance."""
        return gaussian_pdf(*self._predict_rows(X))


class NetZFusionPhotoz(NetZPhotoz):
    """NetZ with the catalogue magnitudes and colours fused into the head."""

    def __init__(self, epochs: int = 10, batch_size: int = 256, learning_rate: float = 2e-3,
                 weight_decay: float = 1e-4, hidden: int = 128, channels: tuple = (8, 16, 32),
                 stamp_size: int = 16, fuse_catalogue: bool = True, num_threads: int = 2,
                 device: str = "cpu", random_state: int = 0):
        super().__init__(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                         weight_decay=weight_decay, hidden=hidden, channels=channels,
                         stamp_size=stamp_size, fuse_catalogue=fuse_catalogue,
                         num_threads=num_threads, device=device, random_state=random_state)
