"""Lensing kernels against lenstronomy (an independent reference) and closed forms."""

import itertools
import math

import numpy as np
import pytest
import torch
from lensbench.datasets import lensing

lenstronomy = pytest.importorskip("lenstronomy", reason="lenstronomy is the test-only reference")
from lenstronomy.LensModel.lens_model import LensModel  # noqa: E402
from lenstronomy.Util import param_util  # noqa: E402

Q_VALUES = [0.2, 0.5, 0.8, 0.95, 0.999]
PHI_VALUES = [-1.2, 0.0, 0.4, 1.5]
THETA_E_VALUES = [0.3, 1.0, 2.5]
GRID = np.linspace(-3.1, 2.9, 41)  # avoids the exact centre, which is tested separately


def _grid_positions():
    x, y = np.meshgrid(GRID, GRID)
    return x.ravel(), y.ravel()


def _reference_deflection(theta_e, q, phi, gamma1, gamma2, cx, cy):
    e1, e2 = param_util.phi_q2_ellipticity(phi, q)
    model = LensModel(["SIE", "SHEAR"])
    kwargs = [
        {"theta_E": theta_e, "e1": e1, "e2": e2, "center_x": cx, "center_y": cy},
        {"gamma1": gamma1, "gamma2": gamma2, "ra_0": cx, "dec_0": cy},
    ]
    x, y = _grid_positions()
    return model.alpha(x, y, kwargs), model.hessian(x, y, kwargs)


def _ours(theta_e, q, phi, gamma1, gamma2, cx, cy, dtype):
    x, y = (torch.tensor(v, dtype=dtype) for v in _grid_positions())
    params = [torch.tensor(v, dtype=dtype) for v in (theta_e, q, phi, gamma1, gamma2)]
    ax, ay = lensing.sie_deflection(x, y, *params[:3], cx, cy)
    sx, sy = lensing.shear_deflection(x, y, params[3], params[4], cx, cy)
    return (ax + sx).double().numpy(), (ay + sy).double().numpy()


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_sie_shear_deflection_matches_lenstronomy(dtype, tolerance):
    worst = 0.0
    for theta_e, q, phi in itertools.product(THETA_E_VALUES, Q_VALUES, PHI_VALUES):
        cx, cy, g1, g2 = 0.13, -0.21, 0.05, -0.03
        (rx, ry), _ = _reference_deflection(theta_e, q, phi, g1, g2, cx, cy)
        ox, oy = _ours(theta_e, q, phi, g1, g2, cx, cy, dtype)
        worst = max(worst, np.max(np.abs(ox - rx)), np.max(np.abs(oy - ry)))
    assert worst < tolerance, f"max |alpha - alpha_lenstronomy| = {worst:.2e} arcsec"


def test_sie_hessian_matches_lenstronomy_deflection_derivatives():
    # lenstronomy's own NIE Hessian is a forward difference with a 1e-8 step (noisy to ~1e-5), so
    # the reference is a central difference of lenstronomy's deflection with a 1e-5 step.
    step = 1e-5
    x, y = _grid_positions()
    for theta_e, q, phi in itertools.product(THETA_E_VALUES, [0.3, 0.7, 0.95], PHI_VALUES):
        e1, e2 = param_util.phi_q2_ellipticity(phi, q)
        model = LensModel(["SIE"])
        kwargs = [{"theta_E": theta_e, "e1": e1, "e2": e2, "center_x": 0.0, "center_y": 0.0}]
        ax_px, ay_px = model.alpha(x + step, y, kwargs)
        ax_mx, ay_mx = model.alpha(x - step, y, kwargs)
        ax_py, ay_py = model.alpha(x, y + step, kwargs)
        ax_my, ay_my = model.alpha(x, y - step, kwargs)
        reference = ((ax_px - ax_mx) / (2 * step), (ax_py - ax_my) / (2 * step),
                     (ay_py - ay_my) / (2 * step))
        fxx, fxy, fyy = lensing.sie_hessian(
            torch.tensor(x), torch.tensor(y),
            *(torch.tensor(v, dtype=torch.float64) for v in (theta_e, q, phi)),
        )
        for ours, ref in zip((fxx, fxy, fyy), reference, strict=True):
            np.testing.assert_allclose(ours.numpy(), ref, atol=1e-7, rtol=1e-6)


