"""Rendering a drawn population (``population``) into survey images: torch, batched.

The lens mapping and the three unit-flux light components (lens, source, clumps) are computed once
per system on a supersampled grid and shared by every band; bands differ only by their fluxes
(colours), PSF and noise. Combining bands in Fourier space after one FFT per component, kernels
that work in place, and chunks of systems rendered side by side on worker threads
(`Renderer._workers`) make this ~10x faster per band-image than lenstronomy on the 2-core machine
(`bench perf sim`: 9.0-10.3x in quiet runs, against 6.0-6.5x before).

Images are sky subtracted and calibrated: nanomaggies (1 nMgy = AB 22.5), as SDSS, DES and the
Legacy Surveys distribute them, so one scale serves every band and real cutouts. The simulation
itself (noise) is done in electrons of the total exposure.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from lensbench.datasets import lensing, negatives
from lensbench.datasets.config import SimConfig
from lensbench.datasets.psf import psf_kernel, read_psf_file
from lensbench.datasets.surveys import Band, Survey

# Above this many sky electrons per pixel Poisson noise is Gaussian to < 1e-3 in skewness;
# torch.normal is ~3x faster than torch.poisson there.
GAUSSIAN_NOISE_ABOVE = 1000.0
RENDER_CHUNK = 32  # systems per batch of noise draws and truth (fixes the random stream)
# Systems per batch of the grid kernels and FFTs inside a chunk, per torch thread: a temporary
# (0.5 MB per 8 supersampled maps) stays in a core's 2 MB L2 cache. With the kernels allocating a
# new tensor per step, 32 systems made each 2-6 MB temporary a fresh mapping whose page faults took
# ~25% of the time; with the in-place kernels 8, 16 and 32 are within 3% (measured). Per-system
# results do not depend on it (per-system arithmetic; checked bit for bit).
RENDER_SUBCHUNK = 8


# Sersic cores (n = 3-5.5 for early types) are far narrower than a subpixel: sampled at subpixel
# centres, a centre falling on one added up to 10x the profile's flux (n = 5.4, r_eff 0.97",
# supersample 2), or missed a few per cent falling between them. ``Grid.integrate_core`` takes the
# CORE_BLOCK x CORE_BLOCK subpixels around a centre to the profile's mean over each, splitting
# cells CORE_SPLIT x CORE_SPLIT, and the block of cells around the centre again at each further
# level (SimConfig.core_refinement levels in all). Measured against adaptive quadrature
# (tests/test_negatives.py): blocks of 4 cells left the central pixels up to 0.4% short (sampled
# beyond them), blocks of 8 leave them within 0.15%; HSC splits render ~15% slower than sampled.
CORE_BLOCK = 8
CORE_SPLIT = 4


def core_means(profile, node_x, node_y, cx, cy, cell: float, levels: int,
               dtype: torch.dtype) -> torch.Tensor:
    """(n, CORE_BLOCK, CORE_BLOCK) means of ``profile`` over the cells of side ``cell`` (arcsec)
    around each node (``node_x``, ``node_y``, float64 (n,)), each the mean of CORE_SPLIT^2
    samples at its sub-cells' centres, with the block around the centre (``cx``, ``cy``) refined
    again, ``levels`` times in all."""
    m, w, n = CORE_SPLIT, CORE_BLOCK // 2, len(node_x)
    fine = cell / m
    offsets = ((torch.arange(CORE_BLOCK * m, dtype=torch.float64, device=node_x.device) + 0.5)
               * fine - w * cell)
    x0, y0 = node_x - w * cell, node_y - w * cell  # the block's lower-left corner
    values = profile((node_x[:, None] + offsets)[:, None, :].to(dtype),
                     (node_y[:, None] + offsets)[:, :, None].to(dtype))
    if levels > 1:
        # The centre lies within half a cell of the node, so the sub-cells' node nearest it
        # leaves room for the next block inside this one.
        j_x = torch.round((cx - x0) / fine).long().clamp(w, CORE_BLOCK * m - w)
        j_y = torch.round((cy - y0) / fine).long().clamp(w, CORE_BLOCK * m - w)
        inner = core_means(profile, x0 + j_x * fine, y0 + j_y * fine, cx, cy, fine,
                           levels - 1, dtype)
        span = torch.arange(-w, w, device=values.device)
        values = values.clone()
        values[torch.arange(n, device=values.device)[:, None, None],
               (j_y[:, None] + span)[:, :, None], (j_x[:, None] + span)[:, None, :]] = inner
    return values.reshape(n, CORE_BLOCK, m, CORE_BLOCK, m).mean(dim=(2, 4))


@dataclass(frozen=True)
class Grid:
    """The stamp's supersampled image-plane grid: what the renderers of the hard negatives
    (``negatives``) read. Coordinates in arcsec from the stamp centre, x along columns."""

    x_fine: torch.Tensor  # (k H, k W)
    y_fine: torch.Tensor
    x_axis: torch.Tensor  # the same grid as a row (1, k W) and a column (k H, 1)
    y_axis: torch.Tensor
    size: int  # pixels per side
    pixel_scale: float  # arcsec
    supersample: int  # subpixels per pixel side
    dtype: torch.dtype
    device: torch.device
    core_levels: int = 0  # SimConfig.core_refinement

    @classmethod
    def build(cls, size: int, pixel_scale: float, supersample: int, dtype: torch.dtype,
              device: torch.device, core_levels: int = 0) -> Grid:
        fine = (torch.arange(size * supersample, dtype=torch.float64) + 0.5) / supersample
        axis = ((fine - size / 2.0) * pixel_scale).to(dtype).to(device)
        y_fine, x_fine = torch.meshgrid(axis, axis, indexing="ij")
        # Kernels of the image-plane grid broadcast the row and the column, so shifts and
        # rotations cost O(H + W) per system, not O(H W), with the same floating-point
        # operations on every element (identical results).
        return cls(x_fine, y_fine, axis[None, :], axis[:, None], size, pixel_scale, supersample,
                   dtype, device, core_levels)

    def integrate_core(self, values: torch.Tensor, profile, cx, cy) -> torch.Tensor:
        """``values`` (n, kH, kW), a cuspy profile sampled at subpixel centres, with the
        CORE_BLOCK x CORE_BLOCK subpixels around each system's centre (``cx``, ``cy``, arcsec)
        replaced by the profile's means over them (``core_means``, ``core_levels`` nested
        refinements), in place. ``profile(x, y)`` is the map's kernel for its n systems: x
        (n, 1, m) and y (n, m, 1) -> (n, m, m). A centre whose block would leave the grid keeps
        its samples."""
        if self.core_levels < 1:
            return values
        side, half_width = self.subpixel_side, self.size * self.pixel_scale / 2
        w, cells = CORE_BLOCK // 2, values.shape[-1]
        cx = torch.as_tensor(np.asarray(cx), dtype=torch.float64, device=self.device)
        cy = torch.as_tensor(np.asarray(cy), dtype=torch.float64, device=self.device)
        # the subpixel corner (node) nearest each centre, as an index into the subpixel grid
        node_x = torch.round((cx + half_width) / side).long()
        node_y = torch.round((cy + half_width) / side).long()
        inside = (node_x >= w) & (node_x <= cells - w) & (node_y >= w) & (node_y <= cells - w)
        node_x, node_y = node_x.clamp(w, cells - w), node_y.clamp(w, cells - w)
        means = core_means(profile, node_x * side - half_width, node_y * side - half_width, cx,
                           cy, side, self.core_levels, values.dtype)
        rows = torch.nonzero(inside).flatten()
        span = torch.arange(-w, w, device=values.device)
        values[rows[:, None, None], (node_y[rows, None] + span)[:, :, None],
               (node_x[rows, None] + span)[:, None, :]] = means[rows]
        return values

    @property
    def subpixel_side(self) -> float:
        return self.pixel_scale / self.supersample

    @property
    def subpixel_area(self) -> float:
        return (self.pixel_scale / self.supersample) ** 2

    def tensor(self, array) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), dtype=self.dtype, device=self.device)

    def column(self, array) -> torch.Tensor:
        """Per-system values (n,) as (n, 1, 1), to broadcast against the grid."""
        return self.tensor(array)[:, None, None]


class Renderer:
    """Renders systems drawn by ``Population`` for one `SimConfig` and survey selection:
    noiseless images and their truth (magnification, arc S/N), then noise."""

    def __init__(self, config: SimConfig, survey: Survey, *, extended: bool,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        self.config = config
        self.survey = survey
        self.bands: tuple[Band, ...] = survey.bands
        self.band_names = survey.band_names
        self.size = config.size
        self.pixel_scale = survey.pixel_scale
        self.dtype, self.device = dtype, torch.device(device)
        # Real sources, hard negatives or artefacts in use (see `Simulator.extended`).
        self.extended = extended
        self.kernels = self._psf_kernels()
        self.grid = Grid.build(self.size, self.pixel_scale, config.supersample, self.dtype,
                               self.device, config.core_refinement)
        self._build_fft()
        # A fourth component only when lenses may carry a PSF-convolved artefact (stars,
        # trails); a non-lens artefact uses the elliptical's free slot 1.
        self.n_components = 4 if config.lens_artefact_fraction > 0 else 3
        self.artefact_slot = 3 if self.n_components == 4 else 1
        # Field galaxies: two components after those, early and late types (one colour each).
        self.field_slot = self.n_components if config.field_density > 0 else None
        if self.field_slot is not None:
            self.n_components += 2
        # The lenses' group companions (SimConfig.lens_companion_fraction): one more component.
        self.companion_slot = self.n_components if config.lens_companion_fraction > 0 else None
        if self.companion_slot is not None:
            self.n_components += 1
        if config.lens_artefact_fraction > 0 or config.negatives.get("artefact", 0) > 0:
            self.saturation_levels()  # fails early on a full well below the sky
        self._pool: tuple | None = None  # ((pid, threads), (render, noise) pools): _workers

    # ----------------------------------------------------------------- set-up
    def _psf_kernels(self) -> list[np.ndarray]:
        cfg = self.config
        if cfg.psf_model == "pixelised":
            return read_psf_file(cfg.psf_file, self.band_names)
        model = self.survey.psf_model if cfg.psf_model == "survey" else cfg.psf_model
        return [psf_kernel(model, cfg.psf_fwhm_override or band.psf_fwhm, band.pixel_scale,
                           self.survey.moffat_beta) for band in self.bands]

    def _build_fft(self):
        n = self.size
        # FFT size: the image plus the kernel's half width is enough for a 'same'-size linear
        # convolution: circular wrap-around then only lands in the cropped-off padding.
        half = max(kern.shape[0] for kern in self.kernels) // 2
        self.fft_size = _fast_fft_size(n + half)
        spectra = [self._padded_spectrum(kern) for kern in self.kernels]
        complex_dtype = torch.complex64 if self.dtype == torch.float32 else torch.complex128
        self.psf_spectra = torch.as_tensor(np.stack(spectra), dtype=complex_dtype,
                                           device=self.device)
        self.n_eff_pixels = [1.0 / float(np.sum(kern**2)) for kern in self.kernels]
        self.noise_spectra, self.noise_n_eff_pixels = self.psf_spectra, self.n_eff_pixels
        if self.config.correlated_noise_kernel == "acs-f814w-matched":
            noise_kernels = self._acs_f814w_matching_kernels()
            self.noise_spectra = torch.as_tensor(
                np.stack([self._padded_spectrum(kern) for kern in noise_kernels]),
                dtype=complex_dtype, device=self.device)
            self.noise_n_eff_pixels = [1.0 / float(np.sum(kern**2)) for kern in noise_kernels]
        sky = [band.sky_counts for band in self.bands]
        self.sky_counts = torch.tensor(sky, dtype=self.dtype, device=self.device)
        self.electrons_per_nanomaggy = torch.tensor(
            [band.electrons_per_nanomaggy for band in self.bands], dtype=self.dtype,
            device=self.device)[None, :, None, None]
        self.read_variance = torch.tensor([b.n_exposures * b.read_noise**2 for b in self.bands],
                                          dtype=self.dtype, device=self.device)

    def _padded_spectrum(self, kernel: np.ndarray) -> np.ndarray:
        """The rfft2 of ``kernel`` centred on pixel (0, 0) of the FFT grid."""
        padded = np.zeros((self.fft_size, self.fft_size))
        padded[: kernel.shape[0], : kernel.shape[1]] = kernel
        padded = np.roll(padded, (-(kernel.shape[0] // 2), -(kernel.shape[1] // 2)), axis=(0, 1))
        return np.fft.rfft2(padded)

    def _acs_f814w_matching_kernels(self) -> list[np.ndarray]:
        """Per band, the kernel that takes an HST ACS/WFC F814W image to this band's PSF, as
        ``datasets.degrade`` applies it to the real splits' SLACS and COSMOS images."""
        from lensbench.datasets.degrade import matching_kernel
        from lensbench.datasets.known_lenses import ACS_F814W_PSF_SCALE, acs_f814w_psf

        native = acs_f814w_psf()
        return [matching_kernel(native, ACS_F814W_PSF_SCALE, kernel, band.pixel_scale)
                for band, kernel in zip(self.bands, self.kernels, strict=True)]

    def saturation_levels(self) -> list[float]:
        """Per band, the sky-subtracted value (nanomaggies) at which a saturated pixel is
        clipped (``negatives.saturation_levels``)."""
        return negatives.saturation_levels(self.config.saturation_level, self.bands,
                                           self.config.survey)

    # ----------------------------------------------------------------- lens geometry
    def _lens_columns(self, p, index) -> dict[str, torch.Tensor]:
        return {key: self.grid.column(p[key][index]) for key in lensing.LENS_KEYS}

    def count_images(self, p: dict, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Images (n, K) of K source positions per system, offsets ``dx, dy`` (n, K) arcsec from
        the lens centres (``lensing.count_images``), chunk by chunk on the render threads if
        there are some (chunks are independent)."""
        n = len(dx)

        def count(index):
            sx = self.grid.tensor(dx[index] + p["lens_x"][index, None])
            sy = self.grid.tensor(dy[index] + p["lens_y"][index, None])
            return lensing.count_images(self._lens_columns(p, index), sx, sy).cpu().numpy()

        chunks = [np.arange(lo, min(n, lo + RENDER_CHUNK)) for lo in range(0, n, RENDER_CHUNK)]
        pools = self._workers()
        return np.concatenate(list(pools[0].map(count, chunks) if pools else map(count, chunks)))

    # ----------------------------------------------------------------- rendering
    def _render_components(self, p, index, lensed: bool) -> torch.Tensor:
        """Unit-flux maps (lens, source, clumps[, artefact]) binned to pixels: (n, C, H, W).
        Non-lenses of other classes than the elliptical fill the slots with their own parts
        (``negatives``)."""
        grid = self.grid
        n = len(index)
        k, size, slots = self.config.supersample, self.size, self.n_components
        maps = torch.zeros((n, slots, size * k, size * k), dtype=self.dtype, device=self.device)
        if not lensed and "negative_class" in p:
            negatives.render_negatives(grid, p, index, maps)
        else:
            maps[:, 0] = negatives.early_type_map(grid, p, index)
        if lensed:
            self._render_source(p, index, maps)
            if self.companion_slot is not None:
                negatives.render_members(grid, p, index, maps, self.companion_slot)
        if "artefact_kind" in p:
            negatives.render_psf_artefacts(grid, self.artefact_slot, p, index, maps)
        if self.field_slot is not None:
            self._render_field(p, index, maps)
        return _bin(maps, k)

    def _render_field(self, p, index, maps: torch.Tensor) -> None:
        """Field galaxies into their two components (``field_slot``: early types, then late
        types), each galaxy weighted by its share of its component's reference-band flux
        (``_field_weight``, drawn with them)."""
        share, red = p["_field_weight"][index], p["field_red"][index]
        for slot, members in ((self.field_slot, red), (self.field_slot + 1, ~red)):
            weight = np.where(members, share, 0.0)
            for j in np.flatnonzero(weight.any(axis=0)):
                maps[:, slot] += negatives.sersic_map(
                    self.grid, *(p[f"field_{key}"][index, j] for key in (
                        "r_eff", "sersic_n", "q", "phi", "x", "y")), weight[:, j])

    def _render_source(self, p, index, maps: torch.Tensor) -> None:
        """The lensed source (slot 1) and its clumps (slot 2), Sersic or real."""
        grid = self.grid
        c, x, y = grid.column, grid.x_axis, grid.y_axis
        bx, by = lensing.source_plane(x, y, **self._lens_columns(p, index))
        sx, sy = p["source_x"][index], p["source_y"][index]
        real = p["source_is_real"][index] if "source_is_real" in p else np.zeros(len(index), bool)
        if not real.all():
            n_src, r_src = p["source_sersic_n"][index], p["source_r_eff"][index]
            amplitude = lensing.sersic_flux_to_amplitude(1.0, r_src, n_src) * grid.subpixel_area
            maps[:, 1] = lensing.sersic_profile(
                bx, by, c(amplitude), c(r_src), c(n_src), c(p["source_q"][index]),
                c(p["source_phi"][index]), c(sx), c(sy), b_n=c(lensing.sersic_b(n_src)))
            fractions = p["clump_fraction"][index]
            total = np.maximum(fractions.sum(axis=1), 1e-12)
            for j in range(fractions.shape[1]):
                if not np.any(fractions[:, j] > 0):
                    continue
                weight = fractions[:, j] / total * grid.subpixel_area  # unit-flux clump map
                maps[:, 2] += lensing.gaussian_profile(
                    bx, by, c(weight), c(p["clump_r_eff"][index, j]),
                    c(sx + p["clump_dx"][index, j]), c(sy + p["clump_dy"][index, j]))
        if real.any():
            from lensbench.datasets.cosmos import lensed_source_image

            select = np.flatnonzero(real)
            rows = index[select]
            chosen = torch.as_tensor(select, device=self.device)
            # Real stamps are box-filtered to the subpixel side before sampling (anti-aliasing).
            maps[chosen, 1] = lensed_source_image(
                list(p["_stamps"][rows]), p["_stamp_scale"][rows], bx[chosen], by[chosen],
                sx[select], sy[select], subpixel_area=grid.subpixel_area,
                smooth_to=grid.subpixel_side)
            maps[chosen, 2] = 0.0

    def _band_fluxes(self, p, index) -> np.ndarray:
        """Electrons of each component in each band: (n, B, C)."""
        n = len(index)
        fluxes = np.zeros((n, len(self.bands), self.n_components))
        for b, band in enumerate(self.bands):
            if "_component_mag" in p:  # non-lenses of the negative classes
                fluxes[:, b, :3] = band.counts(p["_component_mag"][index, b])
            else:
                fluxes[:, b, 0] = band.counts(p[f"lens_mag_{band.name}"][index])
            if p["lensed"][0]:
                f_main, f_clump = p["_source_flux_parts"][band.name]
                reference_counts = band.counts(p["_source_ref_mag"][index])
                fluxes[:, b, 1] = reference_counts * f_main[index]
                fluxes[:, b, 2] = reference_counts * f_clump[index]
            if "artefact_mag" in p:
                fluxes[:, b, self.artefact_slot] += band.counts(p["artefact_mag"][index, b])
            if self.field_slot is not None:
                fluxes[:, b, self.field_slot: self.field_slot + 2] = band.counts(
                    p["_field_slot_mags"][index, b])
            if "companion_mag" in p:
                fluxes[:, b, self.companion_slot] = band.counts(p["companion_mag"][index, b])
        return fluxes

    def _convolve(self, components: torch.Tensor, fluxes: torch.Tensor,
                  out: torch.Tensor | None = None) -> torch.Tensor:
        """PSF-convolved band images (n, K B, H, W) from component maps (n, C, H, W) and K sets of
        band fluxes (n, K B, C): one FFT per component, shared by the K sets (e.g. the whole
        scene and the source alone), bands combined in Fourier space (convolution is linear).
        ``out``: optional (n, K B, H, fft_size) buffer the images are a view of."""
        size, length = self.size, self.fft_size
        spectra = torch.fft.rfft2(components, s=(length, length))
        per_band = torch.einsum("nbc,nchw->nbhw", fluxes.to(spectra.dtype), spectra)
        per_band.unflatten(1, (-1, len(self.bands))).mul_(self.psf_spectra)
        # irfft2 written as its two 1-D passes (what it does inside, bit for bit), so that the
        # rows cropped away are never transformed: ~10% of the inverse FFT time. (The forward
        # rfft2 stays whole: split, it is not bit-identical at every size on 2 threads.)
        rows = torch.fft.ifft(per_band, dim=-2)[..., :size, :]
        return torch.fft.irfft(rows, n=length, out=out)[..., :size]

    def add_noise(self, expected: torch.Tensor, generator: torch.Generator,
                  correlated: np.ndarray | None = None) -> torch.Tensor:
        """Make expected source electrons (n, B, H, W) into sky-subtracted noisy images, in place:
        Poisson noise of source + sky (Gaussian above GAUSSIAN_NOISE_ABOVE sky electrons) and the
        read noise of each exposure. ``correlated`` (n,): see :meth:`_add_correlated_noise`."""
        if correlated is not None:
            return self._add_correlated_noise(expected, generator, correlated)
        shape = expected[:, 0].shape
        # Drawn where the generator is (the CPU: see Simulator.simulate) and moved to the
        # rendering device, so every device gets the same noise.
        drawn_on = generator.device
        sigma, noise = (torch.empty(shape, dtype=self.dtype, device=device)
                        for device in (self.device, drawn_on))  # reused by every band
        for b in range(expected.shape[1]):
            sky, read_variance = float(self.sky_counts[b]), float(self.read_variance[b])
            image = expected[:, b]
            if sky > GAUSSIAN_NOISE_ABOVE:
                torch.clamp(image, min=0, out=sigma).add_(sky + read_variance).sqrt_()
                torch.randn(shape, generator=generator, out=noise)
                image.addcmul_(noise.to(self.device), sigma)
            else:
                photons = torch.poisson(image.clamp(min=0).add_(sky).to(drawn_on),
                                        generator=generator).to(self.device)
                read = torch.randn(shape, generator=generator, dtype=self.dtype,
                                   device=drawn_on).to(self.device)
                image.copy_(photons.sub_(sky).add_(read, alpha=math.sqrt(read_variance)))
        return expected

    def _add_correlated_noise(self, expected: torch.Tensor, generator: torch.Generator,
                              levels: np.ndarray) -> torch.Tensor:
        """``add_noise`` with part of the noise correlated on the PSF scale: a white field
        convolved with each band's PSF or HST-matching kernel (``correlated_noise_kernel``;
        circularly on the FFT grid: a stationary field), scaled to ``levels`` ((n,) for every
        band, or (n, B)) times the sky's sigma per pixel (with
        ``correlated_noise_electrons_per_nanomaggy``, the deep image's photon noise from the
        objects added to its variance), and
        Gaussian white noise with the rest of the variance of source + sky + read noise (none
        where the correlated part exceeds it). Gaussian throughout: at these sky levels
        (hundreds of electrons and more) Poisson noise is Gaussian to well under a percent."""
        n, n_bands, size, _ = expected.shape
        drawn_on = generator.device
        levels = torch.as_tensor(levels, dtype=self.dtype, device=self.device)
        for b in range(n_bands):
            level = (levels if levels.ndim == 1 else levels[:, b])[:, None, None]
            background = float(self.sky_counts[b]) + float(self.read_variance[b])
            image = expected[:, b]
            correlated_sigma = level * math.sqrt(background)
            deep_electrons = self.config.correlated_noise_electrons_per_nanomaggy
            if isinstance(deep_electrons, tuple):  # one per band (SimConfig)
                deep_electrons = deep_electrons[b]
            if deep_electrons > 0:  # the deep image's photons from the objects (SimConfig)
                # I / E nMgy^2 of variance, in this band's electrons^2, through the kernel
                per_electron = (float(self.electrons_per_nanomaggy[0, b, 0, 0]) / deep_electrons
                                / self.noise_n_eff_pixels[b])
                correlated_sigma = torch.sqrt(correlated_sigma**2
                                              + image.clamp(min=0) * per_electron)
            white_sigma = (image.clamp(min=0) + background - correlated_sigma**2).clamp(
                min=0).sqrt()
            white = torch.randn(image.shape, generator=generator, dtype=self.dtype,
                                device=drawn_on).to(self.device)
            field = torch.randn((n, self.fft_size, self.fft_size), generator=generator,
                                dtype=self.dtype, device=drawn_on).to(self.device)
            field = torch.fft.irfft2(torch.fft.rfft2(field) * self.noise_spectra[b],
                                     s=(self.fft_size, self.fft_size))[:, :size, :size]
            # A unit white field through a kernel k has variance sum(k^2) = 1 / n_eff_pixels.
            field *= math.sqrt(self.noise_n_eff_pixels[b])
            image.add_(white * white_sigma + field * correlated_sigma)
        return expected

    def _arc_snr(self, source: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """Collett (2015)-style S/N of the lensed source in each band (n, B): its signal summed
        over the pixels where it exceeds the 1-sigma noise, over the noise of those pixels."""
        background = (self.sky_counts + self.read_variance)[None, :, None, None]
        variance = total.clamp(min=0).add_(background)
        sigma = variance.sqrt()
        mask = (source > sigma).to(source.dtype)  # converted once for both products
        numerator = torch.mul(source, mask, out=sigma).sum(dim=(2, 3))
        denominator = variance.mul_(mask).sum(dim=(2, 3)).clamp(min=1e-30).sqrt()
        return numerator / denominator

    def _workers(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None:
        """(render, noise) thread pools, or None when torch runs on one thread or not on the CPU.

        Chunks are independent until their noise is drawn, so on T torch threads T render
        threads work on T chunks side by side, each running its ops on one core, while one
        noise thread adds noise to the finished chunks in order (the random stream stays that
        of one thread). Splitting every op across the cores instead (torch's own threading, as
        before) left cores waiting in the serial parts: the noise draws, the Python between ops.
        Re-made after a fork (threads do not survive it) or a change of torch's thread count."""
        threads = torch.get_num_threads()
        if threads < 2 or self.device.type != "cpu":
            return None
        key = (os.getpid(), threads)
        if self._pool is None or self._pool[0] != key:
            pools = (_one_thread_pool(threads, "render"), _one_thread_pool(1, "noise"))
            torch.set_num_threads(threads)  # the default the workers' set_num_threads(1) changed
            self._pool = (key, pools)
        return self._pool[1]

    def render(self, p, lensed: bool, generator: torch.Generator | None, out: np.ndarray,
               rows: np.ndarray):
        """Render systems ``p`` into ``out[rows]`` (noisy when a generator is given; written in
        place, chunk by chunk, to avoid copying whole image stacks) and return the truth derived
        from the noiseless images: magnification (n,) and arc S/N per band (n, B).

        Each chunk's noiseless images come from `_render_chunk`; its noise is added after the
        previous chunk's, in one thread (see `_workers`), so the random stream is the same
        however the rendering is spread."""
        n, n_bands = len(p["lens_x"]), len(self.bands)
        magnification = np.full(n, np.nan)
        arc_snr = np.full((n, n_bands), np.nan)
        chunks = [np.arange(lo, min(n, lo + RENDER_CHUNK)) for lo in range(0, n, RENDER_CHUNK)]
        # Real sources, hard negatives and artefacts too: rendered by torch's own threads, their
        # bytes depended on the thread count (3, 6, 7 and 12 threads each gave other HSC splits);
        # on one-thread workers they are those of one thread (as 2 threads gave) for any count,
        # and a 600-cutout HSC split took 4 s of CPU instead of 19 (issue 24).
        pools = self._workers()
        depth = 1 if pools is None else self._pool[0][1] + 1  # chunks in flight
        # Reused image buffers (fresh ones each chunk page-fault): chunk k uses k % depth; it is
        # not started before chunk k - depth, the last user of its buffer, is finished.
        shape = (min(n, RENDER_CHUNK), (2 if lensed else 1) * n_bands, self.size, self.fft_size)
        buffers = [torch.empty(shape, dtype=self.dtype, device=self.device)
                   for _ in range(min(depth, len(chunks)))]

        def finish(k, images, chunk_magnification, chunk_arc_snr):
            index = chunks[k]
            magnification[index], arc_snr[index] = chunk_magnification, chunk_arc_snr
            expected = images[:, :n_bands]
            if "artefact_kind" in p:
                negatives.add_cosmic_rays(self.grid, self.bands, p, index, expected)
            if generator is not None:
                self.add_noise(expected, generator, p["correlated_noise"][index]
                               if "correlated_noise" in p else None)
            expected /= self.electrons_per_nanomaggy
            if "artefact_kind" in p:
                negatives.apply_detector_effects(self.grid, self.saturation_levels(), p, index,
                                                 expected)
            out[rows[index]] = expected.cpu().numpy()

        if pools is None:
            for k, index in enumerate(chunks):
                finish(k, *self._render_chunk(p, index, lensed, buffers[0]))
            return magnification, arc_snr
        render_pool, noise_pool = pools

        def start(k):
            rendered = render_pool.submit(self._render_chunk, p, chunks[k], lensed,
                                          buffers[k % depth])
            return noise_pool.submit(lambda: finish(k, *rendered.result()))

        finished = deque(start(k) for k in range(min(depth, len(chunks))))
        for k in range(len(chunks)):
            finished.popleft().result()  # raises what the chunk raised
            if k + depth < len(chunks):
                finished.append(start(k + depth))
        return magnification, arc_snr

    def _render_chunk(self, p, index: np.ndarray, lensed: bool, buffer: torch.Tensor):
        """Noiseless images of systems ``index`` (n, B, H, W; for lenses followed by the source
        alone, (n, 2 B, H, W)), a view of ``buffer``, with their magnification (n,) and arc S/N
        (n, B) (NaN for non-lenses)."""
        n, n_bands = len(index), len(self.bands)
        magnification = np.full(n, np.nan)
        arc_snr = np.full((n, n_bands), np.nan)
        fluxes = self.grid.tensor(self._band_fluxes(p, index))
        if lensed:  # the source alone too (arc S/N), from the same component spectra
            source_only = fluxes.clone()
            source_only[:, :, 0] = 0
            source_only[:, :, 3:] = 0
            fluxes = torch.cat([fluxes, source_only], dim=1)
        # The inverse FFT writes rows of fft_size pixels, of which the first `size` are the image.
        padded = buffer[:n]
        images = padded[..., : self.size]
        # Real sources and hard negatives pad their stamps to the largest in the batch (which
        # moves their rounding): they keep the whole chunk.
        step = (RENDER_CHUNK if self.extended
                else min(RENDER_CHUNK, RENDER_SUBCHUNK * torch.get_num_threads()))
        for start in range(0, n, step):
            part = slice(start, start + step)
            components = self._render_components(p, index[part], lensed)
            self._convolve(components, fluxes[part], out=padded[part])
            if lensed:
                magnification[part] = components[:, 1].sum(dim=(1, 2)).cpu().numpy()
                arc_snr[part] = self._arc_snr(images[part, n_bands:],
                                              images[part, :n_bands]).cpu().numpy()
        return images, magnification, arc_snr


