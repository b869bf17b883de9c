"""TSDiff self-guidance (core.guidance.self_guidance) and refinement, on the exact
Gaussian-mixture oracle and on a tiny trained TSDiff."""

import math

import numpy as np
import pytest
import torch

from diffsci.core import Denoiser, GaussianMixture, TrainConfig, sample, train
from diffsci.core.guidance import classifier_guidance, dps, self_guidance
from diffsci.timeseries.model import TSDiffNet, forecast, tsdiff_process, window_sampler
from diffsci.timeseries.refine import quantile_levels, refine, refine_energy, refine_forecast

f64 = torch.float64
L = 8  # oracle series length; the first CTX values are observed
CTX = 5


@pytest.fixture(scope="module")
def prior():
    """Two-level AR(1) series (rho = 0.9) of length 8 as a 2-component Gaussian mixture."""
    i = torch.arange(L, dtype=f64)
    cov = 0.3 * 0.9 ** (i[:, None] - i[None]).abs()
    return GaussianMixture([0.5, 0.5], [[-1.0] * L, [1.0] * L], torch.stack([cov, cov]))


def _obs(B, g, missing=True):
    obs = torch.randn(B, L, 1, generator=g, dtype=f64)
    mask = torch.zeros(B, L, 1, dtype=torch.bool)
    mask[:, :CTX] = True
    if missing:
        mask[::2, 1] = False  # a missing context value
    return torch.where(mask, obs, torch.full_like(obs, float("nan"))), mask


@pytest.mark.parametrize("energy", ["mse", "quantile"])
def test_scale_zero_is_the_unguided_denoiser(prior, energy):
    p = tsdiff_process()
    g = torch.Generator().manual_seed(0)
    obs, mask = _obs(6, g)
    x = torch.randn(6, L, 1, generator=g, dtype=f64)
    t = torch.full((6,), 0.4, dtype=f64)
    D = prior.denoiser(p)
    assert torch.equal(self_guidance(D, p, obs, mask, 0.0, energy, quantiles=3)(x, t), D(x, t))
    torch.manual_seed(0)
    net = Denoiser(TSDiffNet(hidden=8, num_blocks=1, emb_dim=8, modes=4), p).double()
    Dg = self_guidance(net, p, obs, mask, 0.0, energy, quantiles=3)
    assert torch.equal(Dg(x, t), net(x, t))
    guided = self_guidance(D, p, obs, mask, 2.0, energy, quantiles=3)(x, t)
    assert torch.isfinite(guided).all() and not torch.allclose(guided, D(x, t))


def test_mse_guidance_is_dps_with_a_mask_operator(prior):
    """-sum_mask (y - x0_hat)^2 is DPS's Gaussian log-likelihood with noise_std^2 = 1/2."""
    p = tsdiff_process()
    g = torch.Generator().manual_seed(1)
    obs, mask = _obs(5, g)
    x = torch.randn(5, L, 1, generator=g, dtype=f64)
    t = torch.rand(5, generator=g, dtype=f64) * 0.9 + 0.05
    D = prior.denoiser(p)
    y = torch.where(mask, obs, 0.0)
    ref = dps(D, p, lambda z: torch.where(mask, z, 0.0), y, noise_std=math.sqrt(0.5), scale=1.7)
    assert torch.allclose(self_guidance(D, p, obs, mask, 1.7, "mse")(x, t), ref(x, t))


def test_quantile_guidance_at_the_median_is_half_the_l1(prior):
    p = tsdiff_process()
    g = torch.Generator().manual_seed(2)
    obs, mask = _obs(4, g)
    x = torch.randn(4, L, 1, generator=g, dtype=f64)
    t = torch.full((4,), 0.3, dtype=f64)
    D = prior.denoiser(p)
    y = torch.where(mask, obs, 0.0)
    ll = lambda z, tb, _: -0.5 * ((y - D(z, tb)).abs() * mask).reshape(4, -1).sum(1)
    ref = classifier_guidance(D, p, ll, 3.0)(x, t)
    half = torch.full((4,), 0.5, dtype=f64)
    assert torch.allclose(self_guidance(D, p, obs, mask, 3.0, "quantile", half)(x, t), ref)
    assert torch.allclose(  # one path per series: kappa = 1/2 for every row
        self_guidance(D, p, obs, mask, 3.0, "quantile", 1)(x, t), ref
    )