def test_sie_is_exact_at_q_one_and_finite_at_centre():
    x = torch.tensor([0.0, 0.7, -1.3, 0.0], dtype=torch.float64)
    y = torch.tensor([0.0, 0.2, 0.9, -2.0], dtype=torch.float64)
    theta_e = torch.tensor(1.4, dtype=torch.float64)
    # q = 1 is the singular isothermal sphere: alpha = theta_E r_hat.
    ax, ay = lensing.sie_deflection(x, y, theta_e, torch.tensor(1.0, dtype=torch.float64),
                                    torch.tensor(0.3, dtype=torch.float64))
    r = torch.hypot(x, y)
    expected_x = torch.where(r > 0, 1.4 * x / r.clamp_min(1e-300), torch.zeros_like(x))
    expected_y = torch.where(r > 0, 1.4 * y / r.clamp_min(1e-300), torch.zeros_like(y))
    torch.testing.assert_close(ax, expected_x, atol=1e-14, rtol=0)
    torch.testing.assert_close(ay, expected_y, atol=1e-14, rtol=0)
    # Just below q = 1 the series branch and the closed form agree.
    for q in (1 - 1e-3, 1 - 1e-5, 1 - 1e-9):
        ax_q, _ = lensing.sie_deflection(x, y, theta_e, torch.tensor(q, dtype=torch.float64),
                                         torch.tensor(0.3, dtype=torch.float64))
        assert torch.all(torch.isfinite(ax_q))
        assert torch.max(torch.abs(ax_q - expected_x)) < 5 * (1 - q)
    for dtype in (torch.float32, torch.float64):
        zero = torch.zeros(1, dtype=dtype)
        q = torch.tensor(0.6, dtype=dtype)
        outputs = lensing.sie_deflection(zero, zero, theta_e.to(dtype), q,
                                         torch.tensor(0.5, dtype=dtype))
        outputs += lensing.sie_hessian(zero, zero, theta_e.to(dtype), q,
                                       torch.tensor(0.5, dtype=dtype))
        assert all(torch.all(torch.isfinite(o)) for o in outputs)


def test_einstein_ring_of_circular_lens_is_critical():
    # For the SIS, the tangential critical curve is the circle r = theta_E: det(A) = 0 there.
    angles = torch.linspace(0, 2 * math.pi, 17, dtype=torch.float64)
    theta_e = torch.tensor(1.2, dtype=torch.float64)
    x, y = 1.2 * torch.cos(angles), 1.2 * torch.sin(angles)
    fxx, fxy, fyy = lensing.sie_hessian(x, y, theta_e, torch.tensor(1.0, dtype=torch.float64),
                                        torch.tensor(0.0, dtype=torch.float64))
    determinant = (1 - fxx) * (1 - fyy) - fxy**2
    assert torch.max(torch.abs(determinant)) < 1e-12


def test_batched_parameters_broadcast_like_single_calls():
    grid = torch.linspace(-2, 2, 9, dtype=torch.float64)
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    theta_e = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64).view(3, 1, 1)
    q = torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64).view(3, 1, 1)
    phi = torch.tensor([0.1, -0.7, 1.2], dtype=torch.float64).view(3, 1, 1)
    ax, ay = lensing.sie_deflection(x, y, theta_e, q, phi)
    assert ax.shape == (3, 9, 9)
    for i in range(3):
        sx, sy = lensing.sie_deflection(x, y, theta_e[i, 0, 0], q[i, 0, 0], phi[i, 0, 0])
        torch.testing.assert_close(ax[i], sx)
        torch.testing.assert_close(ay[i], sy)


def test_invalid_axis_ratio_is_an_error():
    x = torch.zeros(3)
    for bad_q in (0.0, -0.5, 1.2):
        with pytest.raises(ValueError, match="axis ratio q must lie in"):
            lensing.sie_deflection(x, x, torch.tensor(1.0), torch.tensor(bad_q), torch.tensor(0.0))


