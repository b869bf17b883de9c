"""Guidance by composition: every method here takes denoisers and returns a denoiser.

At fixed (x_t, t) the data prediction is an affine function of the score,
D = (x_t + sigma^2 score) / alpha, so a weighted sum of scores with weights summing to
one is the same weighted sum of denoisers. That single fact gives

- **classifier-free guidance** (Ho & Salimans 2022): D_w = D_uncond + w (D_cond - D_uncond),
  i.e. the score of p(x) p(c | x)^w; w = 0 is unconditional, w = 1 conditional, w > 1
  sharpens. ``interval=(t_lo, t_hi)`` guides only inside that range of times (limited-
  interval guidance, Kynkaanniemi et al. 2024) and uses the conditional model elsewhere;
- **RL guidance** (RLG): D_w = (1 - w) D_base + w D_rl, the score of the geometric mixture
  p_base^(1-w) p_rl^w. If p_rl is the optimum of the KL-regularised objective
  max E_p[r] - beta KL(p || p_base), i.e. p_rl ∝ p_base exp(r / beta), then
  p_base^(1-w) p_rl^w ∝ p_base exp(w r / beta): guiding with weight w is re-solving the
  RL problem with KL coefficient beta / w, without retraining (w < 1 stays closer to the
  base, w > 1 extrapolates beyond the fine-tuned model);
- **classifier guidance** (Dhariwal & Nichol 2021): score + w grad log p(y | x_t), i.e.
  D + w (sigma^2 / alpha) grad_x log p(y | x_t), for any differentiable time-dependent
  log-likelihood; **DPS** is its special case with the likelihood of a measurement of the
  denoiser's forecast;
- **concept blending** (``concept_blend``, a sampler): per step, the condition whose
  Black-Scholes "option" on its score of the x0 forecast is cheapest is used next.

(This is the scores' combination at each t, as these papers use it; the marginals of the
guided sampler are not exactly the tilted distribution for w not in {0, 1}.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .processes import Process
from .samplers import _ddim_step, ddpm_posterior_std
from .schedules import time_grid
from .utils import batch_time, check_positive_int, coef

__all__ = [
    "combine",
    "cfg",
    "rl_guidance",
    "classifier_guidance",
    "dps",
    "black_scholes_call",
    "concept_blend",
    "self_guidance",
]

Denoiser = Callable[..., torch.Tensor]


def _check_weight(name: str, w: Any) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise ValueError(f"{name} must be a finite number, got {w!r}")
    return float(w)


def combine(denoisers: Sequence[Denoiser], weights: Sequence[float], conds: Sequence[Any] = ()):
    """D(x, t) = sum_i w_i D_i(x, t, cond_i): the score of prod_i p_i^(w_i) when the weights
    sum to one (they must). ``conds`` gives each denoiser's condition (None: none)."""
    if len(denoisers) == 0 or len(denoisers) != len(weights):
        raise ValueError("combine needs one weight per denoiser (and at least one)")
    ws = [_check_weight("a weight", w) for w in weights]
    if abs(sum(ws) - 1.0) > 1e-9:
        raise ValueError(f"the weights must sum to 1 (a combination of scores), got {sum(ws)}")
    conds = list(conds) or [None] * len(denoisers)
    if len(conds) != len(denoisers):
        raise ValueError("combine needs one condition per denoiser")

    def D(x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        out = None
        for Di, wi, ci in zip(denoisers, ws, conds):
            if wi == 0.0:  # skip the evaluation: w = 0 reproduces the others exactly
                continue
            y = Di(x, t) if ci is None else Di(x, t, cond=ci)
            out = wi * y if out is None else out + wi * y
        return out

    return D


def cfg(
    denoiser: Denoiser,
    scale: float,
    null_cond: Any = None,
    interval: tuple[float, float] | None = None,
    uncond_denoiser: Denoiser | None = None,
):
    """Classifier-free guidance of a conditional ``denoiser(x, t, cond)``.

    The unconditional prediction comes from ``denoiser(x, t, cond=null_cond)`` (a model
    trained with condition dropout: ``null_cond`` is its "no condition" token; None calls
    it without cond) or from a separate ``uncond_denoiser``. Returns D(x, t, cond).
    """
    w = _check_weight("the guidance scale", scale)
    if interval is not None:
        lo, hi = (float(v) for v in interval)
        if not lo < hi:
            raise ValueError(f"interval must be (t_lo, t_hi) with t_lo < t_hi, got {interval}")

    def uncond(x, t):
        if uncond_denoiser is not None:
            return uncond_denoiser(x, t)
        return denoiser(x, t) if null_cond is None else denoiser(x, t, cond=null_cond)

    def D(x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if cond is None:
            raise ValueError("cfg: the guided denoiser needs cond= (the condition to guide to)")
        dc = denoiser(x, t, cond=cond)
        if w == 1.0:
            return dc
        tb = batch_time(t, x)
        inside = torch.ones_like(tb, dtype=torch.bool)
        if interval is not None:
            inside = (tb >= lo) & (tb <= hi)
            if not bool(inside.any()):
                return dc  # outside the interval: the conditional model alone
        du = uncond(x, t)
        guided = du + w * (dc - du)
        return torch.where(coef(inside.double(), x) > 0, guided, dc)

    return D


def rl_guidance(base: Denoiser, finetuned: Denoiser, weight: float):
    """RLG: D_w = (1 - w) D_base + w D_rl (w = 0 base, w = 1 fine-tuned; see module doc for
    why w acts as the inverse KL coefficient of the RL objective)."""
    w = _check_weight("the RLG weight", weight)
    return combine([base, finetuned], [1.0 - w, w])


def classifier_guidance(
    denoiser: Denoiser,
    process: Process,
    log_likelihood: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor],
    scale: float = 1.0,
):
    """D + w (sigma^2 / alpha) grad_x log p(y | x_t): ``log_likelihood(x, t, y)`` returns a
    (B,) time-dependent log-likelihood (a noise-aware classifier); y is passed as cond."""
    w = _check_weight("the guidance scale", scale)

    def D(x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        tb = batch_time(t, x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            ll = log_likelihood(xg, tb, cond)
            if ll.shape != (x.shape[0],):
                raise ValueError(
                    f"log_likelihood returned shape {tuple(ll.shape)}, expected ({x.shape[0]},)"
                )
            (grad,) = torch.autograd.grad(ll.sum(), xg)
        a, s = process.alpha(tb), process.sigma(tb)
        return denoiser(x, t) + coef(w * s**2 / a, x) * grad

    return D


def dps(
    denoiser: Denoiser,
    process: Process,
    operator: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    noise_std: float | None = None,
    scale: float = 1.0,
):
    """Diffusion posterior sampling (Chung et al. 2023) as guidance of the score.

    DPS approximates log p(y | x_t) by log p(y | A(x0_hat(x_t))) and differentiates it
    through the denoiser. Two step-size rules:

    - ``noise_std`` given: the Gaussian likelihood -||y - A(x0_hat)||^2 / (2 noise_std^2),
      times ``scale`` (1 = the likelihood as it is);
    - ``noise_std=None``: the paper's rule, zeta_t = scale / ||y - A(x0_hat)|| per sample,
      i.e. the gradient of -scale ||y - A(x0_hat)|| (Alg. 1, zeta'/||.||).

    The paper subtracts its gradient from x after each DDPM step; here it enters the score
    (classifier guidance), so any sampler can use it. ``operator`` maps a batch (B, ...)
    to measurements shaped like ``y`` (B, ...).
    """
    if noise_std is not None and not (isinstance(noise_std, (int, float)) and noise_std > 0):
        raise ValueError(f"dps: noise_std must be a positive number or None, got {noise_std!r}")

    w = _check_weight("the DPS scale", scale)

    def D(x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        tb = batch_time(t, x)
        with torch.enable_grad():  # one evaluation: x0_hat is both the output and the forecast
            xg = x.detach().requires_grad_(True)
            x0 = denoiser(xg, t)
            ax = operator(x0)
            if ax.shape != y.shape:
                raise ValueError(
                    f"dps: the operator returned shape {tuple(ax.shape)}, y has {tuple(y.shape)}"
                )
            res = (y.to(ax.dtype) - ax).reshape(ax.shape[0], -1)
            if noise_std is not None:
                ll = -0.5 * res.square().sum(1) / noise_std**2
            else:
                ll = -res.norm(dim=1)
            (grad,) = torch.autograd.grad(ll.sum(), xg)
        a, s = process.alpha(tb), process.sigma(tb)
        return x0.detach() + coef(w * s**2 / a, x) * grad

    return D


def black_scholes_call(spot, strike, rate, sigma, maturity, official: bool = False):
    """Black-Scholes price of a European call, C = S N(d1) - K e^{-r T} N(d2), with
    d1 = (log(S/K) + (r + sigma^2/2) T) / (sigma sqrt(T)), d2 = d1 - sigma sqrt(T).

    ``official=True`` reproduces the concept-blending code of Kothandaraman et al.
    (divyakraman/BlackScholesDiffusion2024, ``bs_score``), which uses the unnormalised
    Gaussian density exp(-d^2/2) where the formula has the CDF N(d).
    """
    spot = torch.as_tensor(spot, dtype=torch.float64)
    if bool((spot <= 0).any()) or not strike > 0 or not sigma > 0 or not maturity > 0:
        raise ValueError("black_scholes_call needs spot, strike, sigma and maturity > 0")
    vol = sigma * math.sqrt(maturity)
    d1 = (torch.log(spot / strike) + (rate + 0.5 * sigma**2) * maturity) / vol
    d2 = d1 - vol
    if official:
        N = lambda d: torch.exp(-0.5 * d**2)
    else:
        N = lambda d: 0.5 * torch.erfc(-d / math.sqrt(2.0))
    return spot * N(d1) - strike * math.exp(-rate * maturity) * N(d2)


def concept_blend(
    denoiser: Denoiser,
    process: Process,
    x1: torch.Tensor,
    conds: Sequence[Any],
    score: Callable[[torch.Tensor, int], torch.Tensor],
    steps: int,
    strike: float = 1.0,
    official: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Black-Scholes concept blending (Kothandaraman, Lin & Manocha 2024, "Financial Models
    in Generative Art"), for any number of conditions and any positive ``score``.

    A deterministic DDIM walk from x1. At each step the denoiser's forecast x0_hat (made
    with each sample's current condition; no extra evaluation) is priced per condition k
    as a call option: spot S_k = score(x0_hat, k) > 0 (the paper: a CLIP score of the
    forecast image against prompt k), the given strike, rate r = 1/steps, volatility the
    square root of the step's DDPM posterior variance, maturity = the steps left. Each
    sample continues with the condition of the *lowest* price: the concept whose option
    is worth least is the least expressed so far, so the walk keeps switching towards it
    and the concepts blend. Starts with conds[0]. Returns (x at t_min, the index of the
    condition used at every step, (steps, B)).
    """
    if len(conds) < 2:
        raise ValueError("concept_blend needs at least two conditions")
    check_positive_int("steps", steps)
    ts = time_grid(process, steps, "uniform")
    x = x1
    B = x.shape[0]
    choice = torch.zeros(B, dtype=torch.long)
    history = []
    for i in range(steps):
        t, s = ts[i], ts[i + 1]
        tb = t.expand(B)
        x0 = torch.empty_like(x)
        for k in range(len(conds)):
            rows = choice == k
            if bool(rows.any()):
                x0[rows] = denoiser(x[rows], tb[rows], cond=conds[k])
        history.append(choice.clone())
        x = _ddim_step(process, x, x0, t, s, 0.0, None)
        vol = float(ddpm_posterior_std(process, t, s))  # the step's DDPM posterior std
        prices = []
        for k in range(len(conds)):
            spot = score(x0, k)
            if (
                spot.shape != (B,)
                or not bool(torch.isfinite(spot).all())
                or bool((spot <= 0).any())
            ):
                raise ValueError(
                    f"score must return (B,) = ({B},) finite positive values (condition {k})"
                )
            prices.append(
                black_scholes_call(spot, strike, 1.0 / steps, vol + 1e-12, steps - i, official)
            )
        choice = torch.stack(prices, 1).argmin(1)
    return x, torch.stack(history)


def self_guidance(
    denoiser: Denoiser,
    process: Process,
    observed: torch.Tensor,
    mask: torch.Tensor,
    scale: float = 1.0,
    energy: str = "mse",
    quantiles: int | torch.Tensor | None = None,
):
    """Observation self-guidance (Kollovieh et al. 2023, "Predict, Refine, Synthesize",
    TSDiff): an unconditional model conditioned at inference on the entries of
    ``observed`` where ``mask`` is true, by classifier guidance with

        log p(y_obs | x_t) = -sum_{mask} E(x0_hat(x_t)),

    E the squared error (``"mse"``, TSDiff-MS) or the pinball loss
    max(kappa e, (kappa - 1) e), e = y - x0_hat (``"quantile"``, TSDiff-Q), i.e. DPS with a
    mask operator. ``quantiles``: an int n gives row r the level kappa = (r mod n + 1) /
    (n + 1) (n sample paths per series, rows grouped by series as ``repeat_interleave``
    lays them out); a (B,) tensor gives the levels; None uses n = B.

    The scale s enters as D + s (sigma^2 / alpha) grad log p: with eps-prediction that is
    eps - s sigma grad log p, exactly the official DDIM guidance (``scale_func`` =
    sqrt(1 - abar_t) s); the official DDPM sampler instead adds s * posterior variance *
    grad after each step, the same to within a factor of about one for most steps.
    Unobserved entries (mask false) may hold NaN. One denoiser evaluation per call.
    """
    if energy not in ("mse", "quantile"):
        raise ValueError(f"self_guidance: energy must be 'mse' or 'quantile', got {energy!r}")
    if observed.shape != mask.shape:
        raise ValueError(
            f"self_guidance: observed {tuple(observed.shape)} and mask {tuple(mask.shape)} differ"
        )
    m = mask.bool()
    y = torch.where(m, observed, torch.zeros_like(observed))  # no NaN reaches a gradient
    B = observed.shape[0]
    kappa = None
    if energy == "quantile":
        if quantiles is None or isinstance(quantiles, int):
            n = check_positive_int("quantiles", B if quantiles is None else quantiles)
            kappa = (torch.arange(B) % n + 1).double() / (n + 1)
        else:
            kappa = torch.as_tensor(quantiles, dtype=torch.float64).flatten()
            if kappa.shape != (B,) or not bool(((kappa > 0) & (kappa < 1)).all()):
                raise ValueError(f"self_guidance: quantiles must be {B} levels in (0, 1)")
    cache: dict[str, torch.Tensor] = {}

    def log_likelihood(x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        x0 = denoiser(x, t)
        cache.update(x=x.detach(), t=t, x0=x0.detach())
        e = y.to(x0) - x0
        if kappa is None:
            E = e.square()
        else:
            k = coef(kappa, e)
            E = torch.maximum(k * e, (k - 1.0) * e)
        return -torch.where(m, E, torch.zeros_like(E)).reshape(B, -1).sum(1)

    def reuse(x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        # classifier_guidance evaluates D(x, t) after the likelihood: reuse its x0_hat
        c = cache.copy()
        cache.clear()
        if c and c["x"].shape == x.shape and torch.equal(c["x"], x) and torch.equal(c["t"], t):
            return c["x0"]
        return denoiser(x, t)

    guided = classifier_guidance(reuse, process, log_likelihood, scale)

    def D(x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if x.shape != observed.shape:
            raise ValueError(
                f"self_guidance: x has shape {tuple(x.shape)}, observed {tuple(observed.shape)}"
            )
        return guided(x, batch_time(t, x))

    return D
