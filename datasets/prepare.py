"""Prepare a user's real cutout to a model's input contract: :func:`prepare_cutout`.

A model (``baselines.persistence.ModelContract``) takes (bands, H, W) stamps in its band order,
sky-subtracted nanomaggies (AB zero point 22.5) per pixel of its pixel scale, centred on the
object. A survey delivers something else; this module turns it into that, and says what it
did (:class:`Preparation`, one record per cutout). Inputs:

* one FITS file per band (science image, optionally an rms or an inverse-variance weight map):
  :func:`read_band_files`;
* one multi-extension FITS file with one band per HDU (DES style) or one (bands, H, W) cube:
  :func:`read_cutout`. Bands come from a map (``{"g": "SCI_G"}``: HDU name or index, or the
  plane index of a cube), else from each HDU's FILTER / BAND keyword (a cube: BANDS = "g,r,i"),
  else a cube with exactly the model's number of planes is taken in the model's order;
* a (bands, H, W) array with its zero point and pixel scale given.

Steps, per band:

1. Units to nanomaggies: ``flux_nmgy = value * 10**(-0.4 * (ZP - 22.5))`` with the AB zero point
   ZP of one unit of the stored values: a flag (``zero_point``) wins, else a BUNIT of nanomaggies
   or of a flux density (astropy.units: nJy is 31.4), else a MAGZERO / MAGZPT / MAGZP / PHOTZP /
   ZP / ZEROPT keyword, else HST's PHOTFLAM and PHOTPLAM (the zero point of 1 e-/s; BUNIT must
   then say counts, divided by EXPTIME, or a count rate). Nothing saying the zero point is an
   error: a guessed one shifts every flux.
2. Pixel scale: a flag wins, else the WCS of the header (astropy; the pixel side is
   sqrt |det CD|, so rotated frames are measured right; celestial axes or angular CUNITs only),
   else a PIXSCALE / PIXSCAL1 / SECPIX keyword. Nothing saying it, when the model needs
   resampling, is an error; so is an input pixel over MAX_SCALE_FACTOR model pixels wide.
3. Resampling, when the scales differ by more than 1e-6: flux-conserving, by exact pixel-area
   overlap (:func:`lensbench.datasets.degrade.rebin_flux`, the rebinning the real suite renders
   its known lenses with and tests). We use it rather than ``reproject`` because it keeps the
   grid centred on the cutout centre and the orientation of the input: a lens finder trained
   with dihedral augmentation does not care about the sky orientation (North and the parity
   are recorded for regressors' outputs), and matching the suite's own rebinning means a cutout
   the suite made is resampled exactly as the suite resamples. The output grid is the stamp's
   where the input covers it, else the largest grid of the stamp's parity it covers fully.
   An rms map is resampled as a variance (squared weights).
4. Centring: cutouts are taken to be centred on the object (as a cutout service delivers them
   around a catalogue position); the stamp is cut around the centre, or padded on every side
   (whole pixels: the offset of the cutout's centre, half a pixel when parities differ, is
   recorded). Padding pixels, and pixels without data (non-finite, zero weight), get Gaussian
   noise of the sky sigma, from the rms map (its median over the cutout border) or, without one,
   the sigma-clipped standard deviation of the cutout's border
   (``astropy.stats.sigma_clipped_stats``). Zero padding would put a noiseless frame around the
   object that no training image has (a real lens moved from 0.983 to 0.910 between the two).
   The noise is drawn from a generator seeded by the cutout id (and ``seed``), so a rerun gives
   the same pixels. A cutout whose own data would fill less than MIN_DATA_FRACTION of the stamp
   is refused.

A missing band, file or HDU is an error naming the file and the band.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from lensbench.datasets.degrade import NANOMAGGY_ZEROPOINT, rebin_flux, to_nanomaggies

ZERO_POINT_KEYWORDS = ("MAGZERO", "MAGZPT", "MAGZP", "PHOTZP", "ZP", "ZEROPT")
PIXEL_SCALE_KEYWORDS = ("PIXSCALE", "PIXSCAL1", "SECPIX")
BAND_KEYWORDS = ("FILTER", "BAND", "FILTNAM1")
NANOMAGGY_UNITS = ("nanomaggy", "nanomaggies", "nmgy")
SCALE_TOLERANCE = 1e-6  # relative: scales closer than this are the same (no resampling)
# A header read as it is (no preparation) contradicts the model beyond this relative difference
# (headers round the pixel scale: 0.168 for HSC's 0.16799...)
AS_IS_TOLERANCE = 1e-3
# An input pixel may cover at most 8 x 8 model pixels: coarser is no survey (SDSS's 0.396" into
# a 0.1" Euclid VIS model is 4), but a scale in the wrong unit (1 read as 1 degree).
MAX_SCALE_FACTOR = 8.0
# At least half of a stamp must hold the cutout's own data; the rest may be padding noise and
# masked pixels (a 3x3 cutout padded to 101x101 would be scored as if it were a cutout).
MIN_DATA_FRACTION = 0.5
BORDER_WIDTH = 4  # pixels of the border that give the sky sigma without an rms map
# A sky-subtracted cutout's border median lies near 0: field galaxies lift the training stamps'
# borders to 3-4 sky sigmas in 1 of 1000 bands (hsc-holismokes, real-vis; README, "Sky"), and
# the SLACS lenses' halos raised their snapshots' by 0.7-1.5 HST sigma per pixel
# (known_lenses.sky_level_beside_halo). A level beyond SKY_LEVEL_LIMIT sky sigmas is sky left in
# the image, which no model saw in training: prepared.csv's ``sky_not_subtracted`` names such
# bands, and bench scan and bench predict say how many cutouts have one. Set on these grounds.
SKY_LEVEL_LIMIT = 5.0
ARCSEC_PER_DEG = 3600.0
AB_ZERO_POINT_JY = 3631.0  # the AB system's zero-point flux density (Oke & Gunn 1983)


class PreparationError(ValueError):
    """A cutout that cannot be prepared (missing band or file, no zero point, ...): the message
    names the file and the band or keyword."""


@dataclass(frozen=True)
class ModelInputs:
    """What a model takes: bands in order, pixel scale (arcsec; None if unknown) and stamp
    (H, W)."""

    bands: tuple[str, ...]
    pixel_scale: float | None
    stamp_shape: tuple[int, int]
    psf_fwhm: tuple[float, ...] | None = None  # per band, arcsec (the training PSF), if known


@dataclass
class BandPlane:
    """One band of a cutout as read: values as stored, where they came from, its header."""

    band: str
    data: np.ndarray
    file: str  # "path" or "path[HDU]", for messages and the record
    header: object = None  # astropy Header or None
    rms: np.ndarray | None = None  # per-pixel sigma, in the units of ``data``
    rms_file: str | None = None
    index: int = 0  # the plane of a cube
    psf_fwhm: float | None = None  # arcsec, measured on a PSF image given with the band


@dataclass
class Preparation:
    """What was done to one cutout (one row of the side table of ``bench scan``)."""

    id: str
    files: str = ""
    zero_points: str = ""  # "g=30.0,r=30.0"
    zero_point_from: str = ""  # "g=MAGZERO,r=--zeropoint"
    pixel_scale_in: float = math.nan
    pixel_scale_from: str = ""
    scale_factor: float = 1.0  # input pixel / model pixel
    resampling: str = "none"  # "none" or "rebin_flux"
    input_shape: str = ""
    crop_pixels: int = 0  # pixels cut off (all sides, one band)
    padding_pixels: int = 0  # pixels of noise added (all sides, one band)
    noise_source: str = "none"  # "rms map", "border sigma-clipped std" or "none"
    noise_sigma: str = ""  # per band, nanomaggies
    seed: int = 0
    psf_fwhm: str = ""  # per band, arcsec, of the PSF images given ("" without any)
    model_psf_fwhm: str = ""  # per band, arcsec, the model's training PSF (where it says)
    masked_pixels: int = 0  # stamp pixels without data (non-finite, zero weight): noise
    # where the cutout's centre lies in the stamp, model pixels from the stamp's centre (x along
    # columns, y along rows): +-0.5 when the cutout's side and the stamp's differ in parity
    centre_dx: float = 0.0
    centre_dy: float = 0.0
    sky_level: str = ""  # per band, the border's clipped median in sky sigmas (~0: sky-subtracted)
    sky_not_subtracted: str = ""  # the bands whose |sky_level| exceeds SKY_LEVEL_LIMIT
    north_angle: float = math.nan  # degrees from +y (rows) towards +x of North, from the WCS
    east_left: str = ""  # "True": East at -x (North up, East left as on the sky), from the WCS

    def row(self) -> dict[str, str]:
        return {key: repr(v) if isinstance(v, float) else str(v)
                for key, v in asdict(self).items()}


PREPARATION_COLUMNS = tuple(Preparation.__dataclass_fields__)


# --------------------------------------------------------------------------- header facts


def _number(value) -> float | None:
    """A finite number from a header value (a number, or a string holding one: "30.0")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _unit(text: str):
    """BUNIT as an astropy unit (FITS spelling first, then astropy's), or None."""
    import astropy.units as u

    for fmt in ("fits", None):
        try:
            return u.Unit(text, format=fmt, parse_strict="raise")
        except (ValueError, TypeError):
            continue
    return None