def test_magnification_of_sis_closed_form():
    # SIS: mu(r) = r / (r - theta_E) for the outer image.
    r = torch.tensor([1.5, 2.0, 4.0], dtype=torch.float64)
    one = torch.tensor(1.0, dtype=torch.float64)
    fxx, fxy, fyy = lensing.sie_hessian(r, torch.zeros_like(r), one,
                                        torch.tensor(1.0, dtype=torch.float64),
                                        torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(lensing.magnification(fxx, fxy, fyy), r / (r - 1.0))


def test_sersic_radius_matches_lenstronomy_and_light_integrates_to_flux():
    from lenstronomy.LightModel.light_model import LightModel

    x, y = _grid_positions()
    for q, phi, n in itertools.product([0.4, 0.9], [0.3, -1.0], [1.0, 4.0]):
        e1, e2 = param_util.phi_q2_ellipticity(phi, q)
        # Compare shapes: with the same b_n lenstronomy's profile is ours up to a constant.
        reference = LightModel(["SERSIC_ELLIPSE"]).surface_brightness(
            x, y, [{"amp": 1.0, "R_sersic": 0.8, "n_sersic": n, "e1": e1, "e2": e2,
                    "center_x": 0.1, "center_y": -0.2}])
        b_lenstronomy = max(1.9992 * n - 0.3271, 1e-5)
        ours = lensing.sersic_profile(
            torch.tensor(x), torch.tensor(y), torch.tensor(1.0, dtype=torch.float64), 0.8,
            torch.tensor(n, dtype=torch.float64), torch.tensor(q, dtype=torch.float64),
            torch.tensor(phi, dtype=torch.float64), 0.1, -0.2, b_n=b_lenstronomy,
        ).numpy()
        np.testing.assert_allclose(ours, reference, rtol=1e-6)
    # Total flux closed form: integrate a fine grid out to many effective radii.
    fine = torch.linspace(-12, 12, 2401, dtype=torch.float64)
    yy, xx = torch.meshgrid(fine, fine, indexing="ij")
    for n in (0.7, 1.0, 2.5):
        amplitude = lensing.sersic_flux_to_amplitude(10.0, 0.6, n)
        amplitude_t = torch.tensor(float(amplitude), dtype=torch.float64)
        image = lensing.sersic_profile(xx, yy, amplitude_t, 0.6,
                                       torch.tensor(n, dtype=torch.float64),
                                       torch.tensor(0.5, dtype=torch.float64),
                                       torch.tensor(0.3, dtype=torch.float64))
        total = image.sum().item() * (fine[1] - fine[0]).item() ** 2
        assert total == pytest.approx(10.0, rel=2e-3)


def _isophotes(xx, yy, q=0.6, phi=0.4, inner_q=0.6, twist=0.0, a4=0.0, r_eff=1.0, n=4.0):
    t = lambda v: torch.tensor(float(v), dtype=torch.float64)  # noqa: E731
    return lensing.sersic_profile_isophotes(
        xx, yy, t(1.0), t(r_eff), t(n), t(q), t(phi), t(0.0), t(0.0), t(inner_q), t(twist),
        t(a4), b_n=t(lensing.sersic_b(n)))


def _annulus_angle(image, xx, yy, radius, width=0.02):
    """Position angle and axis ratio of the light on a thin circular annulus: on it the
    profile falls off along the minor axis, so its quadrupole points along the local major
    axis (angle: 0.5 atan2 of the cos/sin 2psi moments)."""
    r = torch.hypot(xx, yy)
    ring = (r - radius).abs() < width
    psi = torch.atan2(yy[ring], xx[ring])
    light = image[ring]
    return 0.5 * math.atan2(float((light * torch.sin(2 * psi)).sum()),
                            float((light * torch.cos(2 * psi)).sum()))


def test_sersic_isophotes_reduce_to_sersic_and_turn_from_inner_to_outer_shape():
    """No twist, no axis-ratio change, no a4: exactly ``sersic_profile``. With a twist, the
    isophotes point at phi - twist near the centre (R << r_eff / 2: weight R^2 / (R^2 +
    r_eff^2 / 4)) and at phi far out. a4 > 0 (discy) brightens the axes against the diagonals at
    a fixed radius (by 2 x 3% x dlnI/dlnr ~ 13% at a4 = 0.03, n = 4, R = 1.5 r_eff), a4 < 0
    the reverse; the total flux stays the Sersic's."""
    axis = torch.linspace(-12, 12, 2401, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    plain = lensing.sersic_profile(xx, yy, torch.tensor(1.0, dtype=torch.float64), 1.0,
                                   torch.tensor(4.0, dtype=torch.float64),
                                   torch.tensor(0.6, dtype=torch.float64),
                                   torch.tensor(0.4, dtype=torch.float64))
    torch.testing.assert_close(_isophotes(xx, yy), plain, rtol=1e-12, atol=0)
    twist = math.radians(30)
    turned = _isophotes(xx, yy, twist=twist)
    for radius, weight in ((0.1, 0.01 / 0.26), (6.0, 36 / 36.25)):
        angle = _annulus_angle(turned, xx, yy, radius)
        assert angle == pytest.approx(0.4 - twist * (1 - weight), abs=0.02), radius
    # Inner axis ratio: a rounder centre puts less of the annulus's light on its major axis.
    inner_round = _isophotes(xx, yy, inner_q=0.95)
    on_major = (torch.hypot(xx - 0.1 * math.cos(0.4), yy - 0.1 * math.sin(0.4)) < 0.006)
    on_minor = (torch.hypot(xx + 0.1 * math.sin(0.4), yy - 0.1 * math.cos(0.4)) < 0.006)
    contrast = lambda image: float(image[on_major].mean() / image[on_minor].mean())  # noqa: E731
    assert 0 < contrast(inner_round) - 1 < 0.25 * (contrast(plain) - 1)
    step = float(axis[1] - axis[0]) ** 2
    for a4 in (0.03, -0.03):
        shaped = _isophotes(xx, yy, q=1.0, phi=0.0, inner_q=1.0, a4=a4)
        r = torch.hypot(xx, yy)
        ring = (r - 1.5).abs() < 0.02
        psi = torch.atan2(yy, xx)[ring]
        on_axes, diagonal = torch.cos(4 * psi) > 0.9, torch.cos(4 * psi) < -0.9
        ratio = float(shaped[ring][on_axes].mean() / shaped[ring][diagonal].mean())
        assert (ratio > 1.1) if a4 > 0 else (ratio < 1 / 1.1), a4
    flux = lambda image: float(image.sum()) * step  # noqa: E731
    twisted = _isophotes(xx, yy, inner_q=0.85, twist=twist, a4=0.03)
    assert flux(twisted) == pytest.approx(flux(plain), rel=0.01)
