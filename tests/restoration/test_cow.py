"""COW (cyclic one-way diffusion) inpainting on a 16-pixel image prior: a 4-component
Gaussian mixture over (1, 4, 4) images with full covariances, so the exact denoiser and the
exact posterior are known and the hole is predictable from the observed pixels."""

import pytest
import torch

from diffsci.core import VP
from diffsci.core.analytic import GaussianMixture
from diffsci.restoration import (
    POSTERIOR_SAMPLERS,
    Dense,
    Inpainting,
    box_mask,
    posterior_sample,
)
from diffsci.restoration.cow import cow, cow_levels

f64 = torch.float64
SHAPE = (1, 4, 4)
G, K = 8, 16


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def setup():
    gmm = GaussianMixture.random(4, 16, gen(0), spread=2.0, scale=(0.1, 0.6), full=True)
    mask = box_mask(SHAPE, (1, 1, 2, 2))  # a 2x2 hole in the middle
    A = Inpainting(mask)
    x_true = gmm.sample(G, gen(1)).reshape(G, *SHAPE)
    return gmm, A, x_true, A(x_true)


def hole_error(x, x_true, mask):
    """Mean squared error over the hole, all K rows of each of the G measurements."""
    h = (~mask).flatten()
    xs = x.reshape(G, -1, 16)[:, :, h]
    return float((xs - x_true.reshape(G, 1, 16)[:, :, h]).square().mean())


class Counter:
    def __init__(self, D):
        self.D, self.rows = D, 0

    def __call__(self, x, t, cond=None):
        self.rows += x.shape[0]
        return self.D(x, t)


def test_known_region_hole_and_budget(setup):
    """Official settings (10 DDIM levels, cycles between levels 5 and 7, 10 cycles). The
    output's observed pixels are y exactly; the hole's MSE to the truth, measured: COW
    0.104, exact posterior samples 0.095, prior samples 6.6, COW without cycles (the
    inverted grey background descended once) 12.6. Bound 0.3."""
    gmm, A, x_true, y = setup
    p = VP()
    x1 = p.prior((G * K, *SHAPE), generator=gen(2), dtype=f64)
    D = Counter(gmm.denoiser(p))
    r = posterior_sample("cow", D, p, A, y, x1, 10, gen(3))
    assert POSTERIOR_SAMPLERS["cow"] is cow
    assert r.x.shape == (G * K, *SHAPE) and r.groups == G
    assert torch.equal(A(r.x), y.repeat_interleave(K, 0))
    assert torch.equal(r.x[:, A.mask], A.fill(y).repeat_interleave(K, 0)[:, A.mask])
    # G * high (the inversion, shared by a group) + G K (cycles (high - low) + low)
    assert r.evals == D.rows == G * 7 + G * K * (10 * 2 + 5)
    assert hole_error(r.x, x_true, A.mask) < 0.3
    bare = cow(gmm.denoiser(p), p, A, y, x1, 10, gen(3), cycles=0)
    assert bare.evals == G * 7 + G * K * 5
    assert hole_error(bare.x, x_true, A.mask) > 3.0


def test_reproducible_and_driven_by_noise(setup):
    gmm, A, x_true, y = setup
    p = VP()
    D = gmm.denoiser(p)
    x1 = p.prior((G * 2, *SHAPE), generator=gen(2), dtype=f64)
    a = cow(D, p, A, y, x1, 10, gen(3))
    b = cow(D, p, A, y, x1, 10, gen(3))
    c = cow(D, p, A, y, x1, 10, gen(4))
    d = cow(D, p, A, y, -x1, 10, gen(3))
    assert torch.equal(a.x, b.x)
    assert not torch.allclose(a.x, c.x) and not torch.allclose(a.x, d.x)
    # the rows of one measurement differ only in the hole
    assert not torch.allclose(a.x[0], a.x[1]) and torch.equal(a.x[0][A.mask], a.x[1][A.mask])
    raw = cow(D, p, A, y, x1, 10, gen(3), paste=False)
    assert torch.equal(raw.x[:, ~A.mask], a.x[:, ~A.mask])


def test_levels_and_errors(setup):
    gmm, A, x_true, y = setup
    p = VP()
    D = gmm.denoiser(p)
    assert cow_levels(10) == (5, 7, 4)
    assert cow_levels(20, 0.3, 0.9, None) == (6, 18, None)
    x1 = p.prior((G, *SHAPE), generator=gen(2), dtype=f64)
    dense = Dense(torch.randn(3, 16, generator=gen(5), dtype=f64), x_shape=SHAPE)
    with pytest.raises(ValueError, match="needs an Inpainting operator"):
        cow(D, p, dense, dense(x_true), x1, 10)
    for kw, msg in [
        ({"low": 0.7, "high": 0.5}, "0 < low < high"),
        ({"high": 1.5}, "high must be a fraction"),
        ({"final_replace": 0.6}, "final_replace"),
        ({"cycles": -1}, "cycles must be"),
        ({"eta_final": 2.0}, "eta_final"),
        ({"fill_value": float("inf")}, "fill_value"),
    ]:
        with pytest.raises(ValueError, match=msg):
            cow(D, p, A, y, x1, 10, **kw)
    with pytest.raises(ValueError, match="must satisfy"):
        cow(D, p, A, y, x1, 2)  # levels 1 and 1 coincide