def _flux_density_zero_point(unit) -> float | None:
    """The AB zero point of one ``unit`` when it is a flux density (nJy: 31.4), else None."""
    import astropy.units as u

    if unit is None or not unit.is_equivalent(u.Jy):
        return None
    return -2.5 * math.log10(unit.to(u.Jy) / AB_ZERO_POINT_JY)


def _is_count_rate(text: str, unit) -> bool | None:
    """True for counts (electrons, DN) per second, False for counts, None when BUNIT says
    neither. Astropy parses "count s-1" or "electron / s"; HST and others write "ELECTRONS/S",
    "COUNTS/S", "CPS", which it does not."""
    import astropy.units as u

    if unit is not None and not unit.is_equivalent(u.Jy):
        powers = dict(zip(unit.decompose().bases, unit.decompose().powers, strict=True))
        if powers.get(u.s, 0) < 0:
            return True
    words = text.upper().replace(" ", "")
    if re.search(r"(/S(EC(OND)?)?$|S-1$|S\*\*-1$|^CPS$|PERS(EC(OND)?)?$)", words):
        return True
    if re.fullmatch(r"(COUNTS?|CTS?|ELECTRONS?|E-?|DN|ADUS?)", words):
        return False
    return None


def zero_point_of(header, where: str, flag: float | None = None) -> tuple[float, float, str]:
    """(AB zero point, factor the values are multiplied by first, where the zero point came
    from) of an image with ``header``; see the module docstring. PreparationError naming
    ``where`` when nothing says it."""
    if flag is not None:
        return float(flag), 1.0, "--zeropoint"
    header = header if header is not None else {}
    text = str(header.get("BUNIT", "")).strip()
    unit = _unit(text) if text else None
    if text.lower() in NANOMAGGY_UNITS:
        return NANOMAGGY_ZEROPOINT, 1.0, "BUNIT"
    if (zero_point := _flux_density_zero_point(unit)) is not None:  # nJy (Rubin), uJy, ...
        return zero_point, 1.0, f"BUNIT {text}"
    for key in ZERO_POINT_KEYWORDS:
        if (value := _number(header.get(key))) is not None:
            return value, 1.0, key
    photflam, photplam = _number(header.get("PHOTFLAM")), _number(header.get("PHOTPLAM"))
    if photflam is not None and photplam is not None and photflam > 0 and photplam > 0:
        # AB magnitude of 1 e-/s (STScI ACS zero points)
        zero_point = -2.5 * math.log10(photflam) - 5.0 * math.log10(photplam) - 2.408
        rate = _is_count_rate(text, unit)
        if rate:
            return zero_point, 1.0, "PHOTFLAM"
        exptime = _number(header.get("EXPTIME"))
        if rate is None:
            seconds = f"; over EXPTIME {exptime:g} s, counts have zero point " \
                f"{zero_point + 2.5 * math.log10(exptime):.4f}" if exptime and exptime > 0 else ""
            raise PreparationError(
                f"{where}: BUNIT {text or 'missing'!r} does not say whether the values are "
                f"counts or counts per second, and PHOTFLAM's zero point ({zero_point:.4f}) is "
                f"that of 1 e-/s{seconds}; pass --zeropoint")
        if exptime is None or exptime <= 0:
            raise PreparationError(f"{where}: BUNIT {text!r} is counts, not "
                                   "counts/s, and there is no EXPTIME to turn the PHOTFLAM zero "
                                   "point (of 1 e-/s) into one for these values")
        return zero_point, 1.0 / exptime, "PHOTFLAM/EXPTIME"
    stated = f"BUNIT {text!r} is not a flux density, and no " if text else "no BUNIT, no "
    raise PreparationError(
        f"{where}: nothing says the zero point ({stated}"
        f"{'/'.join(ZERO_POINT_KEYWORDS)} or PHOTFLAM keyword); pass --zeropoint")


