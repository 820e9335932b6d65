"""PSF kernels for the simulator, the photo-z images, the real-lens degradation and the
traditional fitter: analytic (Moffat, Gaussian) or read from FITS. numpy and astropy only, so the
fitter (an optional extra run beside lenstronomy) does not import torch through them."""

from __future__ import annotations

import math

import numpy as np


def psf_kernel(model: str, fwhm: float, pixel_scale: float, beta: float | None = None,
               oversample: int = 5) -> np.ndarray:
    """A normalised, pixel-integrated PSF kernel (odd size, about +-3 FWHM).

    model "moffat": I ~ (1 + (r/a)^2)^-beta with FWHM = 2 a sqrt(2^(1/beta) - 1);
    "gaussian": sigma = FWHM / (2 sqrt(2 ln 2)). Integrated over each pixel by ``oversample``^2
    sub-samples, so a point source's pixel values sum to its flux."""
    half = max(3, math.ceil(3.0 * fwhm / pixel_scale))
    offsets = (np.arange(oversample) + 0.5) / oversample - 0.5
    axis = (np.arange(-half, half + 1)[:, None] + offsets[None, :]).ravel() * pixel_scale
    r2 = axis[:, None] ** 2 + axis[None, :] ** 2
    if model == "gaussian":
        sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        fine = np.exp(-0.5 * r2 / sigma**2)
    elif model == "moffat":
        beta = 4.765 if beta is None else beta
        core = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
        fine = (1.0 + r2 / core**2) ** (-beta)
    else:
        raise ValueError(f"unknown analytic PSF model {model!r}; expected 'moffat' or 'gaussian'")
    size = 2 * half + 1
    kernel = fine.reshape(size, oversample, size, oversample).sum(axis=(1, 3))
    return kernel / kernel.sum()


def read_psf_file(path: str, bands: tuple[str, ...]) -> list[np.ndarray]:
    """Pixelised PSF kernels from FITS: one image HDU for all bands, or one per band in order.
    Each must be 2-D, odd-sized, with a positive sum; it is normalised to unit sum."""
    from astropy.io import fits

    try:
        with fits.open(path) as hdul:
            arrays = [np.asarray(h.data, dtype=np.float64) for h in hdul
                      if h.data is not None and np.ndim(h.data) == 2]
    except FileNotFoundError:
        raise ValueError(f"SimConfig.psf_file {path}: no such file") from None
    except OSError as error:  # astropy's word for a file that is not FITS
        raise ValueError(f"SimConfig.psf_file {path}: not a FITS file ({error})") from None
    if len(arrays) not in (1, len(bands)):
        raise ValueError(f"{path}: expected 1 PSF image or {len(bands)} (one per band "
                         f"{list(bands)}), found {len(arrays)} 2-D image HDUs")
    kernels = []
    for index, array in enumerate(arrays):
        if (array.shape[0] % 2 == 0 or array.shape[1] % 2 == 0
                or not np.isfinite(array).all() or array.sum() <= 0):
            raise ValueError(f"{path}: PSF HDU {index} must be odd-sized, finite, with a "
                             f"positive sum, got shape {array.shape}, "
                             f"{np.count_nonzero(~np.isfinite(array))} non-finite pixel(s) "
                             f"and sum {np.nansum(array):.3g}")
        kernels.append(array / array.sum())
    return kernels * len(bands) if len(kernels) == 1 else kernels
