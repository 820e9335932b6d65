"""The one robust noise estimate of lensbench: a Gaussian sigma from the median absolute deviation.

Sky noise from stamp borders (the finders' normalisation, the degraded real images, the gallery
stretch), the spread of simulated lenses in the real-lens diagnosis and photo-z sigma_NMAD all
use it, with the field's rounded constant 1.4826 (docs/references.md: sigma_NMAD = 1.4826
median |dz - median dz|). Not ``astropy.stats.mad_std``: its exact 1/Phi^-1(3/4) = 1.482602...
would move the real-lens splits' bytes (their HST sky noise) and every normalised input by 1.5e-6,
and the GPU machine of ``bench perf gpu`` has no astropy, while deep/ normalises by this estimate
there.
"""

from __future__ import annotations

import numpy as np

NMAD_SCALE = 1.4826  # 1 / Phi^-1(3/4), rounded as the photo-z literature does


def mad_sigma(values, axis=None):
    """``NMAD_SCALE`` x median(|values - median(values)|) along ``axis`` (None: all values), in
    the dtype numpy gives the median (float32 stays float32). An array, or a numpy scalar for
    ``axis=None``."""
    values = np.asarray(values)
    deviation = np.abs(values - np.median(values, axis=axis, keepdims=True))
    return NMAD_SCALE * np.median(deviation, axis=axis)