def pixel_scale_of(header, where: str, flag: float | None = None
                   ) -> tuple[float | None, str]:
    """(pixel side in arcsec, where it came from) or (None, "unknown")."""
    if flag is not None:
        return float(flag), "--pixel-scale"
    if header is None:
        return None, "unknown"
    if (wcs := _header_wcs(header, where)) is not None:
        to_arcsec = _wcs_arcsec_per_unit(wcs)
        m = wcs.pixel_scale_matrix * (to_arcsec or 0.0)
        area = abs(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0])
        sides = np.sqrt((m**2).sum(axis=0))  # per pixel axis, arcsec
        if area > 0:
            if abs(sides[0] / sides[1] - 1) > 0.01:
                raise PreparationError(f"{where}: pixels of {sides[0]:.4g}\" x "
                                       f"{sides[1]:.4g}\" are not square")
            return math.sqrt(area), "WCS"
    for key in PIXEL_SCALE_KEYWORDS:
        value = _number(header.get(key))
        if value is not None and value > 0:
            return value, key
    return None, "unknown"


def _header_wcs(header, where: str):
    """The 2-D astropy WCS of a header that has one (CD, CDELT or PC keywords), else None;
    PreparationError naming ``where`` for one astropy cannot read (the file's fault)."""
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    if header is None or not any(key in header for key in ("CD1_1", "CDELT1", "PC1_1")):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            return WCS(header, naxis=2)
        except Exception as error:
            raise PreparationError(f"{where}: unreadable WCS ({error})") from None


def _wcs_arcsec_per_unit(wcs) -> float | None:
    """Arcsec per unit of a 2-D WCS's axes: celestial axes are in degrees; a linear WCS counts
    only when both its CUNITs are angles (CDELT1 = 1 without CTYPE or CUNIT is a pixel
    count, not a degree, and would make a 1"/px cutout 3600"/px). None: not a sky WCS."""
    import astropy.units as u

    if wcs.has_celestial:
        return ARCSEC_PER_DEG
    units = [u.Unit(unit) if str(unit) else u.dimensionless_unscaled
             for unit in wcs.wcs.cunit]
    if units and all(unit == units[0] and unit.is_equivalent(u.arcsec) for unit in units):
        return float(units[0].to(u.arcsec))
    return None


