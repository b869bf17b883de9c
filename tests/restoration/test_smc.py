"""MCGdiff and AFDPS (restoration.smc) against the exact posterior of the MCGdiff oracle
(a 25-component mixture prior with its exact denoiser under VP, so every error is the
sampler's): distance to exact samples, improvement with particles, the weighted ensemble
and its resampling, evaluation accounting and option errors."""

import pytest
import torch

from diffsci.core import VP, GaussianMixture, sliced_wasserstein
from diffsci.restoration import (
    POSTERIOR_SAMPLERS,
    Dense,
    Inpainting,
    LinearOperator,
    Posterior,
    mcgdiff_problem,
    posterior_sample,
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
    "method, options, steps, bound",
    [
        ("mcgdiff", {}, 100, 0.5),
        ("afdps", {}, 100, 0.6),
        ("afdps", {"variant": "ode"}, 50, 0.6),
    ],
)
def test_against_the_exact_posterior(problem, method, options, steps, bound):
    """One group of K = 500 particles, 100 evaluations per particle (the ODE variant: 50
    steps with one Langevin corrector each), 500 resampled draws. Measured SW: mcgdiff
    0.18, afdps 0.30, afdps-ode 0.17; DDRM 0.16, PiGDM 0.95 at the same budget; prior 18.1;
    two exact sets 0.07. Bounds 0.5 / 0.6 (< prior / 5)."""
    P, sw = problem
    p = VP()
    x1 = p.prior((N, 8), generator=gen(3), dtype=f64)
    r = posterior_sample(method, P.prior.denoiser(p), p, P.A, P.y, x1, steps, gen(5), **options)
    assert isinstance(r, Posterior) and r.x.shape == (N, 8) and r.groups == 1
    assert r.evals == N * 100
    assert r.log_weights is not None and bool(torch.isfinite(r.x).all())
    assert abs(float(torch.logsumexp(r.log_weights.double(), 0))) < 1e-9  # normalised
    draws = r.resample(N, gen(7))
    prior_sw = sw(P.prior.sample(N, gen(4)))
    assert sw(draws.x) < bound < prior_sw / 5


def test_mcgdiff_noiseless():
    """sigma_y = 0 (tau_i = t_min, the measurement pinned to within sqrt(kappa)): 100 steps,
    K = 500. Measured: SW 0.37 to the exact posterior (two exact sets 0.07, prior 18.2;
    the last step's weights leave an ESS of about 20), |A x - y| at most 0.03. Bounds 0.7
    and 0.1."""
    P = mcgdiff_problem(8, 4, 1)
    A = Dense(P.A.matrix())
    y = A(P.x_true)
    post = P.prior.posterior(A.matrix(), y[0], 1e-4)  # (noise 0: singular covariances)
    p = VP()
    x1 = p.prior((N, 8), generator=gen(3), dtype=f64)
    r = posterior_sample("mcgdiff", P.prior.denoiser(p), p, A, y, x1, 100, gen(5))
    x = r.resample(N, gen(7)).x
    assert float((A(x) - y).abs().max()) < 0.1
    assert float(sliced_wasserstein(x, post.sample(N, gen(1)), generator=gen(0))) < 0.7


@pytest.mark.parametrize("method", ["mcgdiff", "afdps"])
def test_error_falls_with_particles(method):
    """d_y = 2, seed 0 (a multimodal posterior): G = 64 copies of the measurement, 40
    steps; the RMS error of each group's weighted mean against the exact posterior mean,
    averaged over 2 seeds. Measured: mcgdiff 22.2 -> 9.1, afdps 20.6 -> 6.9 (K = 8 ->
    128). Required: the K = 128 error below 0.6 x the K = 8 error."""
    P = mcgdiff_problem(8, 2, 0)
    m_exact = (P.posterior.weights[:, None] * P.posterior.means).sum(0)
    p = VP()
    G, err = 64, {}
    for K in (8, 128):
        e = 0.0
        for rep in range(2):
            x1 = p.prior((G * K, 8), generator=gen(10 + rep), dtype=f64)
            y = P.y.expand(G, -1)
            r = posterior_sample(method, P.prior.denoiser(p), p, P.A, y, x1, 40, gen(20 + rep))
            e += float((r.mean() - m_exact).norm(dim=1).square().mean().sqrt()) / 2
        err[K] = e
    assert err[128] < 0.6 * err[8], err


@pytest.mark.parametrize("method", ["mcgdiff", "afdps"])
def test_image_shaped_inpainting_groups(method):
    """Images (1, 4, 4), a random mask with sigma_y = 0.1 and a random 3-component prior, two
    measurements with K = 300 particles each, 50 steps: each group's weighted mean against
    its exact posterior mean. Measured max error: mcgdiff 0.09, afdps 0.04 (the prior mean
    is 3.2 away). Bound 0.4."""
    prior = GaussianMixture.random(3, 16, generator=gen(0))
    A = Inpainting(torch.rand(1, 4, 4, generator=gen(1)) > 0.5, sigma_y=0.1)
    p = VP()
    y = A.measure(prior.sample(2, gen(2)).reshape(2, 1, 4, 4), gen(3))
    x1 = p.prior((600, 1, 4, 4), generator=gen(4), dtype=f64)
    exact = []
    for g in range(2):
        post = prior.posterior(A.matrix(), y[g].reshape(-1), 0.1)
        exact.append((post.weights[:, None] * post.means).sum(0))
    r = posterior_sample(method, prior.denoiser(p), p, A, y, x1, 50, gen(5))
    assert r.x.shape == (600, 1, 4, 4) and r.groups == 2 and r.evals == 600 * 50
    assert float((r.mean().reshape(2, -1) - torch.stack(exact)).abs().max()) < 0.4