def test_quantile_guidance_orders_the_sample_paths(prior):
    """TSDiff-Q with n = 5 paths per series (kappa = 1/6 ... 5/6), 40 series of the oracle
    prior, a random context value missing in half of them: the forecast (last 3 values)
    averaged over series increases with kappa (the context and the horizon are positively
    correlated). Measured (seed 3) -0.52, -0.28, -0.22, -0.02, 0.04; seeds 4 and 5 also
    increase, spreads 0.56-0.65. The test asks for a strictly increasing sequence with
    total spread > 0.3."""
    p = tsdiff_process()
    g = torch.Generator().manual_seed(3)
    n, S = 5, 40
    series = prior.sample(S, g).reshape(S, L, 1)
    mask = torch.zeros(S, L, 1, dtype=torch.bool)
    mask[:, :CTX] = True
    mask[::2, 2] = False
    obs = torch.where(mask, series, torch.full_like(series, float("nan")))
    obs, mask = obs.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    D = self_guidance(prior.denoiser(p), p, obs, mask, 4.0, "quantile", quantiles=n)
    x1 = p.prior((S * n, L, 1), generator=g, dtype=f64)
    x = sample(D, p, x1, "ddpm", nfe=99, schedule="uniform", generator=g)
    fc = x[:, CTX:, 0].mean(1).reshape(S, n).mean(0)
    assert bool((fc[1:] > fc[:-1]).all()), fc
    assert float(fc[-1] - fc[0]) > 0.3, fc


def test_self_guidance_errors(prior):
    p = tsdiff_process()
    obs, mask = _obs(4, torch.Generator().manual_seed(0))
    D = prior.denoiser(p)
    with pytest.raises(ValueError, match="energy"):
        self_guidance(D, p, obs, mask, 1.0, "l1")
    with pytest.raises(ValueError, match="differ"):
        self_guidance(D, p, obs, mask[:, :3], 1.0)
    with pytest.raises(ValueError, match="levels in"):
        self_guidance(D, p, obs, mask, 1.0, "quantile", torch.tensor([0.5, 1.0, 0.2, 0.1]))
    with pytest.raises(ValueError, match="x has shape"):
        self_guidance(D, p, obs, mask, 1.0)(torch.zeros(4, L + 1, 1, dtype=f64), 0.5)


def test_refinement_lowers_the_energy(prior):
    """Most-likely refinement with a fixed eps draw lowers E(y) = ||eps_theta - eps||^2 +
    R for both regularisers; Langevin with gamma = 0 is gradient descent (= SGD)."""
    p = tsdiff_process()
    g = torch.Generator().manual_seed(4)
    y0 = prior.sample(6, g).reshape(6, L, 1) + 0.5 * torch.randn(6, L, 1, generator=g, dtype=f64)
    mask = torch.ones(6, L, 1, dtype=torch.bool)
    D = prior.denoiser(p)
    kappa = quantile_levels(3, 6)
    for reg in ("mse", "quantile"):
        eps = p.noise(y0.shape, generator=torch.Generator().manual_seed(5), dtype=f64)
        E = lambda y: refine_energy(D, p, y, 0.21, eps, y0, mask, 1.0, reg, kappa).sum()
        kw = dict(reg=reg, kappa=kappa, fixed_noise=True, steps=10, lr=0.01)
        y = refine(D, p, y0, y0, mask, generator=torch.Generator().manual_seed(5), **kw)
        assert float(E(y)) < 0.9 * float(E(y0)), (reg, float(E(y)), float(E(y0)))
        y_l = refine(
            D, p, y0, y0, mask, "langevin", noise_scale=0.0,
            generator=torch.Generator().manual_seed(5), **kw,
        )  # fmt: skip
        assert torch.allclose(y_l, y)
        assert torch.allclose(
            refine(D, p, y0, y0, mask, optimizer="adam", **kw), y0, atol=0.2
        )  # Adam: steps of about lr
    with pytest.raises(ValueError, match="method"):
        refine(D, p, y0, y0, mask, "hmc")
    with pytest.raises(ValueError, match="kappa"):
        refine_energy(D, p, y0, 0.2, y0, y0, mask, reg="quantile")