def orientation_of(header) -> tuple[float, bool] | None:
    """(angle of North in degrees from the +y pixel axis (rows) towards +x (columns), East
    left: whether East lies 90 degrees counter-clockwise from North, as on the sky, not
    mirrored) of a header's celestial WCS; None without one."""
    try:
        wcs = _header_wcs(header, "")
    except PreparationError:  # the pixel scale's reading names an unreadable WCS
        return None
    if wcs is None or not wcs.has_celestial:
        return None
    sky = wcs.celestial
    m = sky.pixel_scale_matrix[[sky.wcs.lng, sky.wcs.lat]]  # rows: (East, North) per pixel
    if abs(np.linalg.det(m)) == 0:
        return None
    north = np.linalg.solve(m, [0.0, 1.0])  # the pixel step towards North
    return math.degrees(math.atan2(north[0], north[1])) + 0.0, bool(np.linalg.det(m) < 0)


def band_of(header, bands: Sequence[str]) -> str | None:
    """The model band a header's FILTER / BAND keyword names ("HSC-G", "g", "DECam r"), or
    None."""
    if header is None:
        return None
    for key in BAND_KEYWORDS:
        value = header.get(key)
        if not isinstance(value, str):
            continue
        tokens = [t for t in re.split(r"[^A-Za-z0-9]+", value.strip()) if t]
        for token in reversed(tokens):  # "HSC-G": the band is the last token
            for band in bands:
                if token == band or token.lower() == band.lower():
                    return band
    return None


def as_is_conflicts(header, model: ModelInputs) -> list[str]:
    """What the header of a cutout read as it is (no preparation: taken to be in the model's
    bands, nanomaggies and pixel scale already) says against that: its BANDS, zero point or
    pixel scale. Empty when it says nothing or agrees."""
    if header is None:
        return []
    said = []
    listed = header.get("BANDS")
    if isinstance(listed, str) and model.bands:  # no bands: a model that does not say them
        names = tuple(b.strip() for b in listed.split(","))
        if names != tuple(model.bands):
            said.append(f"bands {','.join(names)} (the model takes {','.join(model.bands)}, "
                        "in that order)")
    try:
        zero_point, factor, source = zero_point_of(header, "")
    except PreparationError:  # nothing it says gives a zero point; a unit it names may
        unit = str(header.get("BUNIT", "")).strip()
        zero_point, factor, source = None, 1.0, ""
        if unit or "PHOTFLAM" in header:
            said.append(f"values in {('BUNIT ' + repr(unit)) if unit else 'HST counts'} (the "
                        "model takes nanomaggies)")
    if zero_point is not None and (abs(zero_point - NANOMAGGY_ZEROPOINT) > AS_IS_TOLERANCE
                                   or factor != 1.0):
        said.append(f"zero point {zero_point:.4g} from {source} (the model takes nanomaggies, "
                    f"zero point {NANOMAGGY_ZEROPOINT:g})")
    try:
        scale, source = pixel_scale_of(header, "")
    except PreparationError:
        scale = None
    if scale is not None and model.pixel_scale is not None \
            and abs(scale / model.pixel_scale - 1.0) > AS_IS_TOLERANCE:
        said.append(f"pixels of {scale:.4g}\" from {source} (the model takes "
                    f"{model.pixel_scale:.4g}\")")
    return said


# --------------------------------------------------------------------------- reading


@contextlib.contextmanager
def _open(path: str | Path, band: str | None = None):
    """The open HDU list of a FITS file. A file cut short (an interrupted download) or
    otherwise corrupt fails when its data are read, inside the block, not when it opens: any
    error there is one bad cutout, named with its file."""
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise PreparationError(f"{path}: no such file" + (f" (band {band})" if band else ""))
    try:
        with fits.open(path, memmap=False) as hdul:
            yield hdul
    except PreparationError:
        raise
    except Exception as error:  # a corrupt file is one bad cutout, named
        raise PreparationError(f"{path}: unreadable FITS ({type(error).__name__}: "
                               f"{error})" + (f" (band {band})" if band else "")) from None


def _without_leading_axes(data: np.ndarray) -> np.ndarray:
    """``data`` without its leading axes of length 1 ((1, 1, H, W) -> (H, W)); the two image
    axes stay, whatever their length (np.squeeze made a (4, 1, 1) cube a line of 4 values)."""
    while data.ndim > 2 and data.shape[0] == 1:
        data = data[0]
    return data


def first_image(hdul) -> tuple[np.ndarray, object] | None:
    """(the data, unconverted, and header of the first image HDU holding at least 2-D data in
    an open HDU list, the header with the primary's keywords it lacks), or None if it has none.
    The one reading of "a FITS file's image" for preparation, the scan and the readers."""
    hdus = _image_hdus(hdul)
    if not hdus:
        return None
    k, hdu = hdus[0]
    return hdu.data, merged_header(hdul[0].header, hdu.header) if k else hdu.header.copy()


def _image_hdus(hdul) -> list[tuple[int, object]]:
    return [(k, hdu) for k, hdu in enumerate(hdul)
            if getattr(hdu, "is_image", False) and hdu.data is not None and hdu.data.ndim >= 2]


def read_plane(path: str | Path, band: str | None = None, what: str = "image"
               ) -> tuple[np.ndarray, object]:
    """(the first 2-D image of a FITS file as float64, its header with the primary's keywords
    it lacks); PreparationError naming the file (and ``band``)."""
    with _open(path, band) as hdul:
        image = first_image(hdul)
        if image is None:
            raise PreparationError(f"{path}: no {what} HDU with data"
                                   + (f" (band {band})" if band else ""))
        data, header = np.asarray(image[0], dtype=np.float64), image[1]
    data = _without_leading_axes(data)
    if data.ndim != 2:
        raise PreparationError(f"{path}: {what} of shape {data.shape}, expected one 2-D plane"
                               + (f" (band {band})" if band else ""))
    return data, header


