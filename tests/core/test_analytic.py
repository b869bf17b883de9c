"""The Gaussian-mixture oracle, each quantity re-derived a second way."""

import math

import pytest
import torch

from diffsci.core import EDM, VP, GaussianMixture, Interpolant

f64 = torch.float64


@pytest.fixture(scope="module")
def gmm():
    return GaussianMixture.random(5, 2, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("p", [VP(), EDM(), Interpolant("trig", 0.5)], ids=str)
def test_denoiser_matches_monte_carlo_tweedie(gmm, p):
    """E[x0 | x_t] by self-normalised importance sampling over 400k prior draws."""
    g = torch.Generator().manual_seed(0)
    x0s = gmm.sample(400_000, g)
    for tt in (0.2, 0.5):
        t = torch.tensor(tt, dtype=f64)
        a, s = float(p.alpha(t)), float(p.sigma(t))
        xt = p.perturb(gmm.sample(3, g), t, torch.randn(3, 2, generator=g, dtype=f64))
        logw = -0.5 * ((xt[:, None] - a * x0s[None]) ** 2).sum(-1) / s**2  # (3, n)
        w = torch.softmax(logw, dim=1)
        mc = torch.einsum("bn,nd->bd", w, x0s)
        ess = 1 / (w**2).sum(1)
        assert bool((ess > 200).all())
        # Monte-Carlo standard error of the weighted mean: posterior spread / sqrt(ESS)
        spread = torch.einsum("bn,bn->b", w, ((x0s[None] - mc[:, None]) ** 2).sum(-1)).sqrt()
        err = (gmm.denoise(xt, t, p) - mc).norm(dim=1)
        assert bool((err < 6 * spread / ess.sqrt()).all()), (err, spread / ess.sqrt())


def test_denoiser_matches_tweedie_by_autograd(gmm):
    """x0_hat = (x + sigma^2 grad log p_t(x)) / alpha, the gradient by autograd."""
    p = VP()
    x = torch.randn(6, 2, dtype=f64, requires_grad=True)
    t = torch.tensor(0.3, dtype=f64)
    (grad,) = torch.autograd.grad(gmm.log_prob_t(x, t, p).sum(), x)
    tweedie = (x + p.sigma(t) ** 2 * grad) / p.alpha(t)
    assert torch.allclose(gmm.denoise(x.detach(), t, p), tweedie, atol=1e-10)
    assert torch.allclose(gmm.score(x.detach(), t, p), grad, atol=1e-10)


def test_log_prob_integrates_to_one_and_sample_moments(gmm):
    grid = torch.linspace(-12, 12, 801, dtype=f64)
    X, Y = torch.meshgrid(grid, grid, indexing="ij")
    dens = gmm.log_prob(torch.stack([X.flatten(), Y.flatten()], 1)).exp()
    assert abs(float(dens.sum()) * float(grid[1] - grid[0]) ** 2 - 1) < 1e-3
    x = gmm.sample(200_000, torch.Generator().manual_seed(1))
    mean = (gmm.weights[:, None] * gmm.means).sum(0)
    assert torch.allclose(x.mean(0), mean, atol=0.03)


def test_posterior_matches_bayes_on_a_grid(gmm):
    A = torch.tensor([[1.0, 0.5]], dtype=f64)
    y, s = torch.tensor([0.7], dtype=f64), 0.4
    post = gmm.posterior(A, y, s)
    grid = torch.linspace(-10, 10, 601, dtype=f64)
    X, Y = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([X.flatten(), Y.flatten()], 1)
    logpost = gmm.log_prob(pts) - 0.5 * ((pts @ A.T)[:, 0] - y) ** 2 / s**2
    bayes = torch.softmax(logpost, 0)
    mine = torch.softmax(post.log_prob(pts), 0)
    assert float((bayes - mine).abs().sum()) < 1e-3  # total variation on the grid
    with pytest.raises(ValueError, match="A must have shape"):
        gmm.posterior(torch.ones(1, 3), y, s)


@pytest.mark.parametrize("p", [VP(), VP("cosine"), EDM(), Interpolant()], ids=str)
def test_reference_solve_matches_the_closed_form_flow_of_one_gaussian(p):
    """For N(mu, s^2 I) the flow is x_t - alpha_t mu = sqrt(v_t / v_1) (x_1 - alpha_1 mu),
    v_t = alpha_t^2 s^2 + sigma_t^2."""
    mu, s2 = torch.tensor([[1.0, -2.0]], dtype=f64), 0.3**2
    g1 = GaussianMixture([1.0], mu, [s2])
    x1 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=f64)
    t1, t0 = torch.tensor(p.t_max, dtype=f64), torch.tensor(p.t_min, dtype=f64)
    v = lambda t: p.alpha(t) ** 2 * s2 + p.sigma(t) ** 2
    exact = p.alpha(t0) * mu + torch.sqrt(v(t0) / v(t1)) * (x1 - p.alpha(t1) * mu)
    assert torch.allclose(g1.reference_solve(p, x1), exact, atol=1e-8)


def test_oracle_input_errors(gmm):
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[-1.0, 1.0]])
    with pytest.raises(ValueError, match="2-dim points"):
        gmm.log_prob(torch.zeros(3, 4))
    assert math.isclose(float(gmm.weights.sum()), 1.0)
