"""Hand-made features of lens-candidate cutouts for the classical baselines (no torch).

- Catalogue photometry, the first step of Cañameras et al. (2020): aperture fluxes in every band
  in radii 1.04", 1.76", 3.00", 4.64" about the stamp centre, as asinh magnitudes (Lupton et al.
  1999; robust to negative fluxes), colours of adjacent bands in every aperture, and radial
  gradients (ring minus central aperture) of each band's magnitude and of each colour.
- Shape: Gaussian-weighted second moments per band (centroid offset, ellipticity e1/e2, size) and
  the 180-degree rotational asymmetry.
- Texture: responses of zero-mean even Gabor kernels (scikit-image ``gabor_kernel``), steered into
  the radial and tangential directions about the centre and averaged in annuli. A tangential arc is
  a ridge whose cross-section runs radially, so it lights up the radial wave vectors; a smooth
  elliptical galaxy does not. Computed on the stretched S/N coadd and, with two or more bands, on a
  blue-minus-scaled-red difference image that cancels most of the red lens light.

Everything is vectorised over cutouts: each per-pixel weighting (apertures, moments, annuli) is a
matrix computed once per image geometry and applied to all cutouts by one matrix product.
Images are (n, bands, H, W) in nanomaggies (1 nMgy = AB 22.5), sky-subtracted; pixel centres sit
at integer coordinates and the stamp centre at ((W-1)/2, (H-1)/2), as in photutils.

Throughput benchmark: ``python -m lensbench.baselines.features`` (cutouts per second).
"""

from __future__ import annotations

import math
import time
from functools import lru_cache

import numpy as np
from lensbench.datasets.robust import mad_sigma
from skimage.filters import gabor_kernel

APERTURE_RADII_ARCSEC = (1.04, 1.76, 3.00, 4.64)  # Cañameras et al. (2020)
DEFAULT_PIXEL_SCALE = 0.2  # arcsec / pixel, when a method gets no TaskInfo
NANOMAGGY_ZEROPOINT = 22.5
# Effective wavelengths (nm), only to order bands from blue to red.
BAND_WAVELENGTH_NM = {"u": 355.0, "g": 475.0, "r": 620.0, "i": 770.0, "z": 900.0, "y": 1000.0,
                      "Y": 1000.0, "VIS": 715.0}
GABOR_WAVELENGTHS_ARCSEC = (0.8, 1.6)
GABOR_ORIENTATIONS = 4
TEXTURE_ANNULI_ARCSEC = ((0.5, 1.5), (1.5, 3.0), (3.0, 5.0))
MOMENT_WINDOW_ARCSEC = 1.5  # sigma of the Gaussian weight of the second moments
FEATURE_CHUNK = 512  # cutouts per block: bounds the temporaries of the FFTs
_TINY = 1e-6  # nMgy: floor of noise estimates (noiseless simulations)


# --------------------------------------------------------------------------- bands and noise

def band_names(bands, n_bands: int) -> tuple[str, ...]:
    """The band names, or positional names ``b0, b1, ...`` (taken as ordered blue to red)."""
    if bands is None:
        return tuple(f"b{k}" for k in range(n_bands))
    bands = tuple(bands)
    if len(bands) != n_bands:
        raise ValueError(f"{len(bands)} band names for images with {n_bands} bands")
    return bands


def wavelength_order(bands) -> list[int]:
    """Band indices from blue to red by wavelength; positional order if any name is unknown."""
    if not all(band in BAND_WAVELENGTH_NM for band in bands):
        return list(range(len(bands)))
    return sorted(range(len(bands)), key=lambda k: (BAND_WAVELENGTH_NM[bands[k]], k))


def blue_red_indices(bands) -> tuple[int, int]:
    """(blue, red) band indices for colour cuts: g and i when present (Sonnenfeld et al. 2018),
    else the bluest and the reddest band. Equal for a single band."""
    order = wavelength_order(bands)
    blue = bands.index("g") if "g" in bands else order[0]
    red = bands.index("i") if "i" in bands else order[-1]
    if blue == red and len(bands) > 1:
        blue, red = order[0], order[-1]
    return blue, red


