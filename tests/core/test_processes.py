"""Processes: inverse log-SNR, SDE coefficients, marginal moments, PFGM++ kernel law."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from diffsci.core import EDM, PFGMPP, VE, VP, Interpolant, SubVP
from diffsci.core.config import from_config
from diffsci.core.processes import Process

ddpm_ac = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
PROCESSES = [
    VP(),
    VP("cosine"),
    VP.from_alphas_cumprod(ddpm_ac),
    VE(),
    EDM(),
    SubVP(),
    Interpolant(),
    Interpolant("trig"),
    Interpolant("linear", gamma_scale=0.5),
    PFGMPP(D=64),
]
ids = [repr(p)[:40] for p in PROCESSES]


@pytest.mark.parametrize("p", PROCESSES, ids=ids)
def test_t_of_log_snr_inverts_log_snr(p):
    t = torch.linspace(p.t_min, p.t_max, 33, dtype=torch.float64)
    lam = p.log_snr(t)
    assert torch.all(lam[1:] < lam[:-1]), "log-SNR must decrease in t"
    assert torch.allclose(p.t_of_log_snr(lam), t, atol=1e-9)
    # the closed form agrees with the generic bisection
    assert torch.allclose(Process.t_of_log_snr(p, lam), t, atol=1e-9)


@pytest.mark.parametrize("p", PROCESSES, ids=ids)
def test_config_round_trip(p):
    q = from_config(p.config())
    t = torch.linspace(p.t_min, p.t_max, 9, dtype=torch.float64)
    assert type(q) is type(p)
    assert torch.equal(q.alpha(t), p.alpha(t)) and torch.equal(q.sigma(t), p.sigma(t))


def test_vp_linear_sde_coefficients_closed_form():
    p = VP(beta_min=0.1, beta_max=20.0)
    t = torch.linspace(0.01, 1, 50, dtype=torch.float64)
    beta = 0.1 + t * (20.0 - 0.1)
    assert torch.allclose(p.drift_coef(t), -0.5 * beta)  # f = -beta/2
    assert torch.allclose(p.diffusion_sq(t), beta)  # g^2 = beta
    assert torch.allclose(p.alpha(t) ** 2 + p.sigma(t) ** 2, torch.ones_like(t))


def test_ve_and_subvp_sde_coefficients_closed_form():
    ve = VE(0.01, 50.0)
    t = torch.linspace(0.0, 1, 20, dtype=torch.float64)
    assert torch.allclose(ve.diffusion_sq(t), 2 * ve.sigma(t) ** 2 * math.log(5000.0))
    sub = SubVP()
    beta = 0.1 + t[1:] * 19.9
    # Song et al. 2021, eq. 11: g^2 = beta(t) (1 - exp(-2 int beta))
    assert torch.allclose(sub.diffusion_sq(t[1:]), beta * (1 - sub.alpha(t[1:]) ** 4))


def test_discrete_vp_matches_alphas_cumprod_on_its_grid():
    p = VP.from_alphas_cumprod(ddpm_ac)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    assert torch.allclose(p.alpha(t) ** 2, ddpm_ac, rtol=1e-12)
    with pytest.raises(ValueError, match="decreasing"):
        VP.from_alphas_cumprod(ddpm_ac.flip(0))


@pytest.mark.parametrize("p", [VP(), EDM(), Interpolant("trig", gamma_scale=1.0)], ids=str)
def test_perturb_has_the_stated_moments(p):
    g = torch.Generator().manual_seed(0)
    n, t = 200_000, torch.tensor(0.4, dtype=torch.float64)
    x0 = torch.tensor([[1.5, -2.0]], dtype=torch.float64).expand(n, 2)
    xt = p.perturb(x0, t, p.noise(x0.shape, g, dtype=torch.float64))
    a, s = float(p.alpha(t)), float(p.sigma(t))
    se = s / math.sqrt(n)  # standard error of the mean
    assert torch.allclose(xt.mean(0), a * x0[0], atol=5 * se)
    assert torch.allclose(xt.std(0), torch.full((2,), s, dtype=torch.float64), rtol=0.01)


def test_interpolant_components():
    p = Interpolant("linear", gamma_scale=0.5)
    t = torch.linspace(0.1, 0.9, 5, dtype=torch.float64)
    assert torch.allclose(p.alpha(t), 1 - t)
    assert torch.allclose(p.sigma(t) ** 2, t**2 + 0.5 * t * (1 - t))


@pytest.mark.parametrize("D", [2.0, 16.0, 128.0])
def test_pfgmpp_radius_follows_its_analytic_law(D):
    """R = ||x - y|| has density ∝ R^(N-1) / (R^2 + r^2)^((N+D)/2), r = sigma sqrt(D)."""
    N, sigma = 4, 0.7
    p = PFGMPP(D=D)
    n = p.noise((20_000, N), torch.Generator().manual_seed(1), dtype=torch.float64)
    R = (sigma * n).norm(dim=1).numpy()
    dens = lambda r: float(p.radius_density(torch.tensor(r), sigma, N))
    Z = integrate.quad(dens, 0, math.inf)[0]
    cdf = lambda r: integrate.quad(dens, 0, r)[0] / Z
    res = stats.kstest(R[:2000], lambda rs: np.array([cdf(r) for r in rs]))
    assert res.pvalue > 1e-3


def test_pfgmpp_approaches_gaussian_as_D_grows():
    """||n|| -> chi_N (the Gaussian's norm law): KS distance shrinks with D, and at
    D = 1e6 the test no longer tells them apart (KS noise at n = 20k is ~0.006)."""
    N = 8
    res = []
    for D in (4.0, 64.0, 4096.0, 1e6):
        n = PFGMPP(D=D).noise((20_000, N), torch.Generator().manual_seed(2), dtype=torch.float64)
        res.append(stats.kstest(n.norm(dim=1).numpy(), stats.chi(N).cdf))
    ks = [r.statistic for r in res]
    assert ks[0] > ks[1] > ks[2], ks
    assert res[0].pvalue < 1e-10 and res[-1].pvalue > 1e-3


def test_process_errors():
    with pytest.raises(ValueError, match="unknown VP schedule"):
        VP("quadratic")
    with pytest.raises(ValueError, match="sigma_min"):
        VE(sigma_min=10, sigma_max=1)
    with pytest.raises(ValueError, match="augmentation dimension"):
        PFGMPP(D=0)
    with pytest.raises(ValueError, match="noise shape"):
        VP().perturb(torch.zeros(3, 2), 0.5, torch.zeros(3, 3))


def test_noise_is_drawn_on_the_generators_device_and_moved():
    # a CPU generator gives the same numbers whatever device the noise is asked for
    # (torch refuses a CPU generator for a CUDA draw; the GPU training run of the
    # restoration prior relies on this, RESULTS "ninth pass")
    p = VP()
    ref = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    for device in (None, "cpu"):
        z = p.noise((3, 4), generator=torch.Generator().manual_seed(0), device=device)
        assert torch.equal(z, ref)
    moved = p.noise((3, 4), generator=torch.Generator().manual_seed(0), device="meta")
    assert moved.device.type == "meta" and moved.shape == (3, 4)
    assert p.noise((2,), device="meta").device.type == "meta"  # no generator: drawn there
