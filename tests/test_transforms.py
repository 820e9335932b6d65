"""The one dihedral convention (baselines/transforms.py): a group of 8, numpy and torch alike,
inverses, and the coordinate map the regression targets follow."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from lensbench.baselines.transforms import dihedral, dihedral_point, inverse_dihedral
from lensbench.deep.regression import transform_targets

RNG = np.random.default_rng(0)
IMAGE = RNG.normal(size=(2, 3, 7, 7))  # no symmetry: every transform gives a different array
ROOT = Path(__file__).resolve().parents[1]


def test_eight_distinct_transforms_identical_in_numpy_and_torch():
    outputs = [dihedral(IMAGE, k) for k in range(8)]
    for a, b in itertools.combinations(range(8), 2):
        assert not np.array_equal(outputs[a], outputs[b]), (a, b)
    for k, out in enumerate(outputs):
        assert out.flags["C_CONTIGUOUS"] and out.shape == IMAGE.shape
        np.testing.assert_array_equal(dihedral(torch.as_tensor(IMAGE), k).numpy(), out)
    np.testing.assert_array_equal(outputs[0], IMAGE)


def test_the_eight_form_a_group():
    """Composing two transforms gives one of the eight: closure, checked on the images."""
    outputs = [dihedral(IMAGE, k) for k in range(8)]
    for a, b in itertools.product(range(8), repeat=2):
        twice = dihedral(dihedral(IMAGE, a), b)
        assert sum(np.array_equal(twice, out) for out in outputs) == 1, (a, b)


@pytest.mark.parametrize("k", range(8))
def test_inverse_undoes_the_transform(k):
    np.testing.assert_array_equal(dihedral(dihedral(IMAGE, k), inverse_dihedral(k)), IMAGE)
    x = torch.as_tensor(IMAGE)
    assert torch.equal(dihedral(dihedral(x, inverse_dihedral(k)), k), x)


def test_rotations_come_before_the_flip():
    """k >= 4 is transform k - 4 followed by a left-right flip (the order deep/photoz.py once
    reversed, which made its k = 5 and 7 the other way round)."""
    np.testing.assert_array_equal(dihedral(IMAGE, 4), IMAGE[..., ::-1])
    for k in range(4, 8):
        np.testing.assert_array_equal(dihedral(IMAGE, k), dihedral(IMAGE, k - 4)[..., ::-1])
    np.testing.assert_array_equal(dihedral(IMAGE, 1), np.rot90(IMAGE, 1, axes=(-2, -1)))


@pytest.mark.parametrize("k", [-1, 8])
def test_index_out_of_range_is_an_error(k):
    with pytest.raises(ValueError, match="0..7"):
        dihedral(IMAGE, k)


@pytest.mark.parametrize("k", range(8))
def test_a_point_image_moves_as_the_coordinate_map_and_the_regression_targets(k):
    """One bright pixel at (x, y) (x along columns, y along rows, from the centre of an odd
    stamp) lands where ``dihedral_point`` says, and where ``transform_targets`` moves a lens
    centre (x, y)."""
    size, x, y = 9, 3, -1  # pixel units
    image = np.zeros((1, size, size))
    image[0, y + size // 2, x + size // 2] = 1.0
    row, col = np.argwhere(dihedral(image, k)[0] == 1.0)[0]
    moved = (col - size // 2, row - size // 2)
    assert moved == dihedral_point(x, y, k)
    targets = transform_targets(torch.tensor([[float(x), float(y), 1.2]]), torch.tensor([k]),
                                ("x", "y", "theta_e"))
    assert targets[0].tolist() == [*map(float, moved), pytest.approx(1.2)]


def test_no_module_keeps_its_own_dihedral_code():
    """Rotations of stamps by an index go through baselines/transforms.py: no other rot90 in
    the harness, the baselines or the networks (random orientations of COSMOS stamps in
    datasets/ are draws, not indexed transforms)."""
    own = []
    for folder in ("bench", "baselines", "deep"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name != "transforms.py" and "rot90(" in path.read_text():
                own.append(str(path.relative_to(ROOT)))
    assert own == []
