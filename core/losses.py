"""Training losses, all as one weighted denoising loss.

Every regression target of diffusion and flow training is linear in (x0, eps) given x_t,
so its squared error is a time-dependent multiple of the data-prediction error
||D(x_t, t) - x0||^2 (Kingma et al. 2021/2023, "Understanding diffusion objectives"):

    x0         w = 1
    eps        w = (alpha / sigma)^2                 DDPM's L_simple (Ho et al. 2020)
    v          w = ((alpha^2 + sigma^2) / sigma)^2   (Salimans & Ho 2022)
    velocity   w = (alpha' - sigma' alpha / sigma)^2 flow matching / rectified flow /
                                                     the interpolant velocity loss
    score      w = (alpha / sigma^2)^2               the interpolant score loss
    edm        w = (s~^2 + sd^2) / (s~ sd)^2, s~ = sigma/alpha (Karras et al. 2022, eq. 8)

The PFGM++ loss is the ``edm`` loss under ``PFGMPP`` (its heavy-tailed perturbation comes
from ``process.noise``; Xu et al. 2023, eq. 6). Time sampling is ``uniform`` on
[t_min, t_max] or EDM's ``lognormal`` on s~ (ln s~ ~ N(P_mean, P_std^2)).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .processes import Process
from .utils import coef

__all__ = ["WEIGHTINGS", "loss_weight", "sample_times", "diffusion_loss"]

WEIGHTINGS = ("x0", "eps", "v", "velocity", "score", "edm")
TIME_SAMPLING = ("uniform", "lognormal")


def loss_weight(
    process: Process, t: torch.Tensor, weighting: str, sigma_data: float = 0.5
) -> torch.Tensor:
    """The weight w(t) that turns the x0 error into the error of target ``weighting``."""
    a, s = process.alpha(t), process.sigma(t)
    if weighting == "x0":
        return torch.ones_like(a)
    if weighting == "eps":
        return (a / s) ** 2
    if weighting == "v":
        return ((a**2 + s**2) / s) ** 2
    if weighting == "velocity":
        return (process.d_alpha(t) - process.d_sigma(t) * a / s) ** 2
    if weighting == "score":
        return (a / s**2) ** 2
    if weighting == "edm":
        st = s / a
        return (st**2 + sigma_data**2) / (st * sigma_data) ** 2
    raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")


def sample_times(
    process: Process,
    n: int,
    generator: torch.Generator | None = None,
    time_sampling: str = "uniform",
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> torch.Tensor:
    """n training times (float64) in [t_min, t_max]."""
    lo, hi = process.t_min, process.t_max
    if time_sampling == "uniform":
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    if time_sampling == "lognormal":
        log_st = p_mean + p_std * torch.randn(n, generator=generator, dtype=torch.float64)
        t = process.t_of_log_snr(-2.0 * log_st)
        return t.clamp(lo, hi)
    raise ValueError(f"unknown time_sampling {time_sampling!r}; choose one of {TIME_SAMPLING}")


def diffusion_loss(
    denoiser: Any,
    process: Process,
    x0: torch.Tensor,
    weighting: str = "eps",
    time_sampling: str = "uniform",
    generator: torch.Generator | None = None,
    cond: Any = None,
    sigma_data: float = 0.5,
    cond_drop: float = 0.0,
    null_cond: Any = None,
) -> torch.Tensor:
    """E_t E_noise [ w(t) ||D(x_t, t) - x0||^2 ] / numel, averaged over the batch.

    t and the noise are drawn with ``generator``; x_t = process.perturb(x0, t, noise).
    ``cond_drop``: the probability of replacing each sample's condition (a tensor with a
    batch dimension) by ``null_cond`` (e.g. the MLP's extra label ``num_classes``), which
    trains the conditional and the unconditional model at once for classifier-free
    guidance (Ho & Salimans 2022); the drops are drawn from ``generator`` too.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
    if not math.isfinite(sigma_data) or sigma_data <= 0:
        raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
    t = sample_times(process, x0.shape[0], generator, time_sampling).to(x0.device)
    noise = process.noise(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    xt = process.perturb(x0, t, noise)
    if cond_drop:
        if not 0.0 <= cond_drop <= 1.0:
            raise ValueError(f"cond_drop must lie in [0, 1], got {cond_drop}")
        if (
            not isinstance(cond, torch.Tensor)
            or cond.shape[:1] != x0.shape[:1]
            or null_cond is None
        ):
            raise ValueError(
                "cond_drop needs cond as a tensor with a batch dimension and a null_cond"
            )
        u = torch.rand(x0.shape[0], generator=generator, dtype=torch.float64).to(cond.device)
        drop = (u < cond_drop).reshape(-1, *([1] * (cond.ndim - 1)))
        cond = torch.where(
            drop, torch.as_tensor(null_cond, dtype=cond.dtype, device=cond.device), cond
        )
    pred = denoiser(xt, t) if cond is None else denoiser(xt, t, cond)
    w = coef(loss_weight(process, t, weighting, sigma_data), x0)
    return (w * (pred - x0) ** 2).mean()
