"""Lens-light subtraction as a preprocessing step (numpy): the arc finder's lens model, made in
its red band and scaled into every band, is subtracted from every band.

The model (:func:`lensbench.baselines.arcfinder.elliptical_model`) is a smooth elliptical profile
of the red band (i when present, HSC's deepest band, else the reddest; as the arc finder chooses
it): centre and shape from Gaussian-weighted moments (or adaptive ones), radial profile from
elliptical-annulus medians, so arcs covering a minority of an annulus barely enter it. Each
other band gets the model times its colour: the least-squares amplitude of the red image in that
band inside ``fit_radius`` of the centre (:func:`~lensbench.baselines.arcfinder.model_amplitude`),
where the lens dominates and arcs are rare. Against the red image rather than the model, so the
colour does not depend on how well the smooth model fits the core; the red band's amplitude is 1.
What remains is arcs, neighbours and noise, as in the residual images of YattaLens (Sonnenfeld et
al. 2018).
"""

from __future__ import annotations

import numpy as np
from lensbench.baselines.arcfinder import CHUNK, elliptical_model, model_amplitude
from lensbench.baselines.features import band_names, blue_red_indices


def subtract_lens_light(X, bands=None, pixel_scale: float = 0.168, fit_radius: float = 0.5,
                        shape: str = "weighted", profile: str = "median") -> np.ndarray:
    """``X`` (n, B, H, W) in any flux unit minus its lens model in every band: float32, same
    shape. ``bands`` names the bands (blue to red when None); ``pixel_scale`` in arcsec/px;
    ``fit_radius`` in arcsec (at least 1.5 px) bounds the pixels that set each band's amplitude;
    ``shape``: how the model's centre, axis ratio and angle are measured (``elliptical_model``:
    the arc finder's round-"weighted" moments, or "adaptive" ones); ``profile``: its annulus
    medians or "sersic-clipped" ones (``elliptical_model``)."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 4:
        raise ValueError(f"expected images of shape (n, bands, H, W), got {X.shape}")
    red = blue_red_indices(band_names(bands, X.shape[1]))[1]
    out = np.empty_like(X)
    for start in range(0, len(X), CHUNK):
        block = X[start: start + CHUNK]
        model, x, y = elliptical_model(block[:, red], pixel_scale, shape, profile)
        inner = (np.hypot(x, y) <= max(fit_radius / pixel_scale, 1.5)).reshape(len(block), -1)
        for b in range(X.shape[1]):
            amplitude = 1.0 if b == red else model_amplitude(block[:, b], block[:, red], inner)[
                :, None, None]
            out[start: start + len(block), b] = block[:, b] - amplitude * model
    return out
