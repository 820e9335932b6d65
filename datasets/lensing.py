"""Batched torch kernels for strong lensing: SIE and external-shear deflections, their Hessians,
magnification, and elliptical Sersic light.

Pure functions of tensors that broadcast: give parameters shape ``(N, 1, 1)`` and coordinates
``(H, W)`` (or ``(N, H, W)``) to evaluate N systems on a grid at once. Angles are in arcsec,
position angles ``phi`` in radians (counter-clockwise from the x axis), in float32 or float64
(whatever the inputs are). We write these instead of calling lenstronomy because they run batched
(a whole training set in one call, on CPU or GPU); ``bench perf sim`` measures the gain.

Conventions are lenstronomy's and caustics' (docs/references.md, "Conventions"): ellipticity
``e1, e2 = (1-q)/(1+q) (cos 2phi, sin 2phi)``; the SIE Einstein radius is the product-average
(intermediate-axis) one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import gamma as gamma_function
from scipy.special import gammaincinv

# Below this value of f = sqrt(1 - q^2) the SIE uses Taylor series: atan(fu)/f and atanh(fu)/f are
# 0/0 at q = 1. The series to fifth order is exact to < 1e-13 there.
_ROUND_LIMIT = 1e-2


def _rotate(x, y, phi):
    """Coordinates in the frame whose x axis lies along position angle ``phi``."""
    cos, sin = torch.cos(phi), torch.sin(phi)
    return cos * x + sin * y, -sin * x + cos * y


def _frame(x, y, phi, center_x, center_y, *params):
    """`_rotate` of the offsets from the centre, as fresh tensors of the shape and dtype of the
    kernel's result (the broadcast of the coordinates and all ``params``).

    The kernels then run their remaining arithmetic in place on these: the same operations on the
    same operands in the same order (identical results), but without a new 0.5-2 MB temporary
    per step, which cost up to 3x the arithmetic on the simulator's grids (allocator page faults,
    measured)."""
    phi = torch.as_tensor(phi)
    dx, dy = x - center_x, y - center_y
    if (dx.shape == dy.shape == _broadcast_shape(dx.shape, phi.shape)
            and torch.result_type(dx, phi) == dx.dtype == dy.dtype):
        # _rotate in place on the fresh offsets (full-size when x, y are, e.g. a deflected grid)
        cos, sin = torch.cos(phi), torch.sin(phi)
        xr = (cos * dx).add_(sin * dy)
        yr = dx.mul_(-sin).add_(dy.mul_(cos))
    else:  # e.g. a row and a column of a grid: the rotation broadcasts them to the full size
        xr, yr = _rotate(dx, dy, phi)
    shape = _broadcast_shape(xr.shape, *(getattr(v, "shape", ()) for v in params))
    dtype = xr.dtype
    for value in params:
        if isinstance(value, torch.Tensor) and value.dtype != dtype:
            dtype = torch.result_type(torch.empty(0, dtype=dtype), value)
    if xr.shape != shape or xr.dtype != dtype:
        xr = xr.to(dtype).expand(shape).clone()
        yr = yr.to(dtype).expand(shape).clone()
    return xr, yr


def _broadcast_shape(*shapes) -> torch.Size:
    """``torch.broadcast_shapes`` in plain Python: that one took ~5% of the simulator's time,
    called a few times per kernel (measured)."""
    ndim = max(len(shape) for shape in shapes)
    out = [1] * ndim
    for shape in shapes:
        for axis, size in enumerate(shape, ndim - len(shape)):
            if size != 1:
                if out[axis] not in (1, size):
                    raise RuntimeError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
                out[axis] = size
    return torch.Size(out)


def _rotate_back(x, y, phi):
    cos, sin = torch.cos(phi), torch.sin(phi)
    return cos * x - sin * y, sin * x + cos * y


def _check_axis_ratio(q):
    q = torch.as_tensor(q)
    if q.numel() == 0:
        return
    low, high = torch.aminmax(q)  # one pass, not five: this runs in every kernel call
    if not (float(low) > 0 and float(high) <= 1):  # NaN fails too
        raise ValueError(f"axis ratio q must lie in (0, 1]; got values {q[~((q > 0) & (q <= 1))]}")


def sie_deflection(x, y, theta_e, q, phi, center_x=0.0, center_y=0.0):
    """Deflection (alpha_x, alpha_y) in arcsec of a singular isothermal ellipsoid.

    Keeton (2002) / Kormann et al. (1994) form in the major-axis frame, with f = sqrt(1-q^2) and
    psi = sqrt(q^2 x^2 + y^2): alpha_x = theta_E sqrt(q)/f atan(f x/psi),
    alpha_y = theta_E sqrt(q)/f atanh(f y/psi). Exact at q = 1 (series in f) and finite at the
    centre, where the deflection is set to 0 (its limit depends on direction).

    theta_e: Einstein radius (arcsec, > 0); q: axis ratio in (0, 1]; phi: major-axis angle (rad).
    """
    _check_axis_ratio(q)
    xr, yr = _frame(x, y, phi, center_x, center_y, theta_e, q)
    q = torch.as_tensor(q, dtype=xr.dtype, device=xr.device)
    f = torch.sqrt((1.0 - q) * (1.0 + q))
    # psi = 0 only at the centre, where xr = yr = 0: clamping gives u = v = 0 there, alpha = 0.
    # In place on our own temporaries, step for step as the formula reads (see `_frame`).
    psi = (q * q * xr).mul_(xr).add_(yr * yr).sqrt_().clamp_(min=torch.finfo(xr.dtype).tiny)
    u, v = xr.div_(psi), yr.div_(psi)
    scale = theta_e * torch.sqrt(q)
    if not torch.any(f <= _ROUND_LIMIT):  # the common case: one pass each, no series branch
        amplitude = scale / f
        alpha_x = u.mul_(f).atan_().mul_(amplitude)
        alpha_y = v.mul_(f).atanh_().mul_(amplitude)
        # _rotate_back, reusing the two buffers: cos ax - sin ay, sin ax + cos ay.
        cos, sin = torch.cos(phi), torch.sin(phi)
        out_x = (cos * alpha_x).sub_(sin * alpha_y)
        return out_x, alpha_x.mul_(sin).add_(alpha_y.mul_(cos))
    f_safe = torch.where(f > _ROUND_LIMIT, f, torch.ones_like(f))
    zu2, zv2 = (f * u) ** 2, (f * v) ** 2
    atan_over_f = torch.where(
        f > _ROUND_LIMIT, torch.atan(f * u) / f_safe, u * (1 - zu2 / 3 + zu2 * zu2 / 5)
    )
    atanh_over_f = torch.where(
        f > _ROUND_LIMIT, torch.atanh(f * v) / f_safe, v * (1 + zv2 / 3 + zv2 * zv2 / 5)
    )
    return _rotate_back(scale * atan_over_f, scale * atanh_over_f, phi)


def sie_hessian(x, y, theta_e, q, phi, center_x=0.0, center_y=0.0):
    """Second derivatives (f_xx, f_xy, f_yy) of the SIE lensing potential (dimensionless).

    In the major-axis frame, differentiating the deflection above gives the closed form
    H = theta_E sqrt(q) / (psi r^2) [[y^2, -xy], [-xy, x^2]], so kappa = theta_E sqrt(q) / (2 psi).
    It is rotated back to the sky frame. Zero at the exact centre (a singular point).
    """
    _check_axis_ratio(q)
    xr, yr = _rotate(x - center_x, y - center_y, phi)
    psi = torch.sqrt(q * q * xr * xr + yr * yr)
    r2 = xr * xr + yr * yr
    denominator = psi * r2
    denominator = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    scale = theta_e * torch.sqrt(q) / denominator
    hxx, hxy, hyy = scale * yr * yr, -scale * xr * yr, scale * xr * xr
    cos, sin = torch.cos(phi), torch.sin(phi)
    # H_sky = R^T H_rot R, with R the rotation into the major-axis frame.
    fxx = cos * cos * hxx - 2 * cos * sin * hxy + sin * sin * hyy
    fyy = sin * sin * hxx + 2 * cos * sin * hxy + cos * cos * hyy
    fxy = cos * sin * (hxx - hyy) + (cos * cos - sin * sin) * hxy
    return fxx, fxy, fyy


def shear_deflection(x, y, gamma1, gamma2, center_x=0.0, center_y=0.0):
    """Deflection (arcsec) of an external shear: alpha = (g1 x + g2 y, g2 x - g1 y) about the
    centre (the potential 1/2 g1 (x^2 - y^2) + g2 x y, as lenstronomy's SHEAR)."""
    dx, dy = x - center_x, y - center_y
    return gamma1 * dx + gamma2 * dy, gamma2 * dx - gamma1 * dy


def shear_hessian(gamma1, gamma2):
    """(f_xx, f_xy, f_yy) of an external shear: constant (g1, g2, -g1)."""
    return gamma1, gamma2, -gamma1


def magnification(fxx, fxy, fyy):
    """Signed point magnification 1 / det(I - H) from the Hessian of the total potential.

    Infinite on critical curves (det = 0), as the physics says."""
    return 1.0 / ((1.0 - fxx) * (1.0 - fyy) - fxy * fxy)


def sersic_b(n):
    """The Sersic constant b_n with Gamma(2n) = 2 gamma(2n, b_n) (half the light inside R_e),
    solved exactly with scipy's inverse incomplete gamma function. ``n``: array-like, numpy."""
    return gammaincinv(2.0 * np.asarray(n, dtype=np.float64), 0.5)


def sersic_flux_to_amplitude(total_flux, r_eff, n):
    """Surface brightness at R_e (flux / arcsec^2) of a Sersic profile of given total flux.

    Total flux = I_e R_e^2 2 pi n e^{b_n} b_n^{-2n} Gamma(2n); the product-average elliptical
    radius keeps the area of the isophotes, so q does not enter. numpy in, numpy out."""
    n = np.asarray(n, dtype=np.float64)
    b = sersic_b(n)
    integral = 2 * math.pi * n * np.exp(b) * b ** (-2 * n) * gamma_function(2 * n)
    return np.asarray(total_flux) / (np.asarray(r_eff) ** 2 * integral)


def sersic_profile(x, y, amplitude, r_eff, n, q, phi, center_x=0.0, center_y=0.0, b_n=None):
    """Elliptical Sersic surface brightness I_e exp(-b_n ((R/R_e)^(1/n) - 1)).

    R = sqrt(q x'^2 + y'^2 / q) in the major-axis frame (the product-average radius of lenstronomy's
    SERSIC_ELLIPSE). amplitude: I_e (flux / arcsec^2); r_eff: arcsec; n: Sersic index; q in (0, 1];
    b_n: optional precomputed ``sersic_b(n)`` as a tensor (defaults to computing it).
    """
    _check_axis_ratio(q)
    if b_n is None:
        b_n = torch.as_tensor(sersic_b(torch.as_tensor(n).cpu().numpy()))
    b_n = torch.as_tensor(b_n, dtype=x.dtype, device=x.device)
    xr, yr = _frame(x, y, phi, center_x, center_y, amplitude, r_eff, n, q, b_n)
    # In place, step for step as the formula reads (see `_frame`).
    radius = (q * xr).mul_(xr).add_(yr.mul_(yr).div_(q)).sqrt_()
    return radius.div_(r_eff).pow_(1.0 / n).sub_(1.0).mul_(-b_n).exp_().mul_(amplitude)


def sersic_profile_isophotes(x, y, amplitude, r_eff, n, q, phi, center_x, center_y, inner_q,
                             twist, a4, b_n):
    """:func:`sersic_profile` whose isophotes change shape with radius, as early types' do.

    At the centre the isophotes have axis ratio ``inner_q`` and position angle ``phi - twist``;
    they turn to ``q`` and ``phi`` with the weight R^2 / (R^2 + (r_eff / 2)^2) of the circular
    radius R (half-way at half the half-light radius). ``a4`` is the fourth-order Fourier
    deviation a4/a of an isophote's radius, r(theta) = r (1 + a4 cos 4 theta) from the local
    major axis: > 0 discy, < 0 boxy. The elliptical radius keeps the area of every ellipse, so
    the total flux is the Sersic's to second order in a4. With ``inner_q = q`` and
    ``twist = a4 = 0`` it is :func:`sersic_profile`."""
    _check_axis_ratio(q)
    _check_axis_ratio(inner_q)
    dx, dy = x - center_x, y - center_y
    r2 = dx * dx + dy * dy
    outer = r2 / (r2 + (0.5 * r_eff) ** 2)
    local_q = inner_q + (q - inner_q) * outer
    xr, yr = _rotate(dx, dy, phi - twist * (1 - outer))
    xx, yy = xr * xr, yr * yr
    # cos 4 theta from the frame coordinates (no atan2): ((x^2 - y^2)^2 - 4 x^2 y^2) / rho^4.
    rho4 = ((xx + yy) ** 2).clamp_min(1e-30)
    cos4 = ((xx - yy) ** 2 - 4 * xx * yy) / rho4
    radius = torch.sqrt(local_q * xx + yy / local_q) / (1 + a4 * cos4)
    return amplitude * torch.exp(-b_n * ((radius / r_eff) ** (1.0 / n) - 1.0))


def gaussian_profile(x, y, total_flux, half_light_radius, center_x=0.0, center_y=0.0):
    """Circular Gaussian surface brightness (flux / arcsec^2) of given total flux and half-light
    radius (arcsec; sigma = R_e / sqrt(2 ln 2)). Used for compact star-forming clumps: no rotation
    or power, so ~3x cheaper than a Sersic on the same grid."""
    sigma2 = half_light_radius**2 / (2.0 * math.log(2.0))
    r2 = (x - center_x) ** 2 + (y - center_y) ** 2
    return total_flux / (2.0 * math.pi * sigma2) * torch.exp(-0.5 * r2 / sigma2)


# Grid for counting images (triangle mapping), in units of theta_E about the lens centre.
IMAGE_GRID_HALF_WIDTH, IMAGE_GRID_POINTS, IMAGE_GRID_HOLE = 2.5, 61, 0.1
LENS_KEYS = ("theta_e", "q", "phi", "gamma1", "gamma2", "lens_x", "lens_y")


def source_plane(x, y, *, theta_e, q, phi, gamma1, gamma2, lens_x, lens_y):
    """Source-plane positions (arcsec) of image-plane points x, y under SIE + external shear,
    both centred on (lens_x, lens_y). Parameters broadcast against x, y (e.g. shape (n, 1, 1))."""
    ax, ay = sie_deflection(x, y, theta_e, q, phi, lens_x, lens_y)
    sx, sy = shear_deflection(x, y, gamma1, gamma2, lens_x, lens_y)
    # (x - ax) - sx, written into the deflection's own buffers.
    return torch.sub(x, ax, out=ax).sub_(sx), torch.sub(y, ay, out=ay).sub_(sy)


def count_images(lens: dict, source_x, source_y) -> torch.Tensor:
    """Number of images (n, K) of K point sources per system (positions (n, K), arcsec).

    ``lens`` holds the LENS_KEYS as tensors of shape (n, 1, 1). Triangles of an image-plane grid
    (+-2.5 theta_E or wider) are mapped to the source plane; a source has as many images as mapped
    triangles containing it (Schneider, Ehlers & Falco 1992, sec. 6.1.1). Triangles within
    0.1 theta_E of the SIE's singular centre are skipped (they map onto the cut, and the images
    there are infinitely demagnified)."""
    dtype, device = source_x.dtype, source_x.device
    theta = lens["theta_e"]
    # Images lie within |beta| + theta_E (1 + |gamma|) of the centre: widen the grid if needed.
    offset = torch.hypot(source_x - lens["lens_x"][:, :, 0], source_y - lens["lens_y"][:, :, 0])
    half = max(IMAGE_GRID_HALF_WIDTH, 1.5 + float((offset / theta[:, :, 0]).max()))
    points = math.ceil(IMAGE_GRID_POINTS * half / IMAGE_GRID_HALF_WIDTH) | 1
    u = torch.linspace(-half, half, points, dtype=dtype, device=device)
    v_unit, u_unit = torch.meshgrid(u, u, indexing="ij")
    near = (u_unit**2 + v_unit**2) < IMAGE_GRID_HOLE**2
    hole = near[:-1, :-1] | near[1:, :-1] | near[:-1, 1:] | near[1:, 1:]
    valid = ~hole
    # Row and column of the grid (broadcast by the kernels: the same values, O(points) work).
    bx, by = source_plane(u[None, :] * theta + lens["lens_x"], u[:, None] * theta + lens["lens_y"],
                          **lens)
    corners = [(slice(None, -1), slice(None, -1)), (slice(1, None), slice(None, -1)),
               (slice(None, -1), slice(1, None)), (slice(1, None), slice(1, None))]
    cx = [bx[:, None, r, c] for r, c in corners]  # (n, 1, cells along y, cells along x)
    cy = [by[:, None, r, c] for r, c in corners]
    sx, sy = source_x[:, :, None, None], source_y[:, :, None, None]  # (n, K, 1, 1)

    def side(a, b):  # (b - a) x (s - a): its sign says on which side of edge a -> b s lies
        return (sy - cy[a]).mul_(cx[b] - cx[a]).sub_((sx - cx[a]).mul_(cy[b] - cy[a]))

    total = torch.zeros(source_x.shape, dtype=torch.int64, device=device)
    for a, b, d in ((0, 1, 2), (3, 2, 1)):  # each grid cell is split into two triangles
        s1, s2, s3 = side(a, b), side(b, d), side(d, a)
        # All three >= 0 or all <= 0 (a NaN in neither), as min >= 0 or max <= 0.
        low = torch.minimum(s1, s2)
        high = torch.maximum(s1, s2, out=s1)
        inside = (torch.minimum(low, s3, out=low) >= 0) | (torch.maximum(high, s3, out=high) <= 0)
        total += (inside & valid).sum(dim=(-2, -1))
    return total
