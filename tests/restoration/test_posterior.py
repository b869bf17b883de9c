"""The posterior-sampler interface and DDRM / PiGDM / DPS against the exact posterior of the
MCGdiff oracle (a 25-component mixture prior with its exact denoiser, so every error is
the sampler's)."""

import pytest
import torch

from diffsci.core import VP, sliced_wasserstein
from diffsci.restoration import (
    POSTERIOR_SAMPLERS,
    Dense,
    Inpainting,
    LinearOperator,
    Posterior,
    mcgdiff_problem,
    posterior_sample,
    register_posterior,
)

f64 = torch.float64
N = 500


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def problem():
    """d = 8, d_y = 4, seed 1: a unimodal-looking posterior (two exact sets: SW 0.07)."""
    P = mcgdiff_problem(8, 4, 1)
    exact = P.posterior.sample(N, gen(1))
    sw = lambda x: float(sliced_wasserstein(x, exact, generator=gen(0)))
    return P, sw


@pytest.mark.parametrize(
    "method, bound",
    [("ddrm", 0.4), ("pigdm", 1.5), ("dps", None)],
)
def test_samplers_against_the_exact_posterior(problem, method, bound):
    """100 steps, 500 samples. Measured SW: ddrm 0.16, pigdm 0.95, dps 14.6 (the
    Gaussian-likelihood DPS overshoots at this sigma_y), prior 18.2, two exact sets 0.07.
    Bounds: ddrm 0.4, pigdm 1.5; dps is only checked to run with the right budget."""
    P, sw = problem
    p = VP()
    x1 = p.prior((N, 8), generator=gen(3), dtype=f64)
    r = posterior_sample(method, P.prior.denoiser(p), p, P.A, P.y, x1, 100, gen(5))
    assert isinstance(r, Posterior) and r.x.shape == (N, 8) and r.evals == N * 100
    assert bool(torch.isfinite(r.x).all())
    prior_sw = sw(P.prior.sample(N, gen(4)))
    if bound is not None:
        assert sw(r.x) < bound < prior_sw / 5


def test_dps_where_its_approximation_holds():
    """mcgdiff_problem(8, 2, 2) (sigma_y 0.38): DPS with the Gaussian rule, 100 DDPM steps,
    500 samples. Measured SW 0.23 (floor 0.11, prior 18.0; DDRM 15.8 and PiGDM 2.0 on this
    problem). Bound 0.6."""
    P = mcgdiff_problem(8, 2, 2)
    p = VP()
    exact = P.posterior.sample(N, gen(1))
    x1 = p.prior((N, 8), generator=gen(3), dtype=f64)
    r = posterior_sample("dps", P.prior.denoiser(p), p, P.A, P.y, x1, 100, gen(5))
    assert float(sliced_wasserstein(r.x, exact, generator=gen(0))) < 0.6


def test_ddrm_noiseless_inpainting_keeps_the_observed_pixels():
    """sigma_y = 0: DDRM's observed coordinates end at y exactly (eta_b = 1)."""
    P = mcgdiff_problem(8, 2, 0)
    p = VP()
    mask = torch.tensor([True, False, True, False, False, False, True, False])
    A = Inpainting(mask)
    y = A(P.x_true)
    x1 = p.prior((64, 8), generator=gen(3), dtype=f64)
    r = posterior_sample("ddrm", P.prior.denoiser(p), p, A, y, x1, 50, gen(5))
    assert torch.allclose(A(r.x), y.expand(64, -1), atol=1e-3)


def test_groups_weights_and_resampling():
    """Posterior.mean is the weighted mean; resampling preserves it (2000 draws per group:
    Monte-Carlo error about 0.03 here, bound 0.15)."""
    x = torch.randn(2 * 5, 3, generator=gen(0), dtype=f64)
    lw = torch.randn(10, generator=gen(1), dtype=f64)
    lw = lw - torch.logsumexp(lw.view(2, 5), 1).repeat_interleave(5)
    post = Posterior(x, 2, 10, lw)
    w = torch.softmax(lw.view(2, 5), 1)
    assert torch.allclose(post.mean(), (w[..., None] * x.view(2, 5, 3)).sum(1))
    assert torch.allclose(post.ess(), 1 / w.square().sum(1))
    rs = post.resample(2000, gen(2))
    assert rs.x.shape == (4000, 3) and rs.log_weights is None
    assert float((rs.mean() - post.mean()).abs().max()) < 0.15
    uniform = Posterior(x, 2, 10)
    assert torch.allclose(uniform.mean(), x.view(2, 5, 3).mean(1))
    assert torch.allclose(uniform.ess(), torch.full((2,), 5.0, dtype=f64))


def test_errors(problem):
    P, _ = problem
    p = VP()
    D = P.prior.denoiser(p)
    x1 = p.prior((6, 8), generator=gen(3), dtype=f64)
    with pytest.raises(ValueError, match="unknown posterior sampler"):
        posterior_sample("ddnm", D, p, P.A, P.y, x1, 5)
    with pytest.raises(ValueError, match="already registered"):
        register_posterior("ddrm")(lambda *a: None)
    with pytest.raises(ValueError):  # y of the wrong shape for A
        posterior_sample("ddrm", D, p, P.A, torch.zeros(1, 3, dtype=f64), x1, 5)
    with pytest.raises(ValueError, match="not a multiple"):
        posterior_sample("ddrm", D, p, P.A, P.y.repeat(4, 1), x1, 5)
    with pytest.raises(ValueError, match="Gaussian Process"):
        posterior_sample("pigdm", D, "vp", P.A, P.y, x1, 5)
    with pytest.raises(ValueError, match="LinearOperator"):
        posterior_sample("ddrm", D, p, P.A.matrix(), P.y, x1, 5)
    with pytest.raises(ValueError, match="sigma_y > 0"):
        posterior_sample("dps", D, p, Dense(P.A.matrix()), P.y, x1, 5)

    class NoSVD(LinearOperator):
        def __init__(self):
            super().__init__((8,), (4,), 0.1)

        def _forward(self, x):
            return x[:, :4]

        def _adjoint(self, y):
            return torch.nn.functional.pad(y, (0, 4))

    with pytest.raises(ValueError, match="SVD"):
        posterior_sample("ddrm", D, p, NoSVD(), P.y, x1, 5)
    assert {"ddrm", "pigdm", "dps"} <= set(POSTERIOR_SAMPLERS)
