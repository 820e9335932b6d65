"""How much of a SLACS lens's halo its cutout border's median took for sky (issue 22, cause 10).

    python scripts/slacs_sky.py [--n 2000]

For each SLACS lens of the data registry (needs LENSBENCH_DATA_DIR) prints, in HST sigma per
0.05" pixel (the border's robust noise): the border's median (the sky before real-hsc v9 and
real-vis v8), the sky fitted beside the lens's de Vaucouleurs halo
(``known_lenses.sky_level_beside_halo``), the halo at the border, the fit's rms residual, and
what the difference of the two skies is per survey pixel in VIS and HSC i sky sigma. Then the
median of the pixels beyond 4.5" of the real-vis cutouts, with each sky, against that of
``--n`` simulated real-vis lenses (VIS brighter than 18, as bright as the SLACS lenses), in
VIS sky sigma.
"""

from __future__ import annotations

import argparse

import numpy as np
from astropy.io import fits
from lensbench.bench.suites.real_diagnosis import survey_sigma
from lensbench.bench.tasks import all_tasks
from lensbench.datasets import known_lenses, registry
from lensbench.datasets.degrade import border_noise, degrade_image
from lensbench.datasets.simulate import Simulator
from lensbench.datasets.surveys import get_survey

OUTER = 4.5  # arcsec: beyond it a 10" cutout's pixels are the lens's outskirts
BRIGHT = 18.0  # VIS: simulated lenses as bright as the SLACS lenses (VIS 16.8-17.6)


def sky_sigma(survey: str, band: str) -> float:
    chosen = get_survey(survey).select([band])
    return float(survey_sigma(chosen, np.zeros((1, 1, 1, 1))).ravel()[0]), chosen.pixel_scale


def outer_median(image: np.ndarray, pixel_scale: float) -> float:
    size = image.shape[-1]
    radius = np.hypot(*np.mgrid[:size, :size] - (size - 1) / 2) * pixel_scale
    return float(np.median(image[..., radius > OUTER]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    params = known_lenses.slacs_parameters()
    sigma_vis, scale_vis = sky_sigma("euclid-vis", "VIS")
    sigma_i, scale_i = sky_sigma("hsc", "i")
    task = all_tasks()["real-vis"]
    spec = task.real_lenses
    psf = known_lenses.native_psf_args(spec["match_native_psf"])
    print("| lens | R_e (\") | border median | fitted sky | halo at border | fit rms | "
          "difference, VIS sky sigma | difference, HSC i sky sigma | outskirts before | "
          "outskirts now |")
    print("|---" * 10 + "|")
    for border_sky_lens, fitted_lens in zip(known_lenses.load_slacs(clean_cosmic_rays=True),
                                            known_lenses.load_slacs(clean_cosmic_rays=True,
                                                                    sky_beside_halo=True),
                                            strict=True):
        name, scale = fitted_lens.name, fitted_lens.pixel_scale
        wide = fits.getdata(registry.fetch(f"{known_lenses.SLACS_DIR}/198x198/{name}.fits"),
                            "SCI").astype(np.float64)
        border, sigma, _ = border_noise(wide)
        r_eff = params[name]["r_eff"]
        to_nmgy = 10 ** (-0.4 * (fitted_lens.zeropoint_ab - 22.5))
        fit = known_lenses.fit_sky_beside_halo_profile(wide, scale, r_eff)
        fitted = fit.sky  # what load_slacs(sky_beside_halo=True) subtracts
        size = wide.shape[0]
        radius = np.hypot(*np.mgrid[:size, :size] - (size - 1) / 2) * scale
        edge = np.zeros_like(wide, dtype=bool)
        edge[:12], edge[-12:], edge[:, :12], edge[:, -12:] = True, True, True, True
        halo_at_border = fit.halo_amplitude * float(
            np.median(known_lenses.de_vaucouleurs_shape(radius[edge], r_eff)))
        difference = (border - fitted) * to_nmgy  # nMgy per HST pixel
        in_vis = difference * (scale_vis / scale) ** 2 / sigma_vis
        in_i = difference * (scale_i / scale) ** 2 / sigma_i
        outskirts = []
        for lens in (border_sky_lens, fitted_lens):
            planes = lens.image[None]
            image = degrade_image(planes, scale, "euclid-vis", bands=["VIS"],
                                  stamp_size=spec["stamp_size"], **psf)  # no noise
            outskirts.append(outer_median(image, scale_vis) / sigma_vis)
        print(f"| {name} | {r_eff:.2f} | {border / sigma:.2f} | {fitted / sigma:.2f} | "
              f"{halo_at_border / sigma:.2f} | {fit.rms / sigma:.2f} | {in_vis:.1f} | {in_i:.1f} | "
              f"{outskirts[0]:.2f} | {outskirts[1]:.2f} |")
    config = task.config.replace(lens_fraction=1.0, field_density=0.0)
    images, truth = Simulator(config).simulate(args.n, seed=10)
    bright = truth["lens_mag_VIS"] < BRIGHT
    medians = [outer_median(images[k, 0], scale_vis) / sigma_vis for k in np.flatnonzero(bright)]
    print(f"{int(bright.sum())} simulated {task.name} lenses brighter than VIS {BRIGHT:g} (no "
          f"field galaxies): median of the pixels beyond {OUTER:g}\" "
          f"{np.percentile(medians, 10):.2f} / {np.median(medians):.2f} / "
          f"{np.percentile(medians, 90):.2f} VIS sky sigma (10th / 50th / 90th percentile)")


if __name__ == "__main__":
    main()
