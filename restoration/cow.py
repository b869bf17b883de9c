"""Cyclic One-Way Diffusion (COW; Wang, Yang, Qian, Zhu & Wu, ICLR 2024, "Diffusion in
Diffusion: Cyclic One-Way Diffusion for Text-Vision-Conditioned Generation", Sec. 3 and
Algorithm 1) as a training-free inpainting sampler.

The known region (the "seed") is DDIM-inverted (eta = 0) from data up to a high level, and
its inverted latents are kept at every level of the grid. The whole image starts from the
inverted latent of the seed pasted on a neutral background at a low level ``low``. Then
``cycles`` times: the state is re-noised from ``low`` up to ``high`` with the forward
transition q(x_high | x_low) (the "disturb" step), and DDIM (eta = 0) brings it back down to
``low``, the known region being overwritten by its inverted latent after every step (the
"one-way" information flow: the seed diffuses into the background, never the reverse).
Finally DDIM(eta = ``eta_final``) runs from ``low`` to data, pasting the seed's latent once
more at level ``final_replace``.

Defaults are the official code's (wangruoyu02/COW, ``pipeline_COW.py``): low = 0.5 and
high = 0.7 of the DDIM grid (``replace_step``, ``back_step``), 10 cycles, final eta 0.1 with
one paste at 0.4 of the grid, background value = mid-grey (0 on a [-1, 1] scale). That code
works in Stable Diffusion's latent space with text guidance; here the sampler acts on the
signal itself with an unconditional denoiser, so after the last step the observed entries
are set to y exactly (``paste=True``; the official output cannot do this in latent space).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from diffsci.core.processes import Process
from diffsci.core.samplers import _ddim_step
from diffsci.core.schedules import time_grid
from diffsci.core.svdd import CountingDenoiser

from .operators import Inpainting, LinearOperator
from .posterior import Posterior, check_problem, register_posterior

__all__ = ["cow", "cow_levels"]


def cow_levels(
    steps: int, low: float = 0.5, high: float = 0.7, final_replace: float | None = 0.4
) -> tuple[int, int, int | None]:
    """The grid indices (counted from the data end, 0 = t_min, ``steps`` = t_max) of the
    cycle's low and high levels and of the final paste: ``int(fraction * steps)`` as the
    official code. ValueError unless 0 < low < high <= steps and 0 <= final < low."""
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise ValueError(f"cow: {name} must be a fraction in (0, 1], got {v!r}")
    r, b = int(low * steps), int(high * steps)
    if not 0 < r < b <= steps:
        raise ValueError(
            f"cow: with {steps} steps the levels low = {low} -> {r} and high = {high} -> {b} "
            "must satisfy 0 < low < high <= steps (use more steps or wider fractions)"
        )
    f = None
    if final_replace is not None:
        if isinstance(final_replace, bool) or not isinstance(final_replace, (int, float)):
            raise ValueError(
                f"cow: final_replace must be a fraction or None, got {final_replace!r}"
            )
        f = int(final_replace * steps)
        if not 0 <= final_replace < low or not 0 <= f < r:
            raise ValueError(
                f"cow: final_replace = {final_replace} must lie in [0, low = {low}) "
                f"(grid levels {f} < {r})"
            )
    return r, b, f


@register_posterior("cow")
def cow(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    A: LinearOperator,
    y: torch.Tensor,
    x1: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    low: float = 0.5,
    high: float = 0.7,
    cycles: int = 10,
    final_replace: float | None = 0.4,
    eta_final: float = 0.1,
    fill_value: float = 0.0,
    paste: bool = True,
    schedule: str = "uniform",
) -> Posterior:
    """COW inpainting (Wang et al. 2024, Algorithm 1) for an :class:`Inpainting` operator.

    ``steps`` is the size of the DDIM grid (``schedule``, t_max to t_min); ``low`` /
    ``high`` are the cycle's levels as fractions of it, ``cycles`` the number of
    re-noise / denoise cycles, ``final_replace`` the level of the last latent paste (None:
    none), ``eta_final`` the DDIM eta of the final descent, ``fill_value`` the background
    of the seed image ``A.fill(y, fill_value)``, ``paste`` whether the output's observed
    entries are set to y. ``x1`` (scaled to unit variance) is the noise of the first
    re-noising (unused when ``cycles=0``); later ones come from ``generator``.

    Evaluations: the inversion costs ``high`` levels once per measurement (shared by its K
    rows), then each row costs cycles * (high - low) + low: G * h + G * K * (c (h - l) + l)
    in grid levels (h = int(high * steps), l = int(low * steps)).
    """
    who = "cow"
    Y, K = check_problem(process, A, y, x1, steps, who)
    if not isinstance(A, Inpainting):
        raise ValueError(
            f"cow needs an Inpainting operator (the observed entries are pasted back), "
            f"got {type(A).__name__}"
        )
    r, b, f = cow_levels(steps, low, high, final_replace)
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 0:
        raise ValueError(f"cow: cycles must be an int >= 0, got {cycles!r}")
    if not isinstance(eta_final, (int, float)) or not 0.0 <= eta_final <= 1.0:
        raise ValueError(f"cow: eta_final must lie in [0, 1], got {eta_final!r}")
    if not isinstance(fill_value, (int, float)) or not math.isfinite(fill_value):
        raise ValueError(f"cow: fill_value must be a finite number, got {fill_value!r}")
    ts = time_grid(process, steps, schedule).flip(0).to(x1.device)  # ts[0] = t_min
    al = [float(process.alpha(t)) for t in ts]
    sg = [float(process.sigma(t)) for t in ts]
    D = CountingDenoiser(denoiser, who=who)
    mask = A.mask.to(x1.device)

    # 1. DDIM inversion (eta = 0) of the seed image, keeping every level 0..b
    seed = A.fill(y.to(x1.dtype), fill_value)
    traj = [seed]
    for k in range(b):
        x0 = D(traj[k], ts[k])
        eps = (traj[k] - al[k] * x0) / sg[k]
        traj.append(al[k + 1] * x0 + sg[k + 1] * eps)

    def put(x: torch.Tensor, k: int) -> torch.Tensor:
        return torch.where(mask, traj[k].repeat_interleave(K, 0), x)

    def ddim(x: torch.Tensor, k: int, eta: float) -> torch.Tensor:
        return _ddim_step(process, x, D(x, ts[k]), ts[k], ts[k - 1], eta, generator)

    # 2. cycles between the levels r and b (the seed on the background, inverted to r)
    x = traj[r].repeat_interleave(K, 0)
    keep = al[b] / al[r]
    spread = math.sqrt(max(sg[b] ** 2 - (keep * sg[r]) ** 2, 0.0))
    for c in range(cycles):
        if c == 0:
            z = x1 / float(process.sigma(process.t_max))
        else:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = put(keep * x + spread * z, b)
        for k in range(b, r, -1):
            x = put(ddim(x, k, 0.0), k - 1)
        if not bool(torch.isfinite(x).all()):
            raise FloatingPointError(f"cow: the state became NaN/Inf in cycle {c}")

    # 3. the final descent from r to data, one paste at level f
    for k in range(r, 0, -1):
        x = ddim(x, k, float(eta_final))
        if f is not None and k - 1 == f:
            x = put(x, f)
    if paste:
        x = torch.where(mask, A.fill(Y), x)
    return Posterior(x, y.shape[0], D.evals)