def merged_header(primary, extension):
    """An extension header with the primary's keywords it lacks (zero points often sit in the
    primary header of a multi-extension file)."""
    merged = extension.copy()
    for card in primary.cards:
        if card.keyword and card.keyword not in merged and card.keyword not in (
                "SIMPLE", "EXTEND", "NAXIS", "NAXIS1", "NAXIS2", "BITPIX", "COMMENT",
                "HISTORY", ""):
            merged[card.keyword] = card.value
    return merged


def psf_fwhm(psf: np.ndarray, pixel_scale: float) -> float:
    """FWHM (arcsec) of a PSF image: the diameter of the circle with the area of the pixels
    above half the peak. Unlike second moments it ignores the wings (a Moffat's second moments
    exceed its FWHM's Gaussian equivalent by far), so it compares with a preset's FWHM."""
    above = int((psf >= 0.5 * float(np.max(psf))).sum())
    return 2.0 * math.sqrt(above / math.pi) * pixel_scale


def read_band_files(files: Mapping[str, Mapping[str, str | Path | None]]) -> list[BandPlane]:
    """Planes of a cutout delivered as one FITS file per band: ``files[band]`` holds ``sci``
    and optionally ``rms`` (per-pixel sigma) or ``weight`` (inverse variance) and ``psf`` (an
    image of the band's PSF, at its header's pixel scale or the science image's) paths."""
    planes = []
    for band, spec in files.items():
        sci = spec.get("sci")
        if not sci:
            raise PreparationError(f"no science file for band {band}")
        data, header = read_plane(sci, band)
        rms, rms_file = None, None
        if spec.get("rms"):
            rms, _ = read_plane(spec["rms"], band, "rms")
            rms_file = str(spec["rms"])
        elif spec.get("weight"):
            weight, _ = read_plane(spec["weight"], band, "weight")
            with np.errstate(divide="ignore"):
                rms = np.where(weight > 0, 1.0 / np.sqrt(np.clip(weight, 1e-300, None)), np.inf)
            rms_file = str(spec["weight"])
        if rms is not None and rms.shape != data.shape:
            raise PreparationError(f"{rms_file}: shape {rms.shape}, the science image {sci} "
                                   f"of band {band} has {data.shape}")
        fwhm = None
        if spec.get("psf"):
            psf, psf_header = read_plane(spec["psf"], band, "psf")
            scale = pixel_scale_of(psf_header, str(spec["psf"]))[0] \
                or pixel_scale_of(header, str(sci))[0]
            if scale is None:
                raise PreparationError(f"{spec['psf']}: no pixel scale for the PSF of band "
                                       f"{band} (nor in {sci})")
            fwhm = psf_fwhm(psf, scale)
        planes.append(BandPlane(band, data, str(sci), header, rms, rms_file, psf_fwhm=fwhm))
    return planes


