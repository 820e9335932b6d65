"""The one dihedral-transform convention of lensbench: the 8 symmetries of a square stamp.

Transform ``k`` (0..7) of the last two axes (rows, columns) turns the stamp by ``k % 4`` quarter
turns (``np.rot90`` / ``torch.rot90``: counter-clockwise as an array is printed) and then, for
``k >= 4``, flips it left-right. With x along columns and y along rows (the simulator's grid,
centred on the stamp), a quarter turn maps a point (x, y) to (y, -x) and the flip maps x to -x
(:func:`dihedral_point`). Test-time augmentation, training augmentation, the rotation metrics of
the suites and the regression targets all use these functions, so their indices agree.

Works alike on numpy arrays and torch tensors (duck typing: no torch import here, so the bottom
layer stays free of it).
"""

from __future__ import annotations

import numpy as np

N_TRANSFORMS = 8


def _check(k: int) -> int:
    if not 0 <= k < N_TRANSFORMS:
        raise ValueError(f"dihedral index must be in 0..7, got {k}")
    return int(k)


def dihedral(x, k: int):
    """The k-th dihedral transform of the last two axes of ``x`` (numpy array or torch tensor,
    returned as the same type; numpy results are contiguous copies)."""
    k = _check(k)
    if isinstance(x, np.ndarray):
        turned = np.rot90(x, k % 4, axes=(-2, -1))
        return np.ascontiguousarray(turned[..., ::-1] if k >= 4 else turned)
    turned = x.rot90(k % 4, dims=(-2, -1))
    return turned.flip(dims=(-1,)) if k >= 4 else turned


def inverse_dihedral(k: int) -> int:
    """The index of the inverse of transform k: a rotation is undone by the opposite rotation; a
    flipped transform is a reflection, its own inverse."""
    k = _check(k)
    return (4 - k) % 4 if k < 4 else k


def dihedral_point(x, y, k: int):
    """Where transform k moves a point (x, y) of the stamp (x along columns, y along rows, from
    the stamp centre; any units): a quarter turn maps (x, y) to (y, -x), the flip x to -x.
    Vectors (a lens centre) transform like points; spin-2 quantities (ellipticity, shear) turn by
    twice the angle (``deep.regression.transform_targets``)."""
    k = _check(k)
    for _ in range(k % 4):
        x, y = y, -x
    return (-x, y) if k >= 4 else (x, y)
