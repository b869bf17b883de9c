"""Momentum samplers (Wizadwongsa, Chinchuthakun, Khungurn, Raj & Suwajanakorn, "Diffusion
Sampling with Momentum for Mitigating Divergence Artifacts", ICLR 2024, arXiv:2307.11118).

High-order multistep samplers have small stability regions; with few steps (or a stiff
denoiser) they overshoot and produce "divergence artifacts". The paper damps them with
momentum. Notation: a multistep method writes each step as ``y_{n+1} = y_n + delta_n * F_n``
with ``F_n = sum_i b_i f_{n-i}`` (its combination of the last evaluations).

**Polyak's Heavy Ball (HB)** (the paper's HB section) replaces ``F_n`` by a velocity:

    v_{n+1} = (1 - beta) v_n + beta F_n,        y_{n+1} = y_n + delta_n v_{n+1},

with v started at the first ``F`` (so the first step is the plain one) and damping
``beta`` in (0, 1]; ``beta = 1`` is the plain method. The paper proves HB first-order
convergent for beta < 1 (abstract; HB section) and we measure order 1 (tests).

**Generalized Heavy Ball (GHVB)** (the paper's GHVB section) puts the velocity *inside*
the Adams-Bashforth (AB) sum: v_{n+1} = (1 - beta) v_n + beta f_n and
``y_{n+1} = y_n + delta_n / beta * sum_j c_j(beta) v_{n+1-j}``, with the k weights chosen
so that the step integrates exactly like AB-k whenever v carries its full history. In the
backward difference nabla (v_n - v_{n-1}) the AB-k step is ``sum_{m<k} gamma_m nabla^m f_n``
with Adams' gamma = 1, 1/2, 5/12, 3/8, ...; the velocity is f filtered by
beta / (1 - (1 - beta) z) = beta / (beta + (1 - beta) nabla), so

    sum_j c_j(beta) v_{n-j} = sum_{m<k} (beta gamma_m + (1 - beta) gamma_{m-1}) nabla^m v_n
                              (gamma_{-1} = 0),

which reproduces the official table (e.g. k = 2: ((2 + beta) v_n - (2 - beta) v_{n-1}) / 2,
k = 4: ((46 + 9 beta) v_n - (78 - 19 beta) v_{n-1} + (42 - 5 beta) v_{n-2} - (10 - beta)
v_{n-3}) / 24) and is AB-k at beta = 1. The single "order" r in (0, 4] (the paper's
"GHVB 3.8") is k = ceil(r) AB terms with beta = r - (k - 1): r = 1.5 lies between Euler and
AB2, r = 4 is PLMS.

Where each rule acts (checked against the authors' code, github.com/sWizad/momentum-diffusion:
``stable_diffusion/diffusion/momentum_scheduler.py`` — ``AdamBmixer``,
``PLMSWithHBScheduler``, ``GHVBScheduler``, ``MomentumDPMSolverMultistepScheduler`` — and
``dpm_guided_diffusion/dpm_solver/dpm_solver_pytorch.py``, whose ``DPM_Solver`` defaults
``momentum=0.8``):

- ``plms``, ``hb-plms``, ``ghvb`` work on the noise prediction eps = (x - alpha D) / sigma
  in DDIM's variables y = x / alpha, g = sigma / alpha, where the probability-flow ODE is
  dy/dg = eps (DDIM's update, PNDM's "transfer part", Liu et al. 2022): one step is
  ``x_s = alpha_s (x_t / alpha_t + (g_s - g_t) e)`` with e the AB-combined eps (PLMS), its
  HB velocity, or the GHVB combination. AB weights are the constant-step ones, as in PLMS
  and the official code, whatever the grid. The first k - 1 steps warm up with lower-order
  AB (AB-1 = DDIM), as the official momentum code does; PNDM's Runge-Kutta warm-up would
  cost extra evaluations, so every step here costs one evaluation (nfe = steps).
- ``hb-dpm++`` applies HB to DPM-Solver++ (Lu et al. 2022) in lambda = log(alpha/sigma):
  each multistep step reads ``x_s = (sigma_s / sigma_t) x_t - alpha_s phi_1 Dbar`` with
  phi_1 = expm1(-h) and Dbar its effective data prediction (2M: D_0 + D1 / 2, with D1 the
  divided difference scaled by h as in ``dpm_solver.py``), and HB replaces Dbar by the
  velocity. The official code implements order 2 only (default here); orders 1 (HB on
  DDIM's data-prediction form) and 3 (Dbar = D_0 - (phi_2/phi_1) D1 + (phi_3/phi_1) D2,
  phi_2 = phi_1/h + 1, phi_3 = phi_2/h - 1/2, D2 = h^2 D'', the Taylor-correct term of
  ``dpm++3m``'s default variant) follow the same rule. As in the official code, the
  velocity starts at the first data prediction and the lower-order final steps
  (``lower_order_final``, fewer than 10 steps) are plain DPM-Solver++ steps without
  momentum.

Measured on the exact oracle (tests/core/test_momentum.py): ``plms`` and ``ghvb`` with
k >= 2 converge at order 2 on logSNR and Karras grids, because constant-step AB weights
on a grid that is not uniform in g = sigma/alpha leave an O(h^3) local error (GHVB's
local order k on a constant step is tested on its weights; the AB-1 first step could
also cap the order at 2, but its error constant is small where the grid starts);
HB with beta < 1 and GHVB with r <= 1 converge at order 1. The paper's equation numbers are not quoted: the
rules above are stated in full and were checked against the official code.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from .dpm_solver import VARIANTS, _final_below, _multistep_weights
from .samplers import register_solver
from .utils import coef, lincomb

__all__ = ["ghvb_weights", "parse_ghvb_order"]

_MAX_PLMS_ORDER = 4  # PLMS is AB-4 (Liu et al. 2022); GHVB 4.0 is the paper's highest order


# --------------------------------------------------------------------------------------
# option checks
# --------------------------------------------------------------------------------------
def _check_beta(solver: str, beta: Any) -> float:
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise ValueError(f"{solver}: beta must be a number in (0, 1], got {beta!r}")
    beta = float(beta)
    if not (math.isfinite(beta) and 0.0 < beta <= 1.0):
        raise ValueError(f"{solver}: beta must lie in (0, 1], got {beta}")
    return beta


def _check_int_order(solver: str, order: Any, top: int) -> int:
    if isinstance(order, bool) or not isinstance(order, numbers.Integral):
        raise ValueError(f"{solver}: order must be an integer in 1..{top}, got {order!r}")
    if not 1 <= order <= top:
        raise ValueError(f"{solver}: order must lie in 1..{top}, got {order}")
    return int(order)


def parse_ghvb_order(order: Any) -> tuple[int, float]:
    """GHVB's fractional order r in (0, 4] -> (k, beta) with k = ceil(r), beta = r - (k - 1).

    This is how the paper names GHVB ("GHVB 3.8" = AB-4 terms, beta = 0.8) and how the
    official code splits it; an integer r is plain PLMS of order r (beta = 1).
    """
    if isinstance(order, bool) or not isinstance(order, numbers.Real):
        raise ValueError(f"ghvb: order must be a number in (0, {_MAX_PLMS_ORDER}], got {order!r}")
    r = float(order)
    if not (math.isfinite(r) and 0.0 < r <= _MAX_PLMS_ORDER):
        raise ValueError(f"ghvb: order must lie in (0, {_MAX_PLMS_ORDER}], got {r}")
    k = math.ceil(r)
    return k, r - (k - 1)


# --------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------
def _adams_gammas(k: int) -> list[float]:
    """Adams-Bashforth's gamma_m, m < k: sum_{j<=m} gamma_j / (m + 1 - j) = 1 (Hairer et al.
    1993, III.1), so gamma = 1, 1/2, 5/12, 3/8, 251/720, ..."""
    g: list[float] = []
    for m in range(k):
        g.append(1.0 - sum(g[j] / (m + 1 - j) for j in range(m)))
    return g


def ghvb_weights(k: int, beta: float) -> list[float]:
    """Weights w_j (j = 0..k-1, newest first) of GHVB: y_{n+1} = y_n + delta sum_j w_j v_{n-j}.

    w = c(beta) / beta with sum_j c_j z^j = sum_{m<k} (beta gamma_m + (1 - beta) gamma_{m-1})
    (1 - z)^m (module docstring); at beta = 1 these are the AB-k weights PLMS uses,
    e.g. k = 4: (55, -59, 37, -9) / 24.
    """
    gam = _adams_gammas(k)
    w = [0.0] * k
    for m in range(k):
        cm = beta * gam[m] + (1.0 - beta) * (gam[m - 1] if m else 0.0)
        for j in range(m + 1):  # (1 - z)^m = sum_j binom(m, j) (-z)^j
            w[j] += cm * math.comb(m, j) * (-1) ** j
    return [wj / beta for wj in w]


def _combine(weights: list[float], hist: list[torch.Tensor]) -> torch.Tensor:
    """sum_j weights[j] * hist[-1 - j] (hist is oldest first)."""
    out = weights[0] * hist[-1]
    for j in range(1, len(weights)):
        out = out + weights[j] * hist[-1 - j]
    return out


# --------------------------------------------------------------------------------------
# PLMS family: AB on eps in DDIM's variables (y = x / alpha, g = sigma / alpha)
# --------------------------------------------------------------------------------------
def _plms_family(D, process, x, ts, k: int, beta: float, where: str) -> torch.Tensor:
    """PLMS (beta = 1), HB-PLMS (``where="outside"``) or GHVB (``where="inside"``)."""
    alpha, sigma = process.alpha(ts.ts), process.sigma(ts.ts)
    g = sigma / alpha  # float64, one per grid time
    hist: list[torch.Tensor] = []  # eps (PLMS, HB) or velocities (GHVB), oldest first
    v: torch.Tensor | None = None
    for i, t, _ in ts:
        a_t = coef(alpha[i], x)
        eps = (x - a_t * D(x, t)) / coef(sigma[i], x)
        if where == "inside":  # GHVB: v_{n+1} = (1 - beta) v_n + beta eps_n, then AB in v
            v = eps if v is None else (1.0 - beta) * v + beta * eps
            hist = (hist + [v])[-k:]
            e = _combine(ghvb_weights(len(hist), beta), hist)
        else:  # PLMS's AB combination F_n, then HB: v_{n+1} = (1 - beta) v_n + beta F_n
            hist = (hist + [eps])[-k:]
            F = _combine(ghvb_weights(len(hist), 1.0), hist)
            v = F if v is None else (1.0 - beta) * v + beta * F
            e = v
        # y_s = y_t + (g_s - g_t) e, i.e. x_s = alpha_s (x_t / alpha_t + (g_s - g_t) e)
        x_next = coef(alpha[i + 1], x) * (x / a_t + coef(g[i + 1] - g[i], x) * e)
        x = ts.check(x_next)
    return x


@register_solver("plms", order=2)
def plms(D, process, x, ts, generator=None, order: int = 4):
    """PLMS (Liu et al. 2022, PNDM): AB-``order`` on eps through DDIM's transfer, AB warm-up.

    The first ``order - 1`` steps use lower-order AB (AB-1 = DDIM), costing no extra
    evaluation, as the momentum paper's code does (PNDM's own Runge-Kutta warm-up does not
    fit an exact NFE budget). The constant-step AB weights make it order 2 on grids that
    are not uniform in sigma/alpha (measured 1.93 on logSNR).
    """
    k = _check_int_order("plms", order, _MAX_PLMS_ORDER)
    return _plms_family(D, process, x, ts, k, 1.0, "outside")


@register_solver("hb-plms", order=1)
def hb_plms(D, process, x, ts, generator=None, order: int = 4, beta: float = 0.8):
    """PLMS with Polyak's Heavy Ball (Wizadwongsa et al. 2024): v <- (1-beta) v + beta F_PLMS.

    ``beta = 1`` is ``plms``; beta < 1 is first order (the paper's theorem; measured 0.93).
    The official code's HB "order 3.8" is ``order=4, beta=0.8``, the default here.
    """
    k = _check_int_order("hb-plms", order, _MAX_PLMS_ORDER)
    return _plms_family(D, process, x, ts, k, _check_beta("hb-plms", beta), "outside")


@register_solver("ghvb", order=2)
def ghvb(D, process, x, ts, generator=None, order: float = 3.8):
    """Generalized Heavy Ball (Wizadwongsa et al. 2024): AB in the eps velocity, order r.

    AB with beta-dependent weights on the velocity v <- (1-beta) v + beta eps; ``order``
    r in (0, 4] means k = ceil(r) terms and beta = r - k + 1 ("GHVB 3.8", the default).
    An integer r is ``plms`` of that order. Local order k (exact on polynomials of degree
    < k); globally 2 for k >= 2 (measured).
    """
    k, beta = parse_ghvb_order(order)
    return _plms_family(D, process, x, ts, k, beta, "inside")


# --------------------------------------------------------------------------------------
# HB on DPM-Solver++ multistep
# --------------------------------------------------------------------------------------
@register_solver("hb-dpm++", order=1)
def hb_dpmpp(
    D,
    process,
    x,
    ts,
    generator=None,
    order: int = 2,
    beta: float = 0.8,
    lower_order_final: Any = True,
):
    """DPM-Solver++ multistep with Polyak's Heavy Ball (Wizadwongsa et al. 2024).

    The effective data prediction Dbar of each step (2M: D_0 + D1/2) is replaced by the
    velocity v <- (1-beta) v + beta Dbar: x_s = (sigma_s/sigma_t) x_t - alpha_s expm1(-h) v.
    ``beta = 1`` is ``dpm++2m`` (order 2) or ``dpm++3m`` (order 3); defaults order 2,
    beta 0.8 as the official code. First order for beta < 1 (measured 0.94).
    ``lower_order_final``: True (below 10 steps, as DPM-Solver), False, or a step count.
    """
    order = _check_int_order("hb-dpm++", order, 3)
    beta = _check_beta("hb-dpm++", beta)
    below = _final_below(lower_order_final)
    A, S, lam, steps = ts.alpha, ts.sigma, ts.lam, len(ts)
    hist: list[tuple[torch.Tensor, float]] = []  # (D value, lambda), newest first
    v: torch.Tensor | None = None
    for i, t, _ in ts:
        hist = [(D(x, t), lam[i])] + hist[: order - 1]
        k = len(hist)
        final_drop = steps < below and steps - i < k
        if final_drop:
            k = steps - i
        # DPM-Solver++'s step is x_s = (sigma_s/sigma_t) x + alpha_s sum_j c_j D_j, i.e.
        # its effective data prediction is Dbar = sum_j c_j D_j / (-phi_1)
        c = _multistep_weights(-1.0, [lm for _, lm in hist], lam[i + 1], k, VARIANTS["taylor"])
        phi1 = math.expm1(-(lam[i + 1] - lam[i]))
        dbar = lincomb(*[(cj / -phi1, Dj) for cj, (Dj, _) in zip(c, hist)])
        if final_drop:  # the official code's final lower-order steps bypass the velocity
            e = dbar
        else:
            v = dbar if v is None else lincomb((1.0 - beta, v), (beta, dbar))
            e = v
        x = ts.check(lincomb((S[i + 1] / S[i], x), (-A[i + 1] * phi1, e)))
    return x