def test_weighted_ensemble_and_resampling():
    """Two measurements, K = 50 particles each (AFDPS, 30 steps, resampling disabled so the
    weights stay uneven; measured ESS 9 and 16): log-weights normalised per group, ESS
    below K, and the mean of 4000 resampled draws per group matches Posterior.mean()
    (measured 0.02-0.03 over 5 resampling seeds; bound 0.15)."""
    P = mcgdiff_problem(8, 2, 1)
    p = VP()
    x1 = p.prior((100, 8), generator=gen(3), dtype=f64)
    y = torch.cat([P.y, P.y + 0.5])
    r = posterior_sample("afdps", P.prior.denoiser(p), p, P.A, y, x1, 30, gen(5), ess_threshold=0.0)
    lw = r.log_weights.view(2, 50).double()
    assert torch.allclose(torch.logsumexp(lw, 1), torch.zeros(2, dtype=f64), atol=1e-9)
    ess = r.ess()
    assert bool((ess < 50).all()) and bool((ess >= 1).all())
    w = torch.softmax(lw, 1)
    assert torch.allclose(r.mean(), (w[..., None] * r.x.view(2, 50, 8)).sum(1))
    rs = r.resample(4000, gen(9))
    assert rs.x.shape == (8000, 8) and rs.log_weights is None
    assert float((rs.mean() - r.mean()).abs().max()) < 0.15


def test_evals():
    """Evaluations per particle: mcgdiff and afdps-sde one per step, afdps-ode
    1 + corrector_steps per step."""
    P = mcgdiff_problem(8, 2, 1)
    p = VP()
    D = P.prior.denoiser(p)
    x1 = p.prior((12, 8), generator=gen(3), dtype=f64)
    y = P.y.expand(3, -1)
    assert posterior_sample("mcgdiff", D, p, P.A, y, x1, 7, gen(1)).evals == 12 * 7
    assert posterior_sample("mcgdiff", D, p, P.A, y, x1, 7, gen(1), adapt_grid=False).evals == 84
    assert posterior_sample("afdps", D, p, P.A, y, x1, 7, gen(1)).evals == 12 * 7
    for c in (0, 1, 2):
        r = posterior_sample("afdps", D, p, P.A, y, x1, 7, gen(1), variant="ode", corrector_steps=c)
        assert r.evals == 12 * 7 * (1 + c)
    r = posterior_sample("afdps", D, p, P.A, y, x1, 7, gen(1), discretization="euler")
    assert r.evals == 12 * 7 and r.x.shape == (12, 8)
    # the same seed gives the same result
    a = posterior_sample("mcgdiff", D, p, P.A, y, x1, 7, gen(1))
    b = posterior_sample("mcgdiff", D, p, P.A, y, x1, 7, gen(1))
    assert torch.equal(a.x, b.x) and torch.equal(a.log_weights, b.log_weights)


def test_errors():
    P = mcgdiff_problem(8, 2, 1)
    p = VP()
    D = P.prior.denoiser(p)
    x1 = p.prior((6, 8), generator=gen(3), dtype=f64)
    bad = [
        ("mcgdiff", {"eta": 0.0}, "eta"),
        ("mcgdiff", {"eta": 1.5}, "eta"),
        ("mcgdiff", {"kappa": 0.0}, "kappa"),
        ("mcgdiff", {"ess_threshold": 2.0}, "ess_threshold"),
        ("mcgdiff", {"weights": "none"}, "weights"),
        ("afdps", {"variant": "langevin"}, "variant"),
        ("afdps", {"ess_threshold": -0.1}, "ess_threshold"),
        ("afdps", {"discretization": "heun"}, "discretization"),
        ("afdps", {"corrector_steps": -1}, "corrector_steps"),
        ("afdps", {"corrector_steps": 1.5}, "corrector_steps"),
        ("afdps", {"langevin_step": 0.0}, "langevin_step"),
    ]
    for method, options, match in bad:
        with pytest.raises(ValueError, match=match):
            posterior_sample(method, D, p, P.A, P.y, x1, 5, **options)
    with pytest.raises(ValueError, match="sigma_y > 0"):
        posterior_sample("afdps", D, p, Dense(P.A.matrix()), P.y, x1, 5)
    with pytest.raises(ValueError, match="not a multiple"):
        posterior_sample("mcgdiff", D, p, P.A, P.y.repeat(4, 1), x1, 5)

    class NoSVD(LinearOperator):
        def __init__(self):
            super().__init__((8,), (2,), 0.1)

        def _forward(self, x):
            return x[:, :2]

        def _adjoint(self, y):
            return torch.nn.functional.pad(y, (0, 6))

    for method in ("mcgdiff", "afdps"):
        with pytest.raises(ValueError, match="SVD"):
            posterior_sample(method, D, p, NoSVD(), P.y, x1, 5)
    assert {"mcgdiff", "afdps"} <= set(POSTERIOR_SAMPLERS)
