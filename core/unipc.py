"""UniPC: unified predictor-corrector multistep sampler (Zhao et al. 2023, "UniPC: A
Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models", NeurIPS
2023), the B(h) variants ``bh1`` / ``bh2`` of the paper and its official code.

In lambda = log(alpha / sigma) = log_snr / 2 with h = lambda_t - lambda_s and the data
prediction m = D (``predict_x0=True``; hh = -h) or the noise prediction m = eps
(``predict_x0=False``; hh = h), UniP-p, the predictor of order p, is

    x_t = (sigma_t / sigma_s) x_s - alpha_t expm1(hh) m_s - alpha_t B(h) sum_k a_k D_k,
    D_k = (m_{s_k} - m_s) / r_k,   r_k = (lambda_{s_k} - lambda_s) / h,  k = 1..p-1

(for eps: alpha_t / alpha_s and sigma_t in place of sigma_t / sigma_s and alpha_t), with
B(h) = hh (``bh1``) or expm1(hh) (``bh2``), and a = R_{p-1}^{-1} b_{p-1}, where
R_p = (r_k^(i-1)) (i = 1..p, with r_p = 1) and b_i = hh phi_{i+1}(hh) i! / B(h)
(phi_1(x) = expm1(x) / x, phi_{i+1}(x) = (phi_i(x) - 1/i!) / x): the order conditions of
the paper. For p = 2 the single a is 1/2, as the reference code fixes it.

UniC-p, the corrector, redoes the same step once the model has been evaluated at the
predicted x_t (that evaluation is the next step's anyway, so it costs no NFE): with the
extra difference D_p = m_t - m_s (r_p = 1) it solves the full R_p c = b (c = 1/2 for p = 1)
and raises the order to p + 1. The corrected x_t is kept, the model value at the
predicted x_t is reused. The last step has no corrector (no further evaluation).

Warm-up and ends follow the official code (wl-zhao/UniPC, ``multistep_uni_pc_bh_update``
and ``sample``) and diffusers' ``UniPCMultistepScheduler``: step i uses order
min(order, i + 1), and with ``lower_order_final`` min(order, steps - i), at any number
of steps (both codes apply it always, unlike DPM-Solver's "fewer than 10 steps").

``order`` defaults to 2, diffusers' default and the official ``sample``'s (diffusers
recommends 2 for guided and 3 for unconditional sampling); UniPC-p with UniC has order
p + 1. With ``bh2`` and no corrector UniP-p is DPM-Solver++(pM) (checked
to 1e-14 against ``dpm++2m`` / ``dpm++3m``).

Measured on the exact oracle (tests/core/test_unipc.py, NFE 32-128): UniPC-2 with
corrector converges at order 3.00-3.10, without at 2.07-2.08, UniPC-3 at 3.94-4.00
(without lower-order final steps); on diffusers' grid it matches
``UniPCMultistepScheduler(final_sigmas_type="sigma_min")`` to 4e-7 (data prediction)
and 5e-5 (noise prediction, 5 steps), float32 round-off of diffusers' sigmas.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .samplers import register_solver
from .utils import lincomb

__all__ = ["unipc"]


def _check_options(order, variant, predict_x0, lower_order_final, corrector) -> None:
    if isinstance(order, bool) or not isinstance(order, int) or order not in (1, 2, 3):
        raise ValueError(f"unipc: order must be 1, 2 or 3, got {order!r}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"unipc: variant must be 'bh1' or 'bh2', got {variant!r}")
    for name, value in (
        ("predict_x0", predict_x0),
        ("lower_order_final", lower_order_final),
        ("corrector", corrector),
    ):
        if not isinstance(value, bool):
            raise ValueError(f"unipc: {name} must be a bool, got {value!r}")


def _coefficients(rks: list[float], hh: float, variant: str, corrector: bool):
    """B(h) and the weights a (predictor) or c (corrector) of UniP-p / UniC-p, p = len(rks).

    ``rks`` holds r_1..r_{p-1} and r_p = 1 (Python floats, float64); Zhao et al. 2023,
    official ``multistep_uni_pc_bh_update``.
    """
    p = len(rks)
    B = hh if variant == "bh1" else math.expm1(hh)
    b = []
    h_phi = math.expm1(hh) / hh - 1.0  # hh phi_2(hh)
    for i in range(1, p + 1):
        b.append(h_phi * math.factorial(i) / B)
        h_phi = h_phi / hh - 1.0 / math.factorial(i + 1)  # hh phi_{i+2}(hh)
    R = np.array([[r ** (i - 1) for r in rks] for i in range(1, p + 1)])
    if corrector:
        rhos = [0.5] if p == 1 else np.linalg.solve(R, b).tolist()
    elif p == 1:
        rhos = []
    elif p == 2:
        rhos = [0.5]
    else:
        rhos = np.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
    return B, rhos


def _update(x, ms, lams, lam_t, ab_s, ab_t, k, variant, predict_x0, model_t=None):
    """One UniP-k step (``model_t`` None) or UniC-k correction from the state ``x`` at
    lams[-1] to lam_t; ``ms`` / ``lams`` are the model outputs and lambdas (floats),
    newest last; ``ab_s`` / ``ab_t`` are (alpha, sigma) at the start and the end of the
    step. The step is built as one linear combination of x and the model outputs:
    x_t = c x - A expm1(hh) m0 - A B sum_j rho_j (m_j - m0) / r_j (+ rho_k (m_t - m0))."""
    (a_s, s_s), (a_t, s_t) = ab_s, ab_t
    h = lam_t - lams[-1]
    m0 = ms[-1]
    rks = [(lams[-1 - j] - lams[-1]) / h for j in range(1, k)]
    hh = -h if predict_x0 else h
    B, rhos = _coefficients(rks + [1.0], hh, variant, model_t is not None)
    c_x, A = (s_t / s_s, a_t) if predict_x0 else (a_t / a_s, s_t)
    w0 = -A * math.expm1(hh)
    terms = []
    for j, (r, rho) in enumerate(zip(rks, rhos), start=1):
        w = -A * B * rho / r
        terms.append((w, ms[-1 - j]))
        w0 -= w
    if model_t is not None:
        w = -A * B * rhos[-1]
        terms.append((w, model_t))
        w0 -= w
    return lincomb((c_x, x), (w0, m0), *terms)


@register_solver("unipc", order=3)
def unipc(
    D,
    process,
    x,
    ts,
    generator=None,
    order: int = 2,
    variant: str = "bh2",
    predict_x0: bool = True,
    lower_order_final: bool = True,
    corrector: bool = True,
):
    """UniPC multistep predictor-corrector, B(h) variants (Zhao et al. 2023).

    UniP-``order`` predictor (1-3) and UniC corrector after every step but the last
    (order + 1 overall, no extra NFE); ``variant`` ``bh1`` (B(h) = h) or ``bh2``
    (B(h) = e^h - 1); ``predict_x0`` False works on the noise prediction instead.
    """
    _check_options(order, variant, predict_x0, lower_order_final, corrector)
    lam, alpha, sigma = ts.lam, ts.alpha, ts.sigma  # float tables of the grid
    steps = len(ts)
    ms: list[torch.Tensor] = []  # model outputs (D or eps), newest last
    lams: list[float] = []
    x_prev, k_prev = None, 0
    for i, t, _ in ts:
        m = D(x, t)
        if not predict_x0:
            m = lincomb((1.0 / sigma[i], x), (-alpha[i] / sigma[i], m))
        if corrector and i > 0:  # UniC at t_i, with the value at the predicted state
            ab = ((alpha[i - 1], sigma[i - 1]), (alpha[i], sigma[i]))
            x = _update(x_prev, ms, lams, lam[i], *ab, k_prev, variant, predict_x0, m)
        ms, lams = (ms + [m])[-order:], (lams + [lam[i]])[-order:]
        k = min(order, i + 1)
        if lower_order_final:
            k = min(k, steps - i)
        x_prev, k_prev = x, k
        ab = ((alpha[i], sigma[i]), (alpha[i + 1], sigma[i + 1]))
        x = ts.check(_update(x, ms, lams, lam[i + 1], *ab, k, variant, predict_x0))
    return x
