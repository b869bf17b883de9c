import math

import pytest
import torch

from diffsci.core import sliced_wasserstein


def test_sliced_w2_of_a_shift_is_its_length_over_sqrt_d():
    """SW2(x, x + c)^2 = E_theta (theta . c)^2 = ||c||^2 / d for theta uniform on the sphere."""
    d = 5
    x = torch.randn(1000, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    sw = sliced_wasserstein(
        x, x + c, n_projections=20000, generator=torch.Generator().manual_seed(1)
    )
    assert math.isclose(sw, float(c.norm()) / math.sqrt(d), rel_tol=0.02)
    assert sliced_wasserstein(x, x.flip(0)) == 0.0  # a permutation is the same cloud
    # unequal sizes compare quantiles
    assert sliced_wasserstein(x, x[:500]) < 0.2


def test_sliced_w2_errors():
    with pytest.raises(ValueError, match="dimension mismatch"):
        sliced_wasserstein(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="NaN"):
        sliced_wasserstein(torch.full((4, 2), float("nan")), torch.zeros(4, 2))
