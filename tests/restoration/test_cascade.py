"""Coarse-to-fine (cascade) inpainting. The exact check: a 4-component Gaussian mixture over
(1, 8, 8) images, whose 2x2 block means are again a Gaussian mixture (the image of the
first under the linear pooling), so both levels have exact denoisers and the exact
posterior is known."""

import pytest
import torch

from diffsci.core import VP
from diffsci.core.analytic import GaussianMixture
from diffsci.restoration import (
    POSTERIOR_SAMPLERS,
    CoarseGuidedInpainting,
    Dense,
    Inpainting,
    SuperResolution,
    box_mask,
    cascade,
    coarse_problem,
    posterior_sample,
)

POOL = SuperResolution((1, 8, 8), 2)  # the 2x2 block means

f64 = torch.float64
SHAPE, d = (1, 8, 8), 64
G, K = 6, 32


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def setup():
    fine = GaussianMixture.random(4, d, gen(0), spread=1.0, scale=(0.1, 0.5), full=True)
    P = POOL.matrix()  # (16, 64)
    coarse = GaussianMixture(fine.weights, fine.means @ P.T, P @ fine.covs @ P.T)
    p = VP()

    def D(x, t, cond=None):  # the exact denoiser of whichever level x lives on
        return (fine if x[0].numel() == d else coarse).denoise(x, t, p)

    A = Inpainting(box_mask(SHAPE, (2, 2, 4, 4)), 0.05)
    x_true = fine.sample(G, gen(1)).reshape(G, *SHAPE)
    y = A.measure(x_true, gen(2))
    posts = [fine.posterior(A.matrix(), y[g], A.sigma_y) for g in range(G)]
    exact_mean = torch.stack([q.weights @ q.means for q in posts])
    return p, D, A, y, exact_mean


def mean_error(x, exact_mean, A):
    """Squared error, over the hole, of each group's sample mean to the exact posterior mean."""
    h = (~A.mask).flatten()
    m = x.reshape(G, -1, d).mean(1)
    return float((m[:, h] - exact_mean[:, h]).square().mean())


def test_operators_pool_and_adjoint():
    mask = box_mask(SHAPE, (2, 2, 4, 4))
    x = torch.randn(3, *SHAPE, generator=gen(0), dtype=f64)
    A = Inpainting(mask, 0.1)
    Ac, yc = coarse_problem(A, A(x), 2)
    # the 4x4 coarse grid observes the 12 blocks outside the 2x2 coarse hole, at sigma / 2
    assert Ac.x_shape == (1, 4, 4) and Ac.y_dim == 12 and Ac.sigma_y == pytest.approx(0.05)
    assert torch.allclose(yc, Ac(POOL(x)))
    F = CoarseGuidedInpainting(mask, 2, 0.1)
    assert F.y_dim == 48 + 4 and not F.has_svd
    y = F(x)
    assert torch.equal(y[:, :48], A(x)) and torch.allclose(
        y[:, 48:], POOL(x)[:, 0, 1:3, 1:3].flatten(1)
    )
    v = torch.randn(3, F.y_dim, generator=gen(1), dtype=f64)
    lhs = (F(x) * v).sum(1)
    rhs = (x * F.adjoint(v)).flatten(1).sum(1)
    assert torch.allclose(lhs, rhs)  # <F x, v> = <x, F^T v>
    c = torch.randn(3, 1, 4, 4, generator=gen(2), dtype=f64)
    assert torch.allclose(F.measurement(A(x), c)[:, 48:], c[:, 0, 1:3, 1:3].flatten(1))


def test_cascade_matches_the_exact_posterior_mean(setup):
    """DPS (the paper's rule, zeta' = 1, 50 steps) at both levels with the exact
    denoisers. Measured squared error of the 32-sample mean to the exact posterior mean
    in the hole: cascade 0.0047, plain DPS 0.0032; the cascade with each group's coarse
    samples handed to the next group 0.023; prior samples 0.73. Bound 0.012."""
    p, D, A, y, exact_mean = setup
    x1 = p.prior((G * K, *SHAPE), generator=gen(3), dtype=f64)
    kw = {"gaussian": False, "scale": 1.0}
    r = posterior_sample("cascade", D, p, A, y, x1, 50, gen(4), **kw)
    assert POSTERIOR_SAMPLERS["cascade"] is cascade
    assert r.x.shape == (G * K, *SHAPE) and r.groups == G and r.log_weights is None
    assert r.evals == 2 * G * K * 50  # one coarse and one fine run per sample
    assert mean_error(r.x, exact_mean, A) < 0.012
    # the same stages with the coarse samples of another measurement: the check fails
    Ac, yc = coarse_problem(A, y)
    pc = posterior_sample("dps", D, p, Ac, yc, 2 * POOL(x1), 50, gen(4), **kw)
    F = CoarseGuidedInpainting(A.mask, 2, A.sigma_y)
    wrong = F.measurement(y.repeat_interleave(K, 0), pc.x[torch.roll(torch.arange(G * K), K)])
    bad = posterior_sample("dps", D, p, F, wrong, x1, 50, gen(4), **kw)
    assert mean_error(bad.x, exact_mean, A) > 0.012
    again = posterior_sample(
        "cascade", D, p, A, y, x1, 50, gen(4), method="dps", coarse_steps=50, **kw
    )
    assert torch.equal(again.x, r.x)  # reproducible; the defaults: DPS, coarse_steps = steps


def test_errors(setup):
    p, D, A, y, _ = setup
    x1 = p.prior((G, *SHAPE), generator=gen(3), dtype=f64)
    dense = Dense(torch.randn(3, d, generator=gen(5), dtype=f64), x_shape=SHAPE)
    with pytest.raises(ValueError, match="must be an Inpainting operator"):
        cascade(D, p, dense, dense(x1[:G]), x1, 10)
    with pytest.raises(ValueError, match="divisible by factor=3"):
        cascade(D, p, A, y, x1, 10, factor=3)
    with pytest.raises(ValueError, match="another registered sampler"):
        cascade(D, p, A, y, x1, 10, method="cascade")
    with pytest.raises(ValueError, match="another registered sampler"):
        cascade(D, p, A, y, x1, 10, method="nope")
    with pytest.raises(ValueError, match="CoarseGuidedInpainting has none"):  # stage 2 has no SVD
        cascade(D, p, A, y, x1, 10, method="ddrm")
    with pytest.raises(ValueError, match="coarse_steps"):
        cascade(D, p, A, y, x1, 10, coarse_steps=0)
    i, j = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    sparse = Inpainting(((i + j) % 2 == 0)[None], 0.05)  # a checkerboard: every block has a hole
    with pytest.raises(ValueError, match="no 2x2 block is entirely observed"):
        coarse_problem(sparse, sparse(x1[:G]))
    F = CoarseGuidedInpainting(A.mask, 2)
    with pytest.raises(ValueError, match="coarse must have shape"):
        F.measurement(y, torch.zeros(G, 1, 8, 8, dtype=f64))