def parse_band_map(text: str | None) -> dict[str, str] | None:
    """``"g=SCI_G,r=2"`` -> {"g": "SCI_G", "r": "2"}; ValueError naming ``--bands``."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        band, sep, where = part.partition("=")
        if not sep or not band.strip() or not where.strip():
            raise ValueError(f"--bands {text!r}: expected band=HDU pairs such as g=1,r=SCI_R, "
                             f"got {part!r}")
        out[band.strip()] = where.strip()
    return out


def read_cutout(path: str | Path, bands: Sequence[str],
                band_map: Mapping[str, str] | None = None) -> list[BandPlane]:
    """The planes of ``bands`` in one FITS file: a multi-extension file with one band per HDU,
    or a (bands, H, W) cube (see the module docstring for how bands are found)."""
    path = Path(path)
    with _open(path) as hdul:
        hdus = _image_hdus(hdul)
        if not hdus:
            raise PreparationError(f"{path}: no image HDU with data")
        primary = hdul[0].header
        first = hdus[0][1]
        if _without_leading_axes(first.data).ndim == 3:  # a cube, with its rms cube in an HDU "RMS"
            data = np.asarray(_without_leading_axes(first.data), dtype=np.float64)
            planes = _cube_planes(path, data, first.header, bands, band_map)
            rms = [h for _, h in hdus[1:] if h.name == "RMS" and h.data.shape == first.data.shape]
            if rms:
                sigma = np.asarray(_without_leading_axes(rms[0].data), dtype=np.float64)
                for plane in planes:
                    plane.rms = sigma[plane.index]
                    plane.rms_file = f"{path}[RMS]"
            return planes
        planes = {}
        if band_map:
            for band in bands:
                if band not in band_map:
                    raise PreparationError(f"{path}: --bands maps no HDU to band {band} (the "
                                           f"model needs {', '.join(bands)})")
                where = band_map[band]
                key = int(where) if where.isdigit() else where
                try:
                    hdu = hdul[key]
                except (KeyError, IndexError):
                    raise PreparationError(f"{path}: no HDU {where!r} for band {band}") from None
                if hdu.data is None or _without_leading_axes(hdu.data).ndim != 2:
                    raise PreparationError(f"{path}[{where}]: no 2-D image for band {band}")
                planes[band] = (f"{path}[{where}]", hdu)
        else:
            for k, hdu in hdus:
                band = band_of(hdu.header, bands) or (band_of(primary, bands)
                                                      if len(hdus) == 1 else None)
                if band is not None and band not in planes:
                    planes[band] = (f"{path}[{hdu.name or k}]", hdu)
            if len(hdus) == 1 and not planes and len(bands) == 1:
                planes[bands[0]] = (str(path), hdus[0][1])
        missing = [b for b in bands if b not in planes]
        if missing:
            found = [f"{hdu.name or k}: {hdu.header.get('FILTER', hdu.header.get('BAND'))!r}"
                     for k, hdu in hdus]
            raise PreparationError(f"{path}: no HDU for band {missing[0]} (image HDUs and their "
                                   f"FILTER/BAND: {', '.join(found)}); pass --bands "
                                   f"{missing[0]}=<HDU name or index>")
        return [BandPlane(band, np.asarray(_without_leading_axes(planes[band][1].data),
                                           dtype=np.float64),
                          planes[band][0], merged_header(primary, planes[band][1].header))
                for band in bands]


def _cube_planes(path: Path, data: np.ndarray, header, bands: Sequence[str],
                 band_map: Mapping[str, str] | None) -> list[BandPlane]:
    if band_map:
        index = {}
        for band in bands:
            where = band_map.get(band)
            if where is None or not where.isdigit() or int(where) >= data.shape[0]:
                raise PreparationError(f"{path}: --bands gives no plane (0-{data.shape[0] - 1})"
                                       f" of the cube for band {band} (it names "
                                       f"{', '.join(band_map)}; the model needs "
                                       f"{', '.join(bands)})")
            index[band] = int(where)
    else:
        listed = header.get("BANDS")
        if isinstance(listed, str):
            names = [b.strip() for b in listed.split(",")]
            if len(names) != data.shape[0]:
                raise PreparationError(f"{path}: the cube's BANDS {listed!r} names {len(names)} "
                                       f"bands, but it has {data.shape[0]} planes; pass "
                                       f"--bands g=0,r=1,... to say which plane is which")
            missing = [b for b in bands if b not in names]
            if missing:
                raise PreparationError(f"{path}: the cube's BANDS {listed!r} has no band "
                                       f"{missing[0]}")
            index = {b: names.index(b) for b in bands}
        elif data.shape[0] == len(bands):
            index = {b: k for k, b in enumerate(bands)}
        else:
            raise PreparationError(f"{path}: a cube of {data.shape[0]} planes, no BANDS keyword, "
                                   f"and the model needs {len(bands)} bands "
                                   f"({', '.join(bands)}); pass --bands g=0,r=1,...")
    return [BandPlane(b, data[index[b]], f"{path}[plane {index[b]}]", header, index=index[b])
            for b in bands]


# --------------------------------------------------------------------------- preparing


def cutout_seed(cutout_id: str, seed: int = 0) -> int:
    """The noise seed of a cutout: the same id (and ``seed``) gives the same padding."""
    digest = hashlib.sha256(f"{seed}:{cutout_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _fit_to_stamp(image: np.ndarray, shape: tuple[int, int]
                  ) -> tuple[np.ndarray, tuple[tuple[int, int], tuple[int, int]],
                             tuple[float, float]]:
    """Centre-crop (B, h, w) ``image`` to at most ``shape``; the padding (before, after) still
    needed per axis to reach it; and where the image's centre then lies in the stamp, in
    pixels (rows, columns) from the stamp's centre: half a pixel when the sizes' parities
    differ, since whole pixels are cut or added."""
    pads, offsets = [], []
    for axis, want in ((1, shape[0]), (2, shape[1])):
        have = image.shape[axis]
        lo = max(have - want, 0) // 2
        image = np.take(image, np.arange(lo, lo + min(have, want)), axis=axis)
        extra = max(want - have, 0)
        pads.append((extra // 2, extra - extra // 2))
        offsets.append((have - 1) / 2 - lo + extra // 2 - (want - 1) / 2)
    return image, (pads[0], pads[1]), (offsets[0], offsets[1])


def prepare_cutout(cutout, model: ModelInputs, *, cutout_id: str = "",
                   zero_point: float | None = None, pixel_scale: float | None = None,
                   band_map: Mapping[str, str] | None = None, seed: int = 0
                   ) -> tuple[np.ndarray, Preparation]:
    """(the (bands, H, W) float32 stamp in the model's contract, what was done).

    cutout: a FITS path (multi-extension or cube, :func:`read_cutout`), a mapping band ->
        {"sci": path, "rms": path, "weight": path, "psf": path} (:func:`read_band_files`), a
        list of :class:`BandPlane`, or a (bands, H, W) array in the model's band order (with
        ``zero_point`` and, for a model that states its scale, ``pixel_scale``).
    zero_point, pixel_scale: the ``--zeropoint`` and ``--pixel-scale`` flags (win over headers).
    band_map: band -> HDU (name or index) or cube plane (``--bands``).
    seed: mixed with ``cutout_id`` for the padding noise.
    """
    bands = tuple(model.bands)
    if isinstance(cutout, (str, Path)):
        planes = read_cutout(cutout, bands, band_map)
    elif isinstance(cutout, Mapping):
        missing = [b for b in bands if b not in cutout]
        if missing:
            named = ", ".join(str(s.get("sci")) for s in cutout.values())
            raise PreparationError(f"cutout {cutout_id}: no file for band {missing[0]} "
                                   f"(files: {named})")
        planes = read_band_files({b: cutout[b] for b in bands})
    elif isinstance(cutout, np.ndarray):
        if cutout.ndim != 3 or cutout.shape[0] != len(bands):
            raise PreparationError(f"cutout {cutout_id}: array of shape {cutout.shape}, "
                                   f"expected ({len(bands)}, H, W) in the bands {bands}")
        planes = [BandPlane(b, np.asarray(cutout[k], dtype=np.float64), f"array[{k}]")
                  for k, b in enumerate(bands)]
    else:
        planes = list(cutout)
    shapes = {p.data.shape for p in planes}
    if len(shapes) != 1:
        raise PreparationError(f"cutout {cutout_id}: bands of different shapes "
                               + ", ".join(f"{p.band} {p.data.shape} ({p.file})"
                                           for p in planes))
    record = Preparation(id=cutout_id, files=";".join(p.file for p in planes),
                         input_shape="x".join(map(str, planes[0].data.shape)),
                         seed=cutout_seed(cutout_id, seed))
    zps, sources, fluxes, rmses = [], [], [], []
    for plane in planes:
        zp, factor, source = zero_point_of(plane.header, f"{plane.file} (band {plane.band})",
                                           zero_point)
        unit = to_nanomaggies(zp) * factor
        fluxes.append(plane.data * unit)
        rmses.append(None if plane.rms is None else plane.rms * unit)
        zps.append(f"{plane.band}={zp:g}")
        sources.append(f"{plane.band}={source}")
    record.zero_points, record.zero_point_from = ",".join(zps), ",".join(sources)
    # The PSF is recorded, not matched: a model sees its training seeing; a cutout much sharper
    # or blurrier than that is flagged here for the user to judge.
    if any(p.psf_fwhm is not None for p in planes):
        record.psf_fwhm = ",".join(f"{p.band}={p.psf_fwhm:.3g}" for p in planes
                                   if p.psf_fwhm is not None)
    if model.psf_fwhm is not None:
        record.model_psf_fwhm = ",".join(f"{b}={f:.3g}" for b, f in zip(bands, model.psf_fwhm,
                                                                         strict=True))
    scales = [pixel_scale_of(p.header, p.file, pixel_scale) for p in planes]
    known = {round(s, 9) for s, _ in scales if s is not None}
    if len(known) > 1:
        raise PreparationError(f"cutout {cutout_id}: bands at different pixel scales "
                               + ", ".join(f"{p.band} {s}" for p, (s, _) in
                                           zip(planes, scales, strict=True)))
    # one band's header may say it where another's does not
    scale_in, record.pixel_scale_from = next(((s, f) for s, f in scales if s is not None),
                                             scales[0])
    if (turned := next(filter(None, map(orientation_of, (p.header for p in planes))), None)):
        record.north_angle, east_left = turned
        record.east_left = str(east_left)
    flux = np.stack(fluxes)
    covered = flux.shape[1] * flux.shape[2]  # model pixels the input covers, the stamp or not
    cutout_file = re.sub(r"\[[^\]]*\]$", "", planes[0].file)  # the file, not its plane or HDU
    rms = None if any(r is None for r in rmses) else np.stack(rmses)
    # no data: a non-finite value, or zero weight (an infinite rms): chip gaps, survey edges
    masked = ~np.isfinite(flux) if rms is None else ~(np.isfinite(flux) & np.isfinite(rms))
    flux = np.where(masked, 0.0, flux)
    if rms is not None:
        rms = np.where(masked, np.nan, rms)
    if model.pixel_scale is not None and scale_in is None:
        raise PreparationError(f"{planes[0].file}: no pixel scale (no celestial WCS, no "
                               f"{'/'.join(PIXEL_SCALE_KEYWORDS)} keyword); pass --pixel-scale")
    if scale_in is not None and model.pixel_scale is None:
        raise PreparationError(f"the model does not say its pixel scale (a bare torch "
                               f"checkpoint); pass --model-pixel-scale to resample "
                               f"{planes[0].file} ({scale_in:.4g}\"/pixel)")
    if scale_in is not None:
        record.pixel_scale_in = scale_in
        record.scale_factor = scale_in / model.pixel_scale
        if record.scale_factor > MAX_SCALE_FACTOR:
            raise PreparationError(
                f"{planes[0].file}: its pixels of {scale_in:.4g}\" ({record.pixel_scale_from}) "
                f"would each cover {record.scale_factor:.3g} x {record.scale_factor:.3g} of the "
                f"model's {model.pixel_scale:.4g}\" pixels; no survey is that much coarser "
                f"than the model's: is the scale right? (--pixel-scale sets it)")
        if abs(record.scale_factor - 1.0) > SCALE_TOLERANCE:
            # straight onto the stamp's grid where the cutout covers it (same centre, so no
            # crop moves the centre); else onto the largest grid it covers fully with the
            # stamp's parity, so the padding is even on both sides
            sides = [int(math.floor(n * record.scale_factor + 1e-9)) for n in flux.shape[1:]]
            covered = math.prod(sides)
            n_out = tuple(_resampled_side(side, want)
                          for side, want in zip(sides, model.stamp_shape, strict=True))
            _check_coverage(n_out[0] * n_out[1], 0, model.stamp_shape, cutout_file)
            area = record.scale_factor ** 2  # model pixels per input pixel
            flux = rebin_flux(flux, scale_in, model.pixel_scale, n_out)
            masked = rebin_flux(masked.astype(np.float64), scale_in, model.pixel_scale,
                                n_out) * area > 1e-6  # touched by a pixel without data
            if rms is not None:
                rms = np.sqrt(rebin_flux(np.nan_to_num(rms) ** 2, scale_in, model.pixel_scale,
                                         n_out, variance=True))
            record.resampling = "rebin_flux"
    flux, pads, offset = _fit_to_stamp(flux, model.stamp_shape)
    masked = _fit_to_stamp(masked, model.stamp_shape)[0]
    if rms is not None:
        rms = np.where(masked, np.nan, _fit_to_stamp(rms, model.stamp_shape)[0])
    before = flux.shape[1] * flux.shape[2]
    record.crop_pixels = max(covered - before, 0)
    record.centre_dy, record.centre_dx = offset
    record.masked_pixels = int(masked.any(axis=0).sum())
    _check_coverage(before, record.masked_pixels, model.stamp_shape, cutout_file)
    # one clipping per band gives the sky level and, without an rms map, the sky sigma
    _, sky, clipped_sigmas = zip(*(_clipped_border(f) for f in np.where(masked, np.nan, flux)),
                                 strict=True)
    if rms is not None and all(np.isfinite(_edge(r)).any() for r in rms):
        sigmas = [float(np.nanmedian(_edge(r))) for r in rms]
        record.noise_source = "rms map"
    else:
        sigmas = list(clipped_sigmas)
        record.noise_source = "border sigma-clipped std"
    record.sky_level = ",".join(f"{b}={level / s:.3g}" if s > 0 else f"{b}=nan"
                                for b, level, s in zip(bands, sky, sigmas, strict=True))
    record.sky_not_subtracted = ",".join(
        b for b, level, s in zip(bands, sky, sigmas, strict=True)
        if s > 0 and abs(level / s) > SKY_LEVEL_LIMIT)
    if any(sum(p) for p in pads) or record.masked_pixels:
        rng = np.random.default_rng(record.seed)
        out = np.empty((len(bands), *model.stamp_shape), dtype=np.float64)
        for k, sigma in enumerate(sigmas):
            out[k] = rng.normal(0.0, sigma, model.stamp_shape)
            inside = out[k, pads[0][0]:pads[0][0] + flux.shape[1],
                         pads[1][0]:pads[1][0] + flux.shape[2]]
            inside[~masked[k]] = flux[k][~masked[k]]
        record.padding_pixels = int(out.shape[1] * out.shape[2] - before)
        record.noise_sigma = ",".join(f"{b}={s:.4g}" for b, s in zip(bands, sigmas, strict=True))
        flux = out
    else:
        record.noise_source = "none"
    return flux.astype(np.float32), record


def _resampled_side(covered: int, want: int) -> int:
    """Model pixels along one axis of an input that covers ``covered`` model pixels fully: the
    stamp's ``want`` where it covers them, else the most it covers with ``want``'s parity."""
    return want if covered >= want else max(covered - (want - covered) % 2, 0)


def _check_coverage(data_pixels: int, masked_pixels: int, stamp: tuple[int, int], where: str
                    ) -> None:
    """Refuse a cutout whose own data would fill less than MIN_DATA_FRACTION of the stamp: the
    rest would be noise lensbench made up (padding, masked pixels), and the model would score
    that."""
    total = stamp[0] * stamp[1]
    if data_pixels - masked_pixels < MIN_DATA_FRACTION * total:
        raise PreparationError(
            f"{where}: its data would fill {data_pixels - masked_pixels} of the model's "
            f"{stamp[0]}x{stamp[1]} stamp pixels ({data_pixels} from the cutout, "
            f"{masked_pixels} of them without data); at least {MIN_DATA_FRACTION:.0%} must "
            "hold the cutout's data, not padding noise")


def _clipped_border(image: np.ndarray, width: int = BORDER_WIDTH) -> tuple[float, float, float]:
    """3-sigma-clipped (mean, median, std) of a band's border pixels with data (NaN: none).
    The median is the sky level a sky-subtracted cutout has near 0 (prepared.csv gives it in
    sky sigmas), the std the sky sigma of a cutout without an rms map."""
    from astropy.stats import sigma_clipped_stats

    border = _edge(image, width)
    border = border[np.isfinite(border)]
    if not border.size:
        return math.nan, math.nan, math.nan
    return tuple(map(float, sigma_clipped_stats(border, sigma=3.0)))


def _edge(image: np.ndarray, width: int = BORDER_WIDTH) -> np.ndarray:
    return np.concatenate([image[:width].ravel(), image[-width:].ravel(),
                           image[:, :width].ravel(), image[:, -width:].ravel()])
