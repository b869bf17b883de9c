"""Conversions round-trip for every process and target; the Denoiser wrapper."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffsci.core import (
    EDM,
    PFGMPP,
    PREDICTIONS,
    VE,
    VP,
    Denoiser,
    Interpolant,
    SubVP,
    from_x0,
    to_x0,
)
from diffsci.core.nets import MLP

PROCESSES = [
    VP(),
    VP("cosine"),
    VE(),
    EDM(),
    SubVP(),
    Interpolant(),
    Interpolant("trig", 0.3),
    PFGMPP(),
]


@settings(max_examples=60, deadline=None)
@given(
    pi=st.integers(0, len(PROCESSES) - 1),
    kind=st.sampled_from(PREDICTIONS),
    u=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(3, 2), (2, 5, 3), (1, 2, 4, 4)]),
)
def test_conversions_round_trip(pi, kind, u, seed, shape):
    p = PROCESSES[pi]
    if kind == "score" and not p.gaussian:
        return
    t = torch.tensor(p.t_min + u * (p.t_max - p.t_min), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    x = p.perturb(x0, t, eps)
    pred = from_x0(x0, kind, x, t, p)
    back = to_x0(pred, kind, x, t, p)
    scale = 1 + x0.abs().max()
    assert torch.allclose(back, x0, atol=1e-7 * float(scale) / max(float(p.alpha(t)), 1e-3))
    # the prediction of the true (x0, eps) pair is the textbook target
    a, s = p.alpha(t), p.sigma(t)
    truth = {
        "x0": x0,
        "eps": eps,
        "v": a * eps - s * x0,
        "score": -eps / s,
        "velocity": p.d_alpha(t) * x0 + p.d_sigma(t) * eps,
    }[kind]
    assert torch.allclose(pred, truth, rtol=1e-6, atol=1e-6 * float(truth.abs().max() + 1))


@pytest.mark.parametrize("p", [VP(), SubVP(), VE(), Interpolant("trig", 0.5)], ids=str)
def test_velocity_is_the_probability_flow_drift(p):
    """alpha' x0 + sigma' eps == f x - g^2/2 score (Song et al. 2021, eq. 13)."""
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0.05, 0.9, 4, dtype=torch.float64)
    x0, eps = (
        torch.randn(4, 3, generator=g, dtype=torch.float64),
        torch.randn(4, 3, generator=g, dtype=torch.float64),
    )
    x = p.perturb(x0, t, eps)
    v = from_x0(x0, "velocity", x, t, p)
    score = from_x0(x0, "score", x, t, p)
    drift = p.drift_coef(t)[:, None] * x - 0.5 * p.diffusion_sq(t)[:, None] * score
    assert torch.allclose(v, drift, atol=1e-9)


def test_rectified_flow_velocity_is_noise_minus_data():
    p = Interpolant("linear")
    g = torch.Generator().manual_seed(0)
    x0, x1 = (
        torch.randn(5, 2, generator=g, dtype=torch.float64),
        torch.randn(5, 2, generator=g, dtype=torch.float64),
    )
    t = torch.full((5,), 0.3, dtype=torch.float64)
    x = p.perturb(x0, t, x1)
    assert torch.allclose(from_x0(x0, "velocity", x, t, p), x1 - x0)


class Zero(torch.nn.Module):
    def forward(self, x, t, cond=None):
        return torch.zeros_like(x)


def test_edm_preconditioning_matches_karras_table_1():
    """With F = 0, D = c_skip x = sd^2 / (sigma^2 + sd^2) x for EDM (alpha = 1)."""
    p = EDM(sigma_data=0.5)
    den = Denoiser(Zero(), p, prediction="x0", precondition="edm", sigma_data=0.5)
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.001, 0.01, 0.1, 1.0], dtype=torch.float64)
    sig = p.sigma(t)[:, None]
    assert torch.allclose(den(x, t), 0.25 / (sig**2 + 0.25) * x)
    # under VP the same rule acts on x / alpha with sigma~ = sigma / alpha
    vp = VP()
    den = Denoiser(Zero(), vp, prediction="x0", precondition="edm", sigma_data=0.5)
    a, st_ = vp.alpha(t)[:, None], (vp.sigma(t) / vp.alpha(t))[:, None]
    assert torch.allclose(den(x, t), 0.25 / (st_**2 + 0.25) * x / a)


def test_denoiser_converts_network_output_and_round_trips_config():
    p = VP()
    net = MLP(dim=3, hidden=16, depth=1)
    den = Denoiser(net, p, prediction="v")
    x = torch.randn(4, 3)
    t = torch.rand(4, dtype=torch.float64)
    with torch.no_grad():
        out = net(x, t.float())
        assert torch.allclose(den(x, t), to_x0(out, "v", x, t, p))
        den2 = Denoiser.from_config(den.config())
        den2.net.load_state_dict(net.state_dict())
        assert torch.equal(den2(x, t), den(x, t))


def test_denoiser_errors():
    with pytest.raises(ValueError, match="unknown prediction"):
        Denoiser(Zero(), VP(), prediction="noise")
    with pytest.raises(ValueError, match="prediction='x0'"):
        Denoiser(Zero(), EDM(), prediction="eps", precondition="edm")
    with pytest.raises(ValueError, match="only for Gaussian"):
        Denoiser(Zero(), PFGMPP(), prediction="score")

    class Bad(torch.nn.Module):
        def forward(self, x, t):
            return x[:, :1]

    with pytest.raises(ValueError, match="output shape"):
        Denoiser(Bad(), VP())(torch.zeros(2, 3), 0.5)
    with pytest.raises(ValueError, match="time has shape"):
        Denoiser(Zero(), VP())(torch.zeros(2, 3), torch.zeros(3))