def border_noise(X: np.ndarray, width: int = 2) -> np.ndarray:
    """Robust per-cutout, per-band sky sigma (1.4826 MAD of the ``width``-pixel frame): (n, B)."""
    X = np.asarray(X, dtype=np.float32)
    h, w = X.shape[-2:]
    width = max(1, min(width, h // 4, w // 4))
    frame = np.concatenate([X[..., :width, :].reshape(*X.shape[:2], -1),
                            X[..., -width:, :].reshape(*X.shape[:2], -1),
                            X[..., width:-width, :width].reshape(*X.shape[:2], -1),
                            X[..., width:-width, -width:].reshape(*X.shape[:2], -1)], axis=2)
    return np.maximum(mad_sigma(frame, axis=2), _TINY)


def asinh_magnitude(flux, softening) -> np.ndarray:
    """Lupton et al. (1999) asinh magnitude of a flux in nMgy with softening ``b`` (nMgy).

    Equals 22.5 - 2.5 log10(flux) for flux >> b, stays finite and monotone for flux <= 0."""
    b = np.maximum(np.asarray(softening, dtype=np.float64), _TINY)
    flux = np.asarray(flux, dtype=np.float64)
    return NANOMAGGY_ZEROPOINT - 2.5 / math.log(10.0) * (np.arcsinh(flux / (2.0 * b)) + np.log(b))


# --------------------------------------------------------------------------- geometry (cached)

def _grid(shape: tuple[int, int]):
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    return xx - (w - 1) / 2.0, yy - (h - 1) / 2.0


@lru_cache(maxsize=32)
def aperture_matrix(shape: tuple[int, int], radii_px: tuple[float, ...]) -> np.ndarray:
    """(R, H*W) exact pixel-overlap fractions of circular apertures centred on the stamp.

    Fast path of ``photutils.aperture.aperture_photometry``: the overlap masks come from photutils
    itself (``CircularAperture.to_mask(method="exact")``) once per geometry, and fluxes of all
    cutouts are then one matrix product, identical to aperture_photometry(method="exact")."""
    # Imported here: the lens-light model (arcfinder), which the deep methods import, lives
    # beside these features, and a GPU machine without photutils must still train them.
    from photutils.aperture import CircularAperture

    h, w = shape
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    rows = [CircularAperture(centre, r=float(r)).to_mask(method="exact").to_image((h, w))
            for r in radii_px]
    return np.stack([np.zeros((h, w)) if row is None else row for row in rows]).reshape(
        len(radii_px), h * w).astype(np.float32)


@lru_cache(maxsize=32)
def moment_matrix(shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """(6, H*W) Gaussian-weighted monomials 1, x, y, x^2, y^2, xy about the stamp centre."""
    x, y = _grid(shape)
    weight = np.exp(-0.5 * (x ** 2 + y ** 2) / sigma_px ** 2)
    return np.stack([weight, weight * x, weight * y, weight * x * x, weight * y * y,
                     weight * x * y]).reshape(6, -1).astype(np.float32)


@lru_cache(maxsize=32)
def annulus_matrix(shape: tuple[int, int], edges_px: tuple[tuple[float, float], ...]
                   ) -> np.ndarray:
    """(A, H*W) mean-over-annulus weights (rows sum to 1; an empty annulus is all zeros)."""
    x, y = _grid(shape)
    r = np.hypot(x, y).ravel()
    rows = []
    for lo, hi in edges_px:
        inside = ((r >= lo) & (r < hi)).astype(np.float64)
        rows.append(inside / max(inside.sum(), 1.0))
    return np.stack(rows).astype(np.float32)


@lru_cache(maxsize=32)
def _gabor_bank(shape: tuple[int, int], wavelengths_px: tuple[float, ...], n_orient: int):
    """rfft2 of zero-mean even Gabor kernels, (F, O, H, W//2+1), centred for 'same' output
    (circular boundary), and the steering weights cos^2 / sin^2 (theta - phi): (O, H*W) each."""
    h, w = shape
    x, y = _grid(shape)
    phi = np.arctan2(y, x).ravel()
    thetas = np.arange(n_orient) * np.pi / n_orient
    bank = np.zeros((len(wavelengths_px), n_orient, h, w // 2 + 1), dtype=np.complex64)
    for f, wavelength in enumerate(wavelengths_px):
        for o, theta in enumerate(thetas):
            kernel = np.real(gabor_kernel(1.0 / wavelength, theta=theta))
            kernel = kernel - kernel.mean()  # zero DC: no response to a flat background
            kernel /= np.abs(kernel).sum()
            kh, kw = kernel.shape
            kernel = kernel[max(0, kh // 2 - h // 2): kh // 2 + (h + 1) // 2,
                            max(0, kw // 2 - w // 2): kw // 2 + (w + 1) // 2]
            kh, kw = kernel.shape
            padded = np.zeros((h, w))
            padded[:kh, :kw] = kernel
            padded = np.roll(padded, (-(kh // 2), -(kw // 2)), axis=(0, 1))
            bank[f, o] = np.fft.rfft2(padded)
    # With n_orient >= 3, sum_o cos^2(theta_o - phi) = n_orient / 2: normalise to weights.
    radial = (np.cos(thetas[:, None] - phi[None]) ** 2) * (2.0 / n_orient)
    tangential = (np.sin(thetas[:, None] - phi[None]) ** 2) * (2.0 / n_orient)
    return bank, radial.astype(np.float32), tangential.astype(np.float32)


# --------------------------------------------------------------------------- features

def aperture_fluxes(X, pixel_scale: float = DEFAULT_PIXEL_SCALE,
                    radii_arcsec=APERTURE_RADII_ARCSEC) -> np.ndarray:
    """Fluxes (n, B, R) in nMgy in circular apertures of ``radii_arcsec`` about the centre."""
    X = np.asarray(X, dtype=np.float32)
    n, b, h, w = X.shape
    matrix = aperture_matrix((h, w), tuple(float(r) / pixel_scale for r in radii_arcsec))
    return (X.reshape(n * b, h * w) @ matrix.T).reshape(n, b, len(radii_arcsec))


def catalogue_features(X, pixel_scale: float = DEFAULT_PIXEL_SCALE, bands=None,
                       noise: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Cañameras et al. (2020) step-1 photometry: (features (n, F) float32, names).

    Per band: asinh magnitudes in the 4 apertures and in the 3 rings between them, and the radial
    gradients ring - central aperture. Per pair of adjacent bands (blue to red): the colour in each
    aperture and the colour gradients (ring colour - central colour). Softening of each asinh
    magnitude: the aperture's (ring's) sky noise, sigma_pixel sqrt(area)."""
    X = np.asarray(X, dtype=np.float32)
    n, nb, h, w = X.shape
    names_b = band_names(bands, nb)
    order = wavelength_order(names_b)
    radii_px = tuple(float(r) / pixel_scale for r in APERTURE_RADII_ARCSEC)
    matrix = aperture_matrix((h, w), radii_px)
    area = matrix.sum(axis=1).astype(np.float64)  # pixels in each aperture
    flux = (X.reshape(n * nb, h * w) @ matrix.T).reshape(n, nb, -1).astype(np.float64)
    sigma = border_noise(X) if noise is None else np.maximum(noise, _TINY)
    sigma = sigma.astype(np.float64)[:, :, None]
    ring_flux = np.diff(flux, axis=2)
    ring_area = np.maximum(np.diff(area), 1.0)
    mag = asinh_magnitude(flux, sigma * np.sqrt(np.maximum(area, 1.0)))
    ring_mag = asinh_magnitude(ring_flux, sigma * np.sqrt(ring_area))
    radii = [f"{r:.2f}" for r in APERTURE_RADII_ARCSEC]
    rings = [f"{a}-{b}" for a, b in zip(radii[:-1], radii[1:], strict=True)]
    columns, names = [], []
    for k in order:
        band = names_b[k]
        columns += [mag[:, k], ring_mag[:, k], ring_mag[:, k] - mag[:, k, :1]]
        names += [f"mag_{band}_{r}" for r in radii] + [f"mag_{band}_ring{r}" for r in rings]
        names += [f"grad_{band}_ring{r}" for r in rings]
    for blue, red in zip(order[:-1], order[1:], strict=True):
        pair = f"{names_b[blue]}-{names_b[red]}"
        colour = mag[:, blue] - mag[:, red]
        ring_colour = ring_mag[:, blue] - ring_mag[:, red]
        columns += [colour, ring_colour - colour[:, :1]]
        names += [f"colour_{pair}_{r}" for r in radii]
        names += [f"colour_grad_{pair}_ring{r}" for r in rings]
    return np.concatenate(columns, axis=1).astype(np.float32), names


def shape_features(X, pixel_scale: float = DEFAULT_PIXEL_SCALE, bands=None
                   ) -> tuple[np.ndarray, list[str]]:
    """Per band: Gaussian-weighted (sigma 1.5") centroid offset (arcsec), ellipticity e1, e2 and
    size sqrt(Ixx + Iyy) (arcsec) of the positive flux, and the 180-degree asymmetry
    sum|I - rot180(I)| / sum|I| inside 3"."""
    X = np.asarray(X, dtype=np.float32)
    n, nb, h, w = X.shape
    names_b = band_names(bands, nb)
    positive = np.maximum(X, 0.0).reshape(n * nb, h * w)
    m = (positive @ moment_matrix((h, w), MOMENT_WINDOW_ARCSEC / pixel_scale).T).astype(
        np.float64)
    m0 = np.maximum(m[:, 0], 1e-12)
    cx, cy = m[:, 1] / m0, m[:, 2] / m0
    ixx = np.maximum(m[:, 3] / m0 - cx ** 2, 0.0)
    iyy = np.maximum(m[:, 4] / m0 - cy ** 2, 0.0)
    ixy = m[:, 5] / m0 - cx * cy
    trace = np.maximum(ixx + iyy, 1e-12)
    inside = aperture_matrix((h, w), (3.0 / pixel_scale,))[0]
    absolute = np.abs(X).reshape(n * nb, h * w) @ inside
    asym = np.abs(X - X[..., ::-1, ::-1]).reshape(n * nb, h * w) @ inside
    asymmetry = asym / np.maximum(2.0 * absolute, 1e-12)
    values = np.stack([cx * pixel_scale, cy * pixel_scale, (ixx - iyy) / trace, 2 * ixy / trace,
                       np.sqrt(trace) * pixel_scale, asymmetry], axis=1).reshape(n, nb * 6)
    names = [f"{stat}_{band}" for band in names_b
             for stat in ("dx", "dy", "e1", "e2", "size", "asym")]
    return values.astype(np.float32), names


def stretched_images(X, pixel_scale: float = DEFAULT_PIXEL_SCALE, bands=None,
                     noise: np.ndarray | None = None, softening: float = 3.0
                     ) -> tuple[np.ndarray, list[str]]:
    """Images for the texture features, asinh-stretched in units of ``softening`` sigma: the
    S/N coadd of all bands and, with >= 2 bands, blue/sigma - a red/sigma with ``a`` the ratio of
    their central (1.04") S/N fluxes, which cancels a red lens galaxy and keeps blue arcs."""
    X = np.asarray(X, dtype=np.float32)
    n, nb, h, w = X.shape
    names_b = band_names(bands, nb)
    sigma = (border_noise(X) if noise is None else np.maximum(noise, _TINY)).astype(np.float32)
    snr = X / sigma[:, :, None, None]
    images = [snr.sum(axis=1) / math.sqrt(nb)]
    names = ["coadd"]
    if nb >= 2:
        blue, red = blue_red_indices(names_b)
        centre = aperture_matrix((h, w), (APERTURE_RADII_ARCSEC[0] / pixel_scale,))
        central = snr.reshape(n, nb, h * w) @ centre[0]
        ratio = np.clip(central[:, blue] / np.maximum(central[:, red], 1e-6), 0.0, 2.0)
        images.append(snr[:, blue] - ratio[:, None, None] * snr[:, red])
        names.append("blue-red")
    return np.arcsinh(np.stack(images, axis=1) / softening).astype(np.float32), names


def texture_features(X, pixel_scale: float = DEFAULT_PIXEL_SCALE, bands=None,
                     noise: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Gabor ridge responses (wavelengths 0.8", 1.6"; 4 orientations), steered radially and
    tangentially, averaged (and the positive part's mean square) in annuli 0.5-1.5-3-5"."""
    images, image_names = stretched_images(X, pixel_scale, bands, noise)
    n, ni, h, w = images.shape
    wavelengths = tuple(max(lam / pixel_scale, 2.0) for lam in GABOR_WAVELENGTHS_ARCSEC)
    bank, radial, tangential = _gabor_bank((h, w), wavelengths, GABOR_ORIENTATIONS)
    annuli = annulus_matrix((h, w), tuple((lo / pixel_scale, hi / pixel_scale)
                                          for lo, hi in TEXTURE_ANNULI_ARCSEC))
    spectra = np.fft.rfft2(images.reshape(n * ni, h, w))  # complex64
    columns, names = [], []
    for f, lam in enumerate(GABOR_WAVELENGTHS_ARCSEC):
        response = np.fft.irfft2(spectra[:, None] * bank[f][None], s=(h, w), axes=(-2, -1))
        response = response.reshape(n * ni, GABOR_ORIENTATIONS, h * w).astype(np.float32)
        rad = np.einsum("kop,op->kp", response, radial)
        tan = np.einsum("kop,op->kp", response, tangential)
        stats = [rad @ annuli.T, np.maximum(rad, 0.0) ** 2 @ annuli.T, tan @ annuli.T]
        columns.append(np.stack(stats, axis=1).reshape(n, -1))
        names += [f"gabor{lam:g}_{img}_{stat}_{lo:g}-{hi:g}" for img in image_names
                  for stat in ("rad", "rad2", "tan") for lo, hi in TEXTURE_ANNULI_ARCSEC]
    return np.concatenate(columns, axis=1).astype(np.float32), names


def all_features(X, pixel_scale: float = DEFAULT_PIXEL_SCALE, bands=None
                 ) -> tuple[np.ndarray, list[str]]:
    """Catalogue photometry + shape + texture features, (n, F) float32, in blocks of
    ``FEATURE_CHUNK`` cutouts (bounded memory)."""
    X = np.asarray(X, dtype=np.float32)
    blocks, names = [], []
    for start in range(0, len(X), FEATURE_CHUNK):
        chunk = X[start: start + FEATURE_CHUNK]
        noise = border_noise(chunk)
        parts = [catalogue_features(chunk, pixel_scale, bands, noise),
                 shape_features(chunk, pixel_scale, bands),
                 texture_features(chunk, pixel_scale, bands, noise)]
        blocks.append(np.concatenate([values for values, _ in parts], axis=1))
        names = [name for _, part in parts for name in part]
    if not blocks:
        return np.zeros((0, 0), dtype=np.float32), names
    return np.nan_to_num(np.concatenate(blocks), nan=0.0, posinf=0.0, neginf=0.0), names


def benchmark(n: int = 10_000, size: int = 64, n_bands: int = 4, seed: int = 0) -> float:
    """Feature throughput (cutouts/s) on ``n`` random size x size x n_bands cutouts."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 0.05, (n, n_bands, size, size)).astype(np.float32)
    all_features(X[:16], 0.2, ("g", "r", "i", "z")[:n_bands] if n_bands <= 4 else None)
    start = time.perf_counter()
    values, names = all_features(X, 0.2, ("g", "r", "i", "z")[:n_bands] if n_bands <= 4 else None)
    elapsed = time.perf_counter() - start
    rate = n / elapsed
    print(f"all_features: {n} cutouts {n_bands}x{size}x{size} -> {values.shape[1]} features in "
          f"{elapsed:.1f} s ({rate:,.0f} cutouts/s)")
    return rate


if __name__ == "__main__":  # pragma: no cover - benchmark entry point
    benchmark()
