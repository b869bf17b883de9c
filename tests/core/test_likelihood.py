"""Probability-flow ODE log-likelihood against the oracle's exact log-density."""

import math

import pytest
import torch

from diffsci.core import EDM, PFGMPP, VP, GaussianMixture
from diffsci.core.likelihood import bits_per_dim, ode_log_likelihood


@pytest.fixture(scope="module")
def gmm():
    return GaussianMixture.random(3, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def data(gmm):
    return gmm.sample(32, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("process", [VP(), EDM()], ids=["VP", "EDM"])
def test_exact_divergence_matches_the_exact_density(gmm, data, process):
    """With the exact noise-end marginal as prior, the error is the ODE solver's: max over
    32 samples (d = 8) measured 1.2e-1 / 9.9e-3 / 3.6e-4 at rtol 1e-4 / 1e-5 / 1e-6 (VP;
    EDM 1.9e-2 / 1.1e-2 / 3.9e-4). Threshold 2e-3 at 1e-6."""
    exact = gmm.log_prob_t(data, process.t_min, process)
    prior = lambda xT: gmm.log_prob_t(xT, process.t_max, process)
    r = ode_log_likelihood(gmm.denoiser(process), process, data, rtol=1e-6, atol=1e-6, prior=prior)
    assert float((r.log_prob - exact).abs().max()) < 2e-3
    assert torch.allclose(r.log_prob, r.prior_log_prob + r.delta)


def test_default_gaussian_prior_error_is_first_order_in_alpha_T(gmm, data):
    """N(0, sigma_T^2) ignores the data mean at t_max: measured max error 4.6e-2 nats
    (mean 1.7e-3) under the linear VP (alpha_T = 0.0066); threshold 0.1."""
    p = VP()
    exact = gmm.log_prob_t(data, p.t_min, p)
    r = ode_log_likelihood(gmm.denoiser(p), p, data, rtol=1e-6, atol=1e-6)
    assert float((r.log_prob - exact).abs().max()) < 0.1


def test_hutchinson_is_unbiased_and_converges(gmm, data):
    """RMS error over 8 samples measured 3.0 / 1.6 / 0.66 / 0.36 nats with 1 / 4 / 16 / 64
    Rademacher probes (about 1/sqrt(n)); thresholds: 64 probes < 0.6 and 4x below 1 probe."""
    p = VP()
    x = data[:8]
    exact = gmm.log_prob_t(x, p.t_min, p)

    def rms(n):
        r = ode_log_likelihood(
            gmm.denoiser(p), p, x, "hutchinson", n, torch.Generator().manual_seed(0)
        )
        return float((r.log_prob - exact).pow(2).mean().sqrt())

    e1, e64 = rms(1), rms(64)
    assert e64 < 0.6 and e64 < 0.25 * e1, (e1, e64)


def test_bits_per_dim_and_errors(gmm, data):
    lp = torch.tensor([-8 * math.log(2.0)])
    assert torch.allclose(bits_per_dim(lp, 8), torch.tensor([1.0]))
    D = gmm.denoiser(VP())
    with pytest.raises(ValueError, match="divergence"):
        ode_log_likelihood(D, VP(), data, divergence="skilling")
    with pytest.raises(ValueError, match="n_probes"):
        ode_log_likelihood(D, VP(), data, "hutchinson", n_probes=0)
    with pytest.raises(ValueError, match="Gaussian process"):
        ode_log_likelihood(D, PFGMPP(), data)
    with pytest.raises(ValueError, match="finite tensor"):
        ode_log_likelihood(D, VP(), torch.full((2, 8), float("nan")))
    with pytest.raises(ValueError, match="prior returned shape"):
        ode_log_likelihood(D, VP(), data[:2], prior=lambda x: x.sum())
