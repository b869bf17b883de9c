"""SuperDiff: superposing pretrained diffusion models with the Ito density estimator
(Skreta, Atanackovic, Bose, Tong & Neklyudov 2025, "The Superposition of Diffusion
Models Using the Ito Density Estimator").

**Ito density estimator.** For the forward SDE dx = f(x, t) dt + g(t) dW with marginals
q_t and l = log q_t, the Fokker-Planck equation gives
d_t l = -div f - <f, grad l> + (g^2/2)(lap l + |grad l|^2). Along the reverse SDE
dx = (f - g^2 grad l) dt + g dW (t decreasing, quadratic variation g^2 |dt|), Ito's formula
makes the Laplacians cancel:

    d l(x_t) = <grad l, dx> + (-div f - <f, grad l> + (g^2/2) |grad l|^2) dt,

so each model's log-density is tracked along the sampled trajectory from its scores alone
(no divergence of the network, no extra evaluation). With f = f(t) x (Gaussian
processes), div f = d f(t).

**Superposition.** With models i = 1..M and scores s_i, the sampler follows the score
sum_i kappa_i s_i with per-sample weights kappa (summing to one):

- OR (mixture, equal weights): kappa = softmax_i(log q_i(x_t)) is the exact score of
  the mixture (1/M) sum_i q_i;
- AND (equal densities): kappa solves the linear conditions l_i + dl_i(kappa) = l_j +
  dl_j(kappa) for all i, j, which keep the tracked densities equal, so samples drift to
  where all models are likely at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .parameterization import from_x0
from .processes import Process
from .schedules import time_grid

__all__ = ["superdiff", "ito_log_density"]


def _scores(denoisers, process, x, t):
    tb = t.expand(x.shape[0])
    return [from_x0(Di(x, tb), "score", x, tb, process) for Di in denoisers]


def _and_weights(logq, S, a_term, b, c):
    """kappa (B, M) and the common level C with logq_i + <S_i, a> + b sum_j kappa_j <S_i, S_j>
    + c_i = C for all i and sum_j kappa_j = 1 (least squares when degenerate)."""
    B, M = logq.shape
    G = torch.einsum("bid,bjd->bij", S, S)  # Gram matrix of the scores
    A = torch.zeros(B, M + 1, M + 1, dtype=logq.dtype)
    A[:, :M, :M] = b * G
    A[:, :M, M] = -1.0
    A[:, M, :M] = 1.0
    rhs = torch.zeros(B, M + 1, dtype=logq.dtype)
    rhs[:, :M] = -(logq + torch.einsum("bid,bd->bi", S, a_term) + c)
    rhs[:, M] = 1.0
    sol = torch.linalg.lstsq(A, rhs[..., None]).solution[..., 0]
    return sol[:, :M]


def superdiff(
    denoisers: Sequence[Callable[..., torch.Tensor]],
    process: Process,
    x1: torch.Tensor,
    steps: int = 200,
    mode: str = "or",
    generator: torch.Generator | None = None,
    schedule: str = "uniform",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample the OR / AND superposition of ``denoisers`` with Euler-Maruyama on the
    reverse SDE. Returns (x at t_min, log-densities (B, M) of every model at x tracked by
    the Ito estimator, started from the Gaussian prior). Costs M * steps evaluations."""
    if mode not in ("or", "and"):
        raise ValueError(f"mode must be 'or' or 'and', got {mode!r}")
    if len(denoisers) < 1:
        raise ValueError("superdiff needs at least one denoiser")
    if not process.gaussian:
        raise ValueError(f"superdiff needs a Gaussian process, not {process!r}")
    ts = time_grid(process, steps, schedule)
    x = x1.to(torch.float64).reshape(x1.shape[0], -1)
    B, d = x.shape
    sig_T = float(process.sigma(ts[0]))
    log_prior = -0.5 * (x.square().sum(1) / sig_T**2 + d * math.log(2 * math.pi * sig_T**2))
    logq = log_prior[:, None].repeat(1, len(denoisers))
    shape = x1.shape
    for i in range(steps):
        t, s = ts[i], ts[i + 1]
        dt = s - t  # < 0
        S = torch.stack(_scores(denoisers, process, x.reshape(shape), t), 1).reshape(B, -1, d)
        fcoef, g2 = process.drift_coef(t), process.diffusion_sq(t)
        f = fcoef * x
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        a_term = f * dt + torch.sqrt(g2 * -dt) * z  # dx without the score part
        b = -g2 * dt  # > 0: dx = a_term + b * (combined score)
        # the dt-part of d log q_i, per model (Ito estimator)
        c = dt * (-d * fcoef - torch.einsum("bd,bid->bi", f, S) + 0.5 * g2 * S.square().sum(-1))
        if mode == "or":
            kappa = torch.softmax(logq, dim=1)
        else:
            kappa = _and_weights(logq, S, a_term, float(b), c)
        dx = a_term + b * torch.einsum("bi,bid->bd", kappa, S)
        logq = logq + torch.einsum("bid,bd->bi", S, dx) + c
        x = x + dx
        if not bool(torch.isfinite(x).all()):
            raise FloatingPointError(f"superdiff: the state became NaN/Inf at step {i}")
    return x.reshape(shape).to(x1.dtype), logq


def ito_log_density(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    x1: torch.Tensor,
    steps: int = 200,
    generator: torch.Generator | None = None,
    schedule: str = "uniform",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one model's reverse SDE and track its log-density with the Ito estimator:
    (x at t_min, log q_{t_min}(x) estimate (B,))."""
    x, logq = superdiff([denoiser], process, x1, steps, "or", generator, schedule)
    return x, logq[:, 0]
