"""RED-Diff: the analytic gradient of its loss against autograd, and its variational means
on the MCGdiff oracle (exact GMM denoiser under VP()) against the exact posterior."""

import math

import pytest
import torch

from diffsci.core import VP
from diffsci.restoration import (
    POSTERIOR_SAMPLERS,
    Dense,
    Inpainting,
    LinearOperator,
    SuperResolution,
    mcgdiff_problem,
    posterior_sample,
    random_mask,
)
from diffsci.restoration.reddiff import WEIGHTINGS, reddiff, reddiff_loss, snr_weight

f64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "A",
    [
        Dense(torch.randn(3, 8, generator=gen(0), dtype=f64), x_shape=(8,)),
        Inpainting(random_mask((2, 4, 4), 0.4, gen(1))),
        SuperResolution((1, 6, 6), 2),
    ],
    ids=["dense", "inpainting", "sr"],
)
def test_loss_gradient_matches_autograd(A):
    """d loss / d mu with eps_hat - eps held constant (the stop-gradient), per-row weights."""
    B = 4
    mu = torch.randn(B, *A.x_shape, generator=gen(2), dtype=f64).requires_grad_(True)
    y = torch.randn(B, *A.y_shape, generator=gen(3), dtype=f64)
    eps = torch.randn(B, *A.x_shape, generator=gen(4), dtype=f64)
    # eps_hat depends on mu through the network in the sampler; the loss must not see it
    eps_hat = eps + 0.3 * torch.tanh(mu)
    w = torch.tensor([0.1, 1.0, 2.5, 7.0], dtype=f64)
    loss, grad = reddiff_loss(A, y, mu, eps, eps_hat, w, obs_weight=1.7)
    (auto,) = torch.autograd.grad(loss.sum(), mu)
    assert loss.shape == (B,)
    assert torch.allclose(grad, auto, atol=1e-12, rtol=1e-10)
    # the value itself, written out a second way
    r = (y - A(mu)).reshape(B, -1)
    want = 1.7 * (r**2).mean(1) / 2 + w * ((eps_hat - eps) * mu).reshape(B, -1).mean(1)
    assert torch.allclose(loss, want, atol=1e-12)


def test_snr_weights():
    a, s = 0.6, 0.8
    r = s / a
    want = {
        "linear": r,
        "sqrt": r**0.5,
        "square": r**2,
        "log": math.log(1 + r),
        "trunc_linear": 1.0,
        "power2over3": r ** (2 / 3),
        "const": 1.0,
    }
    assert set(want) == set(WEIGHTINGS)
    for k, v in want.items():
        assert snr_weight(k, a, s) == pytest.approx(v)
    assert snr_weight("constant", a, s) == 1.0


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_means_approach_a_posterior_mode(seed):
    """mcgdiff_problem(8, 2, seed), official defaults (lambda 0.25, lr 0.1, linear weight,
    mu0 = A^+ y), 1000 steps, 50 rows. RED-Diff is mode seeking: in the null space of A
    (where only the prior speaks) each mu sits at a mixture mean's projection, and it fits
    the data. Measured over 50 rows (seeds 1 / 2 / 4): null-space distance to the nearest
    posterior component mean max 1.30 / 1.19 / 1.30 (exact posterior samples: median about
    2.4); ||y - A mu|| max 0.013 / 0.013 / 0.019 against
    sigma_y = 0.094 / 0.383 / 0.207. Bounds: 1.6 and 0.25 sigma_y."""
    P = mcgdiff_problem(8, 2, seed)
    p = VP()
    x1 = p.prior((50, 8), generator=gen(0), dtype=f64)
    r = reddiff(P.prior.denoiser(p), p, P.A, P.y, x1, 1000, gen(1))
    assert r.x.shape == (50, 8) and r.evals == 50 * 1000 and r.log_weights is None
    M = P.A.matrix()
    null = torch.eye(8, dtype=f64) - torch.linalg.pinv(M) @ M
    means = P.posterior.means @ null

    def null_dist(x):
        return torch.cdist(x @ null, means).min(1).values

    exact = P.posterior.sample(2000, gen(2))
    assert float(null_dist(exact).median()) > 2.0
    assert float(null_dist(r.x).max()) < 1.6
    res = (P.y - P.A(r.x)).norm(dim=1)
    assert float(res.max()) < 0.25 * P.A.sigma_y


def test_registered_and_reproducible():
    P = mcgdiff_problem(8, 2, 0)
    p = VP()
    D = P.prior.denoiser(p)
    assert POSTERIOR_SAMPLERS["reddiff"] is reddiff
    y = torch.cat([P.y, P.y + 1.0])  # two measurements, K = 3 rows each
    x1 = p.prior((6, 8), generator=gen(0), dtype=f64)
    a = posterior_sample("reddiff", D, p, P.A, y, x1, 20, gen(3), weighting="sqrt", lr=0.3)
    b = posterior_sample("reddiff", D, p, P.A, y, x1, 20, gen(3), weighting="sqrt", lr=0.3)
    c = posterior_sample("reddiff", D, p, P.A, y, x1, 20, gen(4), weighting="sqrt", lr=0.3)
    assert a.groups == 2 and a.evals == 6 * 20
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    init = posterior_sample("reddiff", D, p, P.A, y, x1, 3, gen(3), init="x1", lr=1e-6)
    assert torch.allclose(init.x, x1, atol=1e-4)


class _NoSVD(LinearOperator):
    def __init__(self):
        super().__init__((4,), (2,))

    def _forward(self, x):
        return x[:, :2]

    def _adjoint(self, y):
        return torch.cat([y, torch.zeros_like(y)], 1)


def test_bad_options_raise():
    P = mcgdiff_problem(8, 2, 0)
    p = VP()
    D = P.prior.denoiser(p)
    x1 = p.prior((2, 8), generator=gen(0), dtype=f64)
    for kw, msg in [
        ({"weighting": "cubic"}, "unknown weighting"),
        ({"lr": 0.0}, "lr must be"),
        ({"lam": -1.0}, "lam must be"),
        ({"obs_weight": float("nan")}, "obs_weight must be"),
        ({"init": "zeros"}, "init must be"),
        ({"betas": (0.9, 1.0)}, "betas"),
    ]:
        with pytest.raises(ValueError, match=msg):
            reddiff(D, p, P.A, P.y, x1, 5, gen(1), **kw)
    with pytest.raises(ValueError, match="x1 has 3 rows"):
        reddiff(D, p, P.A, torch.cat([P.y, P.y]), x1[:1].repeat(3, 1), 5)
    A = _NoSVD()
    x1 = torch.zeros(1, 4, dtype=f64)
    y = torch.zeros(1, 2, dtype=f64)
    D0 = lambda x, t, cond=None: torch.zeros_like(x)
    with pytest.raises(ValueError, match="needs an operator with an SVD"):
        reddiff(D0, p, A, y, x1, 5)
    assert reddiff(D0, p, A, y, x1, 5, init="adjoint").x.shape == (1, 4)
