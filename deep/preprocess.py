"""Image preprocessing and augmentation for the torch lens finders.

Inputs are sky-subtracted cutouts in nanomaggies, float32 arrays (n, bands, H, W).

* Masked pixels (the value 100 in the Metcalf et al. 2019 challenge data, or non-finite) -> 0.
* Per-band noise normalisation: sigma_b = 1.4826 MAD of the stamp-border pixels of the training
  set (robust to the lens galaxy and to bright neighbours), so pixels are in units of sky sigma.
* Optionally (``lens_light``) the lens light subtracted first: the arc finder's smooth
  elliptical model of the reddest band, scaled to each band (baselines/lenslight.py); with
  ``lens_light_keep_image`` the image itself is kept beside it (channels: the bands, then the
  bands minus the model).
* Stretch (after augmentation, so flux scaling acts on linear fluxes): "none", "sqrt"
  (sign(x) sqrt|x|, Canameras et al. 2020) or "asinh" (asinh(x / softening)).
* Augmentation (torch, on a batch): the 8 dihedral transforms (rotations by 90 deg and flips,
  Schaefer et al. 2018), sub-pixel shifts and zoom (bilinear resampling; DeepLens zooms by 0.9-1)
  and a log-normal flux scaling.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from lensbench.baselines.transforms import dihedral
from lensbench.datasets.robust import mad_sigma

MASK_VALUE = 100.0
STRETCHES = ("none", "sqrt", "asinh")


def centre_crop(X, size: int | None):
    """The central ``size`` x ``size`` pixels of (..., H, W) (all of it when size is None or
    larger than the image). A crop is centred only when H - size is even, so otherwise it is one
    pixel wider: a 64-pixel crop of a 101-pixel stamp is 65 pixels, and rotations and flips of the
    stamp then map the crop onto itself (an off-centre crop broke the committee's invariance)."""
    if size is None:
        return X
    h, w = X.shape[-2:]
    sh, sw = min(size + (h - size) % 2, h), min(size + (w - size) % 2, w)
    top, left = (h - sh) // 2, (w - sw) // 2
    return X[..., top: top + sh, left: left + sw]


def clean(X: np.ndarray, mask_value: float | None = MASK_VALUE) -> np.ndarray:
    """float32 copy with masked (== mask_value) and non-finite pixels set to 0."""
    X = np.array(X, dtype=np.float32, copy=True)
    bad = ~np.isfinite(X)
    if mask_value is not None:
        bad |= X == mask_value
    X[bad] = 0.0
    return X


def border_noise(X: np.ndarray, width: int = 3) -> np.ndarray:
    """Per-band robust sky sigma (1.4826 MAD) of the ``width``-pixel stamp borders, shape (B,)."""
    n, b = X.shape[:2]
    w = max(1, min(width, X.shape[-1] // 4, X.shape[-2] // 4))
    edge = np.concatenate([X[:, :, :w].reshape(n, b, -1), X[:, :, -w:].reshape(n, b, -1),
                           X[:, :, :, :w].reshape(n, b, -1), X[:, :, :, -w:].reshape(n, b, -1)],
                          axis=2).transpose(1, 0, 2).reshape(b, -1)
    sigma = mad_sigma(edge, axis=1)
    fallback = np.std(edge, axis=1)  # an all-zero border (e.g. fully masked) has MAD 0
    sigma = np.where(sigma > 0, sigma, fallback)
    return np.maximum(sigma, 1e-12).astype(np.float32)


@dataclass
class Preprocessor:
    """Linear part (mask, crop, noise normalisation) in numpy; the stretch in torch."""

    stretch: str = "asinh"
    softening: float = 3.0  # asinh softening, in units of sky sigma
    crop: int | None = None
    mask_value: float | None = MASK_VALUE
    noise: tuple[float, ...] | None = None  # learned per-band sky sigma (nanomaggies)
    # Lens light subtracted first (baselines/lenslight.py: the arc finder's elliptical model of
    # the reddest band, scaled to each band); it needs the bands and the pixel scale (arcsec).
    lens_light: bool = False
    bands: tuple[str, ...] | None = None
    pixel_scale: float | None = None
    # How the lens model's shape is measured (baselines/arcfinder.py: SHAPES); a checkpoint
    # without this field was fitted with "weighted".
    lens_light_shape: str = "weighted"
    # Keep the image as channels of its own beside the lens-subtracted ones: the model, a median
    # of annuli, takes most of an arc that covers much of the Einstein ring along with the lens
    # (docs/real-lenses.md, "Why VIS still falls short"), so a net that sees only the residual
    # cannot see a ring.
    lens_light_keep_image: bool = False
    # The lens model's profile (baselines/arcfinder.py: PROFILES); a checkpoint without this
    # field was fitted with "median".
    lens_light_profile: str = "median"

    def __post_init__(self):
        if self.stretch not in STRETCHES:
            raise ValueError(f"stretch must be one of {STRETCHES}, got {self.stretch!r}")
        if self.bands is not None:
            self.bands = tuple(self.bands)
        if self.lens_light and (self.bands is None or self.pixel_scale is None):
            raise ValueError("lens_light needs bands and pixel_scale")
        if self.lens_light_keep_image and not self.lens_light:
            raise ValueError("lens_light_keep_image needs lens_light")
        from lensbench.baselines.arcfinder import PROFILES, SHAPES

        if self.lens_light_shape not in SHAPES:
            raise ValueError(f"lens_light_shape must be one of {SHAPES}, got "
                             f"{self.lens_light_shape!r}")
        if self.lens_light_profile not in PROFILES:
            raise ValueError(f"lens_light_profile must be one of {PROFILES}, got "
                             f"{self.lens_light_profile!r}")

    def _cleaned(self, X: np.ndarray) -> np.ndarray:
        X = clean(X, self.mask_value)
        if not self.lens_light:
            return X
        from lensbench.baselines.lenslight import subtract_lens_light

        residual = subtract_lens_light(X, bands=self.bands, pixel_scale=self.pixel_scale,
                                       shape=self.lens_light_shape,
                                       profile=self.lens_light_profile)
        return np.concatenate([X, residual], axis=1) if self.lens_light_keep_image else residual

    @property
    def channels_per_band(self) -> int:
        """Channels the nets see for each band of the input images."""
        return 2 if self.lens_light_keep_image else 1

    def fit(self, X: np.ndarray) -> Preprocessor:
        self._fit_noise(self._cleaned(X))
        return self

    def _fit_noise(self, cleaned: np.ndarray) -> None:
        self.noise = tuple(float(s) for s in border_noise(cleaned))

    def fit_normalise(self, X: np.ndarray) -> np.ndarray:
        """``fit(X)`` then ``normalise(X)``, with the images cleaned (and their lens light
        modelled, the slow part) once instead of twice."""
        X = _as_stamps(X)
        cleaned = self._cleaned(X)
        self._fit_noise(cleaned)
        return self._scaled(centre_crop(cleaned, self.crop))

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        return X / np.asarray(self.noise, dtype=np.float32)[None, :, None, None]

    def normalise(self, X: np.ndarray) -> np.ndarray:
        """Masked pixels to 0, centre crop, divide by the per-band noise: float32 (n, B, h, w)."""
        if self.noise is None:
            raise RuntimeError("Preprocessor.fit must be called before normalise")
        X = _as_stamps(X, len(self.noise) // self.channels_per_band)
        if self.lens_light:  # the model is fitted to the whole stamp, then cropped
            return self._scaled(centre_crop(self._cleaned(X), self.crop))
        return self._scaled(clean(centre_crop(X, self.crop), self.mask_value))

    def apply_stretch(self, x: torch.Tensor) -> torch.Tensor:
        if self.stretch == "sqrt":
            return torch.sign(x) * torch.sqrt(torch.abs(x))
        if self.stretch == "asinh":
            return fast_asinh(x / self.softening)
        return x

    def state(self) -> dict:
        return asdict(self)


def lens_light_preprocessor(owner: str, info, **options) -> Preprocessor:
    """The Preprocessor of a net that subtracts the lens light (``lens_light=True``): the model
    needs the task's bands and pixel scale, from ``info`` (a TaskInfo); ``owner`` names the
    method in the error without one. ``options``: the Preprocessor's other fields."""
    if info is None:
        raise ValueError(f"{owner}(lens_light=True) needs the task's bands and pixel scale (a "
                         "TaskInfo) to model the lens light")
    return Preprocessor(lens_light=True, bands=tuple(info.bands),
                        pixel_scale=float(info.pixel_scale), **options)


def _as_stamps(X, bands: int | None = None) -> np.ndarray:
    """``X`` as an array (n, bands, H, W), else ValueError."""
    X = np.asarray(X)
    if X.ndim != 4 or (bands is not None and X.shape[1] != bands):
        raise ValueError(f"expected images (n, {bands or 'bands'}, H, W), got {X.shape}")
    return X


def fast_asinh(x: torch.Tensor) -> torch.Tensor:
    """asinh(x) = sign(x) log1p(a + a (a / (1 + hypot(1, a)))), a = |x|: exact to rounding, no
    overflow, and faster than torch.asinh on the CPU (measured: 12 vs 22 ms per 256x4x64x64
    batch), which was 15% of the default network's training and inference time."""
    a = x.abs()
    return torch.copysign(torch.log1p(a + a * (a / (1 + torch.hypot(torch.ones_like(a), a)))), x)


# --------------------------------------------------------------------------- dihedral group


# The transforms and their indices are ``lensbench.baselines.transforms``'s (one convention for
# every module); ``dihedral`` is imported from there.


def host_to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``: a CPU tensor (a batch, its random draws, its indices) goes to CUDA
    through pinned memory, without waiting; a plain copy (or a boolean mask) waits for every
    queued kernel, so a few per batch keep the host from running ahead of the GPU."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def dihedral_each(x: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """Image i of a batch (n, ...) through dihedral transform ``ks[i]`` (``ks`` on the CPU;
    row indices, not masks, so that nothing waits for the device)."""
    out = torch.empty_like(x)
    for k in ks.unique().tolist():
        rows = host_to(torch.nonzero(ks == k).squeeze(1), x.device)
        out.index_copy_(0, rows, dihedral(x.index_select(0, rows), k))
    return out


def random_dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of a batch (n, B, H, W) through its own random dihedral transform."""
    ks = torch.randint(0, 8, (len(x),), generator=generator)
    if x.shape[-1] != x.shape[-2]:  # non-square: only the transforms that keep the shape
        ks = ks % 2 * 2 + (ks >= 4) * 4
    return dihedral_each(x, ks)


@dataclass(frozen=True)
class Augment:
    """Random augmentation of a normalised batch (before the stretch)."""

    dihedral: bool = True
    shift: float = 0.5  # max sub-pixel shift, pixels (uniform in [-shift, shift] per axis)
    zoom: tuple[float, float] = (1.0, 1.0)  # zoom factor range (DeepLens: 0.9-1)
    flux_scale: float = 0.1  # sigma of the log-normal flux factor

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = len(x)
        if self.dihedral:
            x = random_dihedral(x, generator)
        lo, hi = self.zoom
        if self.shift > 0 or hi != 1.0 or lo != 1.0:
            h, w = x.shape[-2:]
            scale = lo + (hi - lo) * torch.rand(n, generator=generator)
            shift = (2 * torch.rand(n, 2, generator=generator) - 1) * self.shift
            theta = torch.zeros(n, 2, 3)
            # A zoom by z magnifies the image: sample the input on a grid shrunk by 1/z.
            theta[:, 0, 0] = 1.0 / scale
            theta[:, 1, 1] = 1.0 / scale
            theta[:, 0, 2] = shift[:, 0] * 2.0 / w  # pixels -> normalised [-1, 1] coordinates
            theta[:, 1, 2] = shift[:, 1] * 2.0 / h
            grid = F.affine_grid(host_to(theta, x.device), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False)
        if self.flux_scale > 0:
            factor = torch.exp(self.flux_scale * torch.randn(n, generator=generator))
            x = x * host_to(factor, x.device)[:, None, None, None]
        return x