def _one_thread_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads whose torch ops each run on one thread, all started now."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix=f"lensbench-{name}",
                              initializer=_one_torch_thread)
    barrier = threading.Barrier(workers)  # one task per thread: each waits for the others
    for started in [pool.submit(barrier.wait) for _ in range(workers)]:
        started.result()
    return pool


def _one_torch_thread() -> None:
    torch.get_num_threads()  # torch's per-thread set-up first, from the process-wide default,
    torch.set_num_threads(1)  # then one thread for this one (the caller restores the default)


def _bin(maps: torch.Tensor, k: int) -> torch.Tensor:
    """Sum k x k blocks of subpixels (..., k H, k W) -> (..., H, W): rows first, then columns,
    each a running sum of the k strided slices. This is the order of the two single-axis sums
    (``.sum(3)`` and ``.sum(4)`` of reshaped views) it replaces, so the results are identical,
    and it is ~7x faster than those strided reductions (measured)."""
    rows = maps[..., 0::k, :]
    for j in range(1, k):
        rows = rows + maps[..., j::k, :]
    out = rows[..., 0::k]
    for j in range(1, k):
        out = out + rows[..., j::k]
    return out


def _fast_fft_size(n: int) -> int:
    """Smallest m >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = n
    while True:
        r = m
        for f in (2, 3, 5):
            while r % f == 0:
                r //= f
        if r == 1:
            return m
        m += 1
