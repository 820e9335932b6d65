"""How much the HST PSF widens a degraded image, and what matching it gives (issue 22).

    python scripts/psf_matching.py [--survey euclid-vis hsc]

renders TinyTim's ACS/WFC F814W PSF (the PSF of the SLACS and COSMOS images, from the data
registry; needs LENSBENCH_DATA_DIR) as a point source through ``datasets.degrade.degrade_image``
in every band of each survey, once blurred by the survey's PSF on top of its own (real-vis before
v7, real-hsc before v8) and once matched to it (``native_psf``), and prints for each the rms
radius and the peak against the survey's own PSF (the simulator's kernel), noise-free.
"""

from __future__ import annotations

import argparse

import numpy as np
from lensbench.datasets.degrade import degrade_image, survey_psf_kernels
from lensbench.datasets.known_lenses import ACS_F814W_PSF_SCALE, acs_f814w_psf
from lensbench.datasets.surveys import get_survey


def rms_radius(image: np.ndarray, scale: float) -> float:
    """Root-mean-square distance of the light from the stamp centre, arcsec."""
    n = image.shape[-1]
    r2 = np.sum((np.indices(image.shape) - (n - 1) / 2) ** 2, axis=0) * scale**2
    return float(np.sqrt(np.sum(image * r2) / np.sum(image)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--survey", nargs="+", default=["euclid-vis", "hsc"])
    args = parser.parse_args()
    psf = acs_f814w_psf()
    for name in args.survey:
        survey = get_survey(name)
        for band, kernel in zip(survey.bands, survey_psf_kernels(survey), strict=True):
            one = survey.select([band.name])
            size = kernel.shape[0] + 2
            doubled, matched = (
                degrade_image(psf, ACS_F814W_PSF_SCALE, one, stamp_size=size, native_psf=native,
                              native_psf_scale=ACS_F814W_PSF_SCALE)[0]
                for native in (None, psf))
            target = np.zeros((size, size))
            target[1:-1, 1:-1] = kernel / kernel.sum()
            scale, peak = band.pixel_scale, target.max()
            print(f"{name} {band.name}: rms radius survey PSF {rms_radius(target, scale):.3f}\", "
                  f"blurred twice {rms_radius(doubled, scale):.3f}\" (peak "
                  f"{doubled.max() / peak - 1:+.0%}), matched {rms_radius(matched, scale):.3f}\" "
                  f"(peak {matched.max() / peak - 1:+.0%})")


if __name__ == "__main__":
    main()
