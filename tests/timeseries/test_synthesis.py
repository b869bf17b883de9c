"""TSDiff synthesis and its scores (Kollovieh et al. 2023): the ridge LPS re-derived in
closed form (an exact AR map, an augmented least-squares system, GluonTS's Evaluator),
unconditional synthesis against the exact Gaussian-mixture oracle, and a TSTR smoke run."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from diffsci.core import Denoiser, GaussianMixture
from diffsci.timeseries.model import TSDiffNet, tsdiff_process
from diffsci.timeseries.synthesis import (
    fit_linear_predictor,
    fit_ridge,
    linear_forecast,
    linear_predictive_score,
    lps_windows_from_series,
    point_forecast_metrics,
    split_test_entries,
    synthesize,
    train_on_synthetic,
    tstr_score,
    windows_to_entries,
)

f64 = torch.float64
CTX, H, PERIOD = 24, 6, 12


def _seasonal(n, phase=0.0, noise=0.0, seed=0):
    t = np.arange(n) + phase
    y = 10 + 3 * np.sin(2 * np.pi * t / PERIOD) + 1.5 * np.cos(2 * np.pi * t / 4)
    if noise:
        y = y + noise * np.random.default_rng(seed).standard_normal(n)
    return y.astype(np.float32)


def _split(noise=0.0):
    """Three pure seasonal series at different phases: train = first 300 points, test =
    7 rolling windows of H after it (as data.py's rolling split)."""
    series = [_seasonal(400, ph, noise, seed=k) for k, ph in enumerate((0, 3, 7))]
    start = pd.Period("2020-01-01 00:00", freq="h")
    train = [{"start": start, "target": s[:300], "item_id": str(i)} for i, s in enumerate(series)]
    test = [
        {"start": start, "target": s[: 300 + k * H], "item_id": f"{i}/{k}"}
        for i, s in enumerate(series)
        for k in range(1, 8)
    ]
    return train, test


# --------------------------------------------------------------------------------------
# The ridge regression and the LPS
# --------------------------------------------------------------------------------------
def _ar_windows(n, a, g):
    """Contexts iid U(-0.5, 1.5), horizons by the noiseless AR recursion
    y_t = sum_k a_k y_{t-k}. (Signs are mixed: positive contexts scaled to mean |x| = 1
    would all have sum x = CTX, a collinearity that leaves W unidentified at ridge 0.)"""
    x = 2 * torch.rand(n, CTX, generator=g, dtype=f64) - 0.5
    w = x
    for _ in range(H):
        nxt = sum(a_k * w[:, -1 - k] for k, a_k in enumerate(a))
        w = torch.cat([w, nxt[:, None]], 1)
    return w


def _ar_map(a):
    """The exact context -> horizon map of the AR recursion, W (CTX, H) with y = x W:
    the state s_T = (x_T, ..., x_{T-p+1}) evolves by the companion matrix A, so
    y_h = (A^h s_T)_0, i.e. W[CTX - 1 - j, h - 1] = (A^h)[0, j]."""
    p = len(a)
    A = torch.zeros(p, p, dtype=f64)
    A[0] = torch.tensor(a, dtype=f64)
    A[1:, :-1] = torch.eye(p - 1, dtype=f64)
    W = torch.zeros(CTX, H, dtype=f64)
    Ah = torch.eye(p, dtype=f64)
    for h in range(H):
        Ah = A @ Ah
        for j in range(p):
            W[CTX - 1 - j, h] = Ah[0, j]
    return W


@pytest.mark.parametrize("rescale", [False, True])
def test_ridge_recovers_an_exact_ar_map(rescale):
    a = (0.5, -0.3, 0.2)
    g = torch.Generator().manual_seed(0)
    W, b = fit_linear_predictor(_ar_windows(500, a, g), CTX, H, ridge=0.0, rescale=rescale)
    assert torch.allclose(W, _ar_map(a), atol=1e-9) and b.abs().max() < 1e-9
    # mean scaling is linear and the map homogeneous: the unscaled forecast is exact too
    test = _ar_windows(50, a, g)
    yhat = linear_forecast(W, b, test[:, :CTX], CTX)
    assert torch.allclose(yhat, test[:, CTX:], atol=1e-9)
    score = linear_predictive_score(
        _ar_windows(500, a, g), test[:, :CTX], test[:, CTX:], CTX, H, 0.0
    )
    assert score["ND"] < 1e-9


def test_fit_ridge_solves_the_augmented_least_squares_system():
    """argmin ||Xc W - Yc||^2 + lam ||W||^2 is least squares on [Xc; sqrt(lam) I] W =
    [Yc; 0], and the unpenalised intercept is mean(Y) - mean(X) W."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(40, 7, generator=g, dtype=f64) + 3.0
    Y = X @ torch.randn(7, 3, generator=g, dtype=f64) + torch.randn(40, 3, generator=g, dtype=f64)
    for lam in (0.0, 0.5, 10.0):
        W, b = fit_ridge(X, Y, lam)
        Xc, Yc = (X - X.mean(0)).numpy(), (Y - Y.mean(0)).numpy()
        A = np.vstack([Xc, math.sqrt(lam) * np.eye(7)])
        W_ref = np.linalg.lstsq(A, np.vstack([Yc, np.zeros((7, 3))]), rcond=None)[0]
        assert np.allclose(W.numpy(), W_ref, atol=1e-10)
        assert torch.allclose(b, Y.mean(0) - X.mean(0) @ W, atol=1e-12)
    # a larger ridge shrinks the weights
    assert fit_ridge(X, Y, 100.0)[0].norm() < fit_ridge(X, Y, 1.0)[0].norm()


def test_point_metrics_match_gluonts_evaluator():
    """ND, NRMSE and mean_wQuantileLoss of a one-sample forecast, by GluonTS; the last is
    ND (the CRPS of a point forecast is its absolute error; mean q over 0.1..0.9 is 1/2)."""
    from gluonts.evaluation import Evaluator
    from gluonts.model.forecast import SampleForecast

    g = torch.Generator().manual_seed(2)
    y = 5 + torch.randn(6, H, generator=g, dtype=f64)
    yhat = y + 0.7 * torch.randn(6, H, generator=g, dtype=f64)
    ours = point_forecast_metrics(y, yhat)
    start = pd.Period("2021-03-01 00:00", freq="h")
    idx = pd.period_range(start, periods=H, freq="h")
    tss = [pd.DataFrame(y[i].numpy(), index=idx) for i in range(6)]
    fcs = [SampleForecast(yhat[i].numpy()[None], start_date=start) for i in range(6)]
    ref, _ = Evaluator(num_workers=0)(tss, fcs, num_series=6)
    for k in ("ND", "NRMSE", "mean_wQuantileLoss"):
        assert ours[k] == pytest.approx(float(ref[k]), rel=1e-9), k
    assert ours["CRPS"] == ours["ND"] == ours["mean_wQuantileLoss"]


def test_lps_separates_seasonal_windows_from_noise_and_shuffles():
    """Measured (seeds 0-2, 2000 windows): ND 3.6e-4 for windows of the series itself
    (1e-7 with ridge 0); 0.20-0.22 for N(1, 0.3^2) noise windows and 0.19-0.21 for the
    same windows with their time points permuted; predicting the context mean: 0.21."""
    train, test = _split()
    past, future = split_test_entries(test, CTX, H)
    g = torch.Generator().manual_seed(0)
    real = lps_windows_from_series(train, CTX, H, 2000, generator=g)
    assert real.shape == (2000, CTX + H)
    assert torch.allclose(real[:, :CTX].abs().mean(1), torch.ones(2000, dtype=real.dtype))
    good = linear_predictive_score(real, past, future, CTX, H)
    noise = 1 + 0.3 * torch.randn(2000, CTX + H, generator=g, dtype=f64)
    shuffled = torch.stack([w[torch.randperm(CTX + H, generator=g)] for w in real])
    bad_noise = linear_predictive_score(noise, past, future, CTX, H)
    bad_shuffled = linear_predictive_score(shuffled, past, future, CTX, H)
    assert good["ND"] < 5e-3 and good["NRMSE"] < 5e-3
    assert bad_noise["ND"] > 0.1 and bad_shuffled["ND"] > 0.1
    assert all(math.isfinite(v) for d in (good, bad_noise, bad_shuffled) for v in d.values())


def test_split_test_entries_takes_the_last_window_and_pads_short_ones():
    y = np.arange(40, dtype=np.float32)
    past, future = split_test_entries([{"target": y}, {"target": y[:10]}], CTX, H)
    assert past.shape == (2, CTX) and future.shape == (2, H)
    assert torch.equal(future[0], torch.arange(34, 40, dtype=f64))
    assert torch.equal(past[0], torch.arange(10, 34, dtype=f64))
    assert torch.isnan(past[1, :20]).all() and torch.equal(
        past[1, 20:], torch.arange(4.0, dtype=f64)
    )
    # the missing part enters the forecast as 0: sum of the scaled context, times s
    W, b = torch.ones(CTX, H, dtype=f64), torch.zeros(H, dtype=f64)
    assert torch.allclose(linear_forecast(W, b, past, CTX)[1], torch.full((H,), 6.0, dtype=f64))


def test_lps_errors():
    w = torch.rand(10, CTX + H)
    past, fut = torch.rand(3, CTX), torch.rand(3, H)
    with pytest.raises(ValueError, match="are needed"):
        linear_predictive_score(w[:, :-1], past, fut, CTX, H)
    with pytest.raises(ValueError, match=r"shape \(N, T\)"):
        linear_predictive_score(w[0], past, fut, CTX, H)
    with pytest.raises(ValueError, match="finite"):
        linear_predictive_score(torch.full_like(w, float("nan")), past, fut, CTX, H)
    with pytest.raises(ValueError, match=r"real_test_future must have shape \(3, 6\)"):
        linear_predictive_score(w, past, fut[:, :-1], CTX, H)
    with pytest.raises(ValueError, match="context_length 24 are needed"):
        linear_predictive_score(w, past[:, 1:], fut, CTX, H)
    with pytest.raises(ValueError, match="ridge"):
        linear_predictive_score(w, past, fut, CTX, H, ridge=-1.0)
    with pytest.raises(ValueError, match="positive integer"):
        linear_predictive_score(w, past, fut, 0, H)
    with pytest.raises(ValueError, match="longer than prediction_length"):
        split_test_entries([{"target": np.ones(H)}], CTX, H)
    with pytest.raises(ValueError, match="no series is long enough"):
        lps_windows_from_series([np.ones(CTX + H - 1)], CTX, H, 5)


# --------------------------------------------------------------------------------------
# Synthesis
# --------------------------------------------------------------------------------------
def _tiny(lags=(2,)):
    torch.manual_seed(0)
    return Denoiser(
        TSDiffNet(lags=lags, hidden=8, num_blocks=1, emb_dim=8, modes=4), tsdiff_process()
    )


def test_synthesize_shape_determinism_and_finiteness():
    D, p = _tiny(), tsdiff_process()
    kw = dict(lags=(2,), batch_size=3)
    a = synthesize(D, p, 5, 10, generator=torch.Generator().manual_seed(1), **kw)
    b = synthesize(D, p, 5, 10, generator=torch.Generator().manual_seed(1), **kw)
    c = synthesize(D, p, 5, 10, generator=torch.Generator().manual_seed(2), **kw)
    assert a.shape == (5, 10) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not a.requires_grad
    # a short DDPM run (4 steps of the grid) works as well
    d = synthesize(D, p, 2, 10, nfe=4, generator=torch.Generator().manual_seed(3), **kw)
    assert d.shape == (2, 10) and torch.isfinite(d).all()


def test_synthesize_default_nfe_and_final_denoising():
    """Default: 99 DDPM steps on the T = 100 grid plus the final x0 at t_min."""
    p = tsdiff_process()
    calls, times = [0], []

    def D(x, t, cond=None):
        calls[0] += 1
        times.append(float(t[0]))
        return torch.zeros_like(x)

    out = synthesize(D, p, 3, 4, generator=torch.Generator().manual_seed(0))
    assert calls[0] == len(p.knots) - 1 + 1 == 100
    assert times[-1] == pytest.approx(p.t_min) and torch.equal(out, torch.zeros(3, 4))


def test_synthesize_matches_the_gaussian_mixture_oracle():
    """With the exact denoiser of a 2-component GMM over length-8 series, the synthetic
    windows have the mixture's mean, covariance and weights. Measured (seeds 0-2, 4000
    windows): max |mean error| 0.013-0.026 and max |cov error| 0.009-0.054 (exact draws:
    0.024-0.031 and 0.011-0.022); positive-component share 0.699-0.708 (true 0.7)."""
    L = 8
    i = torch.arange(L, dtype=f64)
    cov = 0.3 * 0.9 ** (i[:, None] - i[None]).abs()
    gmm = GaussianMixture([0.3, 0.7], [[-1.0] * L, [1.0] * L], torch.stack([cov, 0.5 * cov]))
    p = tsdiff_process()
    x = synthesize(
        gmm.denoiser(p),
        p,
        4000,
        L,
        generator=torch.Generator().manual_seed(0),
        dtype=f64,
        batch_size=2000,
    )
    w, mu, C = gmm.weights, gmm.means, gmm.covs
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (C + mu[:, :, None] * mu[:, None, :])).sum(0)
    assert (x.mean(0) - mean).abs().max() < 0.08
    assert (torch.cov(x.T) - (second - mean[:, None] * mean[None])).abs().max() < 0.15
    assert abs(float((x.mean(1) > 0).double().mean()) - 0.7) < 0.04


def test_synthesize_errors():
    D, p = _tiny(), tsdiff_process()
    with pytest.raises(ValueError, match="num_windows"):
        synthesize(D, p, 0, 10, lags=(2,))
    with pytest.raises(ValueError, match="length"):
        synthesize(D, p, 2, 0, lags=(2,))
    with pytest.raises(ValueError, match="distinct"):
        synthesize(D, p, 2, 10, lags=(2, 2))
    with pytest.raises(ValueError, match="target \\+ 1 lags"):  # the net's channels
        synthesize(D, p, 2, 10, lags=())
    with pytest.raises(ValueError, match="unknown solver"):
        synthesize(D, p, 2, 10, lags=(2,), solver="nope")


# --------------------------------------------------------------------------------------
# Train on synthetic, test on real
# --------------------------------------------------------------------------------------
def test_windows_to_entries_and_tstr_errors():
    w = torch.rand(3, CTX + H)
    e = windows_to_entries(w, "h")
    assert len(e) == 3 and e[0]["start"] == pd.Period("2023-01-01", freq="h")
    assert e[1]["target"].dtype == np.float32 and np.allclose(e[1]["target"], w[1].numpy())
    with pytest.raises(ValueError, match="are needed"):
        train_on_synthetic(w[:, :-1], "h", H, CTX)
    with pytest.raises(ValueError, match="finite"):
        windows_to_entries(w * float("nan"), "h")


def test_tstr_scaling_is_undone_exactly_for_seasonal_naive():
    """Seasonal naive is scale-equivariant, so scoring it through the scaled pipeline
    equals scoring it directly, and both equal the point metrics of y[t - 12]."""
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor

    _, test = _split(noise=0.5)
    pred = SeasonalNaivePredictor(prediction_length=H, season_length=PERIOD)
    scaled = tstr_score(pred, test, CTX, num_samples=1)
    plain = tstr_score(pred, test, CTX, num_samples=1, scaling=False)
    past, future = split_test_entries(test, CTX, H)
    ref = point_forecast_metrics(future, past[:, CTX - PERIOD : CTX - PERIOD + H])
    for k in ("ND", "NRMSE", "CRPS"):
        assert scaled[k] == pytest.approx(plain[k], rel=1e-5) == pytest.approx(ref[k], rel=1e-5)


def test_tstr_smoke_with_a_tiny_deepar():
    train, test = _split()
    windows = lps_windows_from_series(train, CTX, H, 64, generator=torch.Generator().manual_seed(0))
    kw = dict(max_epochs=1, num_batches_per_epoch=2, batch_size=16, hidden_size=8, num_layers=1)
    pred = train_on_synthetic(
        windows, "h", H, CTX, generator=torch.Generator().manual_seed(0), **kw
    )
    assert pred.prediction_length == H
    m1 = tstr_score(pred, test, CTX, num_samples=10, generator=torch.Generator().manual_seed(1))
    m2 = tstr_score(pred, test, CTX, num_samples=10, generator=torch.Generator().manual_seed(1))
    assert set(m1) == {"mean_wQuantileLoss", "ND", "NRMSE", "CRPS"}
    assert all(math.isfinite(v) and v >= 0 for v in m1.values())
    assert m1 == m2