# --------------------------------------------------------------------------------------
# A tiny TSDiff trained on a synthetic seasonal series
# --------------------------------------------------------------------------------------
PERIOD, CTX_T, H, LAGS = 12, 24, 12, (12,)


def _seasonal(n, T, g):
    """2 + a sin(2 pi t / 12 + phi) + 0.3 noise, a ~ U(0.5, 1.5), phi ~ U(0, 2 pi)."""
    t = torch.arange(T, dtype=f64)
    ph = 2 * math.pi * torch.rand(n, 1, generator=g, dtype=f64)
    a = 0.5 + torch.rand(n, 1, generator=g, dtype=f64)
    noise = 0.3 * torch.randn(n, T, generator=g, dtype=f64)
    return (2 + a * torch.sin(2 * math.pi * t / PERIOD + ph) + noise).float()


def crps(samples: torch.Tensor, y: torch.Tensor) -> float:
    """Mean CRPS of samples (B, n, H) for y (B, H): E|X - y| - E|X - X'| / 2."""
    s, y = samples.double().numpy(), y.double().numpy()
    t1 = np.abs(s - y[:, None]).mean(1)
    t2 = np.abs(s[:, :, None] - s[:, None, :]).mean((1, 2))
    return float((t1 - 0.5 * t2).mean())


def _train_and_score(steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = _seasonal(64, 240, g)
    torch.manual_seed(seed)
    net = TSDiffNet(lags=LAGS, hidden=32, num_blocks=2, emb_dim=32)
    p = tsdiff_process()
    cfg = TrainConfig(steps=steps, batch_size=64, lr=2e-3, ema_decay=0.99, seed=seed)
    res = train(Denoiser(net, p), window_sampler(data, CTX_T, H, LAGS), cfg, progress=False)
    test = _seasonal(8, CTX_T + max(LAGS) + H, torch.Generator().manual_seed(100 + seed))
    past, fut = test[:, :-H], test[:, -H:]
    naive = past[:, -PERIOD:]  # seasonal naive: repeat the last season (H = one period)
    y = forecast(
        res.ema, p, past, H, CTX_T, LAGS, num_samples=8, guidance_scale=4.0,
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    assert y.shape == (8, 8, H)
    base = naive[:, None].repeat(1, 8, 1)
    ref = refine_forecast(
        res.ema, p, past, base, CTX_T, LAGS, reg="quantile",
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    return crps(naive[:, None], fut), crps(y, fut), crps(ref, fut)


def test_tiny_tsdiff_beats_seasonal_naive():
    """300 training steps (batch 64, ~10 s on one thread), 8 test series, 8 sample paths
    by guided DDPM (100 steps, quantile energy, scale 4). CRPS measured for seeds 0 / 1 /
    2: seasonal naive 0.315 / 0.320 / 0.315, TSDiff-Q 0.218 / 0.195 / 0.226 (ratios 0.69
    / 0.61 / 0.72), the refined naive forecast (most likely, quantile regulariser, 20 SGD
    steps) 0.219 / 0.201 / 0.214 (ratios 0.69 / 0.63 / 0.68); at 200 steps TSDiff-Q is
    still 0.273 (seed 0). The test (seed 0) asks for both < 0.8 x naive."""
    naive, q, ref = _train_and_score(300)
    print(f"CRPS naive {naive:.4f} TSDiff-Q {q:.4f} refined naive {ref:.4f}")
    assert q < 0.8 * naive, (q, naive)
    assert ref < 0.8 * naive, (ref, naive)


@pytest.mark.slow
def test_tsdiff_trained_a_minute_beats_seasonal_naive():
    """1200 steps (50-75 s on one thread), otherwise as the fast test. Measured (seed 0):
    naive 0.315, TSDiff-Q 0.206 (ratio 0.65), refined naive 0.223 (0.71); with 16 paths
    and seed 1: naive 0.320, TSDiff-Q 0.165 (0.52). Asks for < 0.75 and < 0.8 x naive."""
    naive, q, ref = _train_and_score(1200)
    print(f"CRPS naive {naive:.4f} TSDiff-Q {q:.4f} refined naive {ref:.4f}")
    assert q < 0.75 * naive, (q, naive)
    assert ref < 0.8 * naive, (ref, naive)
