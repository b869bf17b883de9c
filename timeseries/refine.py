"""Refinement of any forecaster's samples with TSDiff's implicit density (Kollovieh et al.
2023, "Predict, Refine, Synthesize", the section on prediction refinement).

The trained denoiser defines an energy over windows y (B, L, C), its denoising loss at a
fixed diffusion time tau plus a regulariser tying y to the base forecast y_base and the
observed context:

    E(y) = || eps_theta(sqrt(abar_tau) y + sqrt(1 - abar_tau) eps, tau) - eps ||^2
           + lambda R(y, y_base),

with fresh eps ~ N(0, I) each iteration, R the squared error (``"mse"``) or the pinball
loss at level kappa_i = i / (n + 1) for the i-th of n sorted base samples
(``"quantile"``). Two ways to use it, as the paper (and amazon-science/
unconditional-time-series-diffusion, ``sampler/refiner.py``):

- most likely: gradient descent on E (SGD with lr 0.1 and 20 iterations in the
  official configs; Adam is offered too);
- Langevin: y <- y - eta grad E + sqrt(2 eta) gamma xi (eta = 0.1, gamma = 0.1, 20 steps).

eps_theta comes from any diffsci denoiser through ``core.parameterization.to_eps``, so
any process works; tau = 0.21 is the official fixed_t = 20 of the T = 100 grid
(t = (20 + 1) / 100).

Two deliberate differences from the official code: the lag channels of the horizon are
filled from the base forecast (the official code leaves them at zero and, with the
squared-error regulariser, pulls them towards zero), and R skips unobserved (missing)
context values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from diffsci.core.parameterization import to_eps
from diffsci.core.processes import Process
from diffsci.core.utils import batch_time, check_positive_int, coef

from .model import make_window, unscale

__all__ = ["quantile_levels", "refine_energy", "refine", "refine_forecast"]

METHODS = ("most_likely", "langevin")


def quantile_levels(n: int, batch: int) -> torch.Tensor:
    """kappa of every row when each series has n sample paths in consecutive rows:
    (r mod n + 1) / (n + 1), float64 (B,)."""
    check_positive_int("n", n)
    return (torch.arange(batch) % n + 1).double() / (n + 1)


def refine_energy(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    y: torch.Tensor,
    t: float | torch.Tensor,
    noise: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    lam: float = 1.0,
    reg: str = "mse",
    kappa: torch.Tensor | None = None,
) -> torch.Tensor:
    """E(y) per row (B,): ||eps_theta(x_tau, tau) - eps||^2 + lam R(y, target), R summed
    over ``mask`` (squared error, or pinball loss at the row levels ``kappa``)."""
    if reg not in ("mse", "quantile"):
        raise ValueError(f"reg must be 'mse' or 'quantile', got {reg!r}")
    if not (target.shape == mask.shape == y.shape == noise.shape):
        raise ValueError("y, noise, target and mask must have the same shape")
    B = y.shape[0]
    tb = batch_time(t, y)
    xt = process.perturb(y, tb, noise)
    eps_hat = to_eps(denoiser(xt, tb), xt, tb, process)
    e_diff = (eps_hat - noise).square().reshape(B, -1).sum(1)
    m = mask.bool()
    r = torch.where(m, target, torch.zeros_like(target)) - y
    if reg == "mse":
        R = r.square()
    else:
        if kappa is None or kappa.shape != (B,):
            raise ValueError(f"the quantile regulariser needs kappa of shape ({B},)")
        k = coef(kappa, r)
        R = torch.maximum(k * r, (k - 1.0) * r)
    R = torch.where(m, R, torch.zeros_like(R)).reshape(B, -1).sum(1)
    return e_diff + lam * R


def refine(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    y_init: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    method: str = "most_likely",
    steps: int = 20,
    lr: float = 0.1,
    t: float = 0.21,
    lam: float = 1.0,
    reg: str = "mse",
    kappa: torch.Tensor | None = None,
    noise_scale: float = 0.1,
    optimizer: str = "sgd",
    generator: torch.Generator | None = None,
    fixed_noise: bool = False,
) -> torch.Tensor:
    """Refine windows y (B, L, C) by descending (``"most_likely"``) or sampling
    (``"langevin"``) the energy E of :func:`refine_energy` (the paper's two refiners).

    ``lr`` is the SGD / Adam learning rate or the Langevin step eta; ``noise_scale`` the
    Langevin gamma. ``fixed_noise=True`` draws eps once (E is then a fixed function; the
    paper redraws it every iteration). Returns the refined windows (detached).
    """
    if method not in METHODS:
        raise ValueError(f"unknown refinement method {method!r}; choose one of {METHODS}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    check_positive_int("steps", steps)
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr}")
    if not process.t_min <= t <= process.t_max:
        raise ValueError(f"t = {t} lies outside [{process.t_min}, {process.t_max}]")
    y = y_init.detach().clone().requires_grad_(True)
    noise_of = lambda: process.noise(y.shape, generator=generator, dtype=y.dtype, device=y.device)
    eps = noise_of()
    opt = None
    if method == "most_likely":
        cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
        opt = cls([y], lr=lr)
    for _ in range(steps):
        if not fixed_noise:
            eps = noise_of()
        with torch.enable_grad():
            E = refine_energy(denoiser, process, y, t, eps, target, mask, lam, reg, kappa).sum()
            (grad,) = torch.autograd.grad(E, y)
        if opt is not None:
            y.grad = grad
            opt.step()
        else:
            xi = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
            with torch.no_grad():
                y.add_(-lr * grad + math.sqrt(2.0 * lr) * noise_scale * xi)
    return y.detach()


def refine_forecast(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    past: torch.Tensor,
    base: torch.Tensor,
    context_length: int,
    lags: Sequence[int] = (),
    method: str = "most_likely",
    reg: str = "mse",
    steps: int = 20,
    lr: float = 0.1,
    t: float = 0.21,
    lam: float = 1.0,
    noise_scale: float = 0.1,
    optimizer: str = "sgd",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Refine a base forecaster's samples ``base`` (B, n, H) of the series ``past`` (B, P)
    (NaN = missing). Each sample is placed in the horizon of its window (the n samples
    sorted, so that sample i gets kappa_i = i / (n + 1) under ``reg="quantile"``); R
    covers the observed context (``"mse"``, as the official code) or the context and
    the base sample (``"quantile"``). Returns refined samples (B, n, H), original units.
    """
    if base.ndim != 3 or base.shape[0] != past.shape[0]:
        raise ValueError(f"base must have shape (B, n, H) with B = {past.shape[0]}")
    B, n, H = base.shape
    base = base.sort(dim=1).values.reshape(B * n, H)
    past_n = past.repeat_interleave(n, 0)
    obs, obs_mask, _ = make_window(past_n, context_length, H, lags)
    y0, full_mask, s = make_window(past_n, context_length, H, lags, future=base)
    mask = obs_mask if reg == "mse" else full_mask
    kappa = quantile_levels(n, B * n) if reg == "quantile" else None
    y = refine(
        denoiser, process, y0, y0, mask, method, steps, lr, t, lam, reg, kappa,
        noise_scale, optimizer, generator,
    )  # fmt: skip
    return unscale(y[:, context_length:, 0], s).reshape(B, n, H)
