"""DPM-Solver and DPM-Solver++: exponential integrators in lambda = log(alpha / sigma).

Lu et al. 2022, "DPM-Solver" (noise prediction eps, NeurIPS) and "DPM-Solver++" (data
prediction x0). Both solve the probability-flow ODE exactly in its linear part and
Taylor-expand the prediction P in lambda. They are the same algorithm in two *frames*:

    noise frame (DPM-Solver):   x_t = (alpha_t/alpha_s) x_s - sigma_t phi_1(g) eps_s + ...
    data frame  (DPM-Solver++): x_t = (sigma_t/sigma_s) x_s - alpha_t phi_1(g) x0_s + ...

with h = lambda_t - lambda_s > 0 and the signed step g = +h (noise) or -h (data), so one
implementation serves both with (A, B, P) = (alpha, sigma, eps) or (sigma, alpha, x0):

    phi_1(g) = e^g - 1,  phi_2(g) = phi_1(g)/g - 1,  phi_3(g) = phi_2(g)/g - 1/2
    order 1:  x_t = (A_t/A_s) x_s - B_t phi_1(g) P_s                        (= DDIM)
    2M:       ... - (B_t/2) phi_1(g) D1,   D1 = (P_s - P_prev) / r,  r = h_prev / h
    3M:       ... - B_t phi_2(g) D1' - B_t phi_3(g) D2                 (DPM-Solver++ App. B)
    2S:       u = x at s1 = lambda_s + r1 h by order 1;  ... - B_t/(2 r1) phi_1(g) (P(u) - P_s)
    3S:       u1 by order 1 at r1 = 1/3, u2 at r2 = 2/3 with the phi_2 term,
              ... - (B_t/r2) phi_2(g) (P(u2) - P_s)                   (DPM-Solver Alg. 2, 3)

Checked against the official implementation (LuChengTHU/dpm-solver): the singlestep
order partition of an NFE budget, r1 = 1/3, r2 = 2/3, ``lower_order_final`` below 10
steps, and the adaptive step-size rule (Alg. 4 of DPM-Solver). diffusers lowers the final
orders below 15 steps instead; ``lower_order_final=15`` reproduces it.

The third-order multistep term. Expanding P to second order in lambda, the exact
update's P'' term is -B_t phi_3(g) h^2 P''. The official 3M code (and diffusers, which
copies it) multiplies phi_3 by D2 = (D1_0 - D1_1) / (r0 + r1), which is h^2 P'' / 2, half
of it: its local error is O(h^3) and its global order 2. We measured exactly that on the
oracle (3M slopes 1.86-1.97 on logSNR grids, also on a single 1-D Gaussian whose flow is
known in closed form), and order 3.0-3.3 with the Taylor-correct term. ``variant=
"taylor"`` (default) is the correct one; ``variant="reference"`` reproduces the
official/diffusers update (whose halved term damps slightly at very few steps).

Measured on the exact oracle (tests/core/test_dpm_solver.py, benchmarks/orders.py):
2M and 2S converge at order 2, DPM-Solver-3 / 3S and 3M (taylor) at order 3. The
order-1 warm-up step of a multistep solver is harmless on logSNR grids (P' is tiny at
t_max); ``warmup="singlestep"`` (order - 1 extra evaluations) replaces it with one
singlestep step of the full order, for grids that start with a large lambda step.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .samplers import register_solver
from .utils import coef, lincomb

__all__ = ["dynamic_threshold"]


# --------------------------------------------------------------------------------------
# the two frames and the shared building blocks
# --------------------------------------------------------------------------------------
class _Frame:
    """(A, B, P, sign) of the noise (DPM-Solver) or data (DPM-Solver++) formulation."""

    def __init__(self, process, data: bool, threshold: tuple[float, float] | None = None):
        self.process, self.data, self.threshold = process, data, threshold
        self.sign = -1.0 if data else 1.0

    def lam(self, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.process.log_snr(t)

    def time(self, lam: torch.Tensor) -> torch.Tensor:
        return self.process.t_of_log_snr(2.0 * lam)

    def A(self, t):
        return self.process.sigma(t) if self.data else self.process.alpha(t)

    def B(self, t):
        return self.process.alpha(t) if self.data else self.process.sigma(t)

    def pred(self, D, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0 = D(x, t)
        if self.threshold is not None:
            x0 = dynamic_threshold(x0, *self.threshold)
        if self.data:
            return x0
        a, s = self.process.alpha(t), self.process.sigma(t)
        return (x - coef(a, x) * x0) / coef(s, x)

    def phis(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = self.sign * h
        phi1 = torch.expm1(g)
        phi2 = phi1 / g - 1.0
        return phi1, phi2, phi2 / g - 0.5

    def first(self, x, P_s, s, t, h):
        """Order-1 step from s to t (lambda step h) with prediction P_s."""
        phi1 = torch.expm1(self.sign * h)
        return coef(self.A(t) / self.A(s), x) * x - coef(self.B(t) * phi1, x) * P_s


def dynamic_threshold(x0: torch.Tensor, ratio: float = 0.995, max_value: float = 1.0):
    """Dynamic thresholding of a data prediction (Saharia et al. 2022, Imagen, Sec. 2.3).

    Per sample, s = the ``ratio`` quantile of |x0|, clamped to [1, max_value]; then
    x0 <- clamp(x0, -s, s) / s. Pixel-space models only: it assumes data in [-1, 1].
    """
    flat = x0.reshape(x0.shape[0], -1).abs()
    s = torch.quantile(flat.double(), ratio, dim=1).clamp(min=1.0, max=max_value).to(x0.dtype)
    s = s.reshape(-1, *([1] * (x0.ndim - 1)))
    return torch.clamp(x0, -s, s) / s


def _frame(name, process, data: bool, thresholding: bool, ratio: float, max_value: float):
    """The solver's frame, with its dynamic-thresholding options checked."""
    if not thresholding:
        return _Frame(process, data)
    if not data:
        raise ValueError(f"{name}: thresholding needs the data prediction (use dpm++)")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"{name}: threshold_ratio must lie in (0, 1], got {ratio}")
    if not max_value >= 1.0:
        raise ValueError(f"{name}: max_value must be >= 1, got {max_value}")
    return _Frame(process, data, (ratio, max_value))


def _singlestep(F: _Frame, D, x, s, t, order: int, r1: float | None = None, cache=()):
    """One singlestep DPM-Solver(++) step of ``order`` from time s to t.

    Returns (x_t, [P at the stages]). ``cache`` holds stage predictions already made
    (P_s, then P at r1): the adaptive solver's higher-order update reuses its lower one's.
    """
    lam_s, lam_t = F.lam(s), F.lam(t)
    h = lam_t - lam_s
    r1 = (0.5 if order == 2 else 1.0 / 3.0) if r1 is None else r1
    P = list(cache)

    def stage(i, make_x, at):
        if len(P) <= i:
            P.append(F.pred(D, make_x(), at))
        return P[i]

    P_s = stage(0, lambda: x, s)
    phi1, phi2, _ = F.phis(h)
    x_t = F.first(x, P_s, s, t, h)
    if order == 1:
        return x_t, P
    s1 = F.time(lam_s + r1 * h)
    P1 = stage(1, lambda: F.first(x, P_s, s, s1, r1 * h), s1)
    if order == 2:
        return x_t - coef(F.B(t) * phi1 / (2 * r1), x) * (P1 - P_s), P
    r2 = 2.0 / 3.0
    s2 = F.time(lam_s + r2 * h)
    _, phi2_r2, _ = F.phis(r2 * h)
    u2 = lambda: (
        F.first(x, P_s, s, s2, r2 * h) - coef(F.B(s2) * (r2 / r1) * phi2_r2, x) * (P1 - P_s)
    )
    P2 = stage(2, u2, s2)
    return x_t - coef(F.B(t) * phi2 / r2, x) * (P2 - P_s), P


def _multistep_weights(sign: float, lams: list[float], lam_t: float, k: int, d2_scale: float):
    """Coefficients c_j with x_t = (A_t/A_s) x_s + B_t sum_j c_j P_j for the order-k
    multistep update, P_j the history newest first at lambdas ``lams`` (Python floats).

    The third-order term needs h^2 P'' = 2 (d0 - d1) / (r0 + r1). The official code
    (and diffusers) use half of it (``d2_scale=1``, variant "reference"): its local error
    is then O(h^3) and 3M converges at order 2 only (measured, see the module docstring).
    """
    h = lam_t - lams[0]
    g = sign * h
    phi1 = math.expm1(g)
    c = [-phi1, 0.0, 0.0][:k]
    if k == 1:
        return c
    r0 = (lams[0] - lams[1]) / h
    d0 = [1.0 / r0, -1.0 / r0, 0.0]  # (P0 - P1) / r0: h P' to first order
    if k == 2:
        return [c[j] - 0.5 * phi1 * d0[j] for j in range(2)]
    phi2 = phi1 / g - 1.0
    phi3 = phi2 / g - 0.5
    r1 = (lams[1] - lams[2]) / h
    d1 = [0.0, 1.0 / r1, -1.0 / r1]
    D1 = [d0[j] + r0 / (r0 + r1) * (d0[j] - d1[j]) for j in range(3)]  # h P', 2nd order
    D2 = [d2_scale * (d0[j] - d1[j]) / (r0 + r1) for j in range(3)]  # h^2 P''
    return [c[j] - phi2 * D1[j] - phi3 * D2[j] for j in range(3)]


def _final_below(lower_order_final: Any) -> int:
    if lower_order_final is True:
        return 10  # the official DPM-Solver rule
    if lower_order_final is False:
        return 0
    if isinstance(lower_order_final, int) and lower_order_final >= 0:
        return lower_order_final
    raise ValueError(
        f"lower_order_final must be True, False or a step count, got {lower_order_final!r}"
    )


def _check_order(name: str, order: Any, allowed) -> int:
    if isinstance(order, bool) or order not in allowed:
        raise ValueError(f"{name}: order must be one of {sorted(allowed)}, got {order!r}")
    return order


# --------------------------------------------------------------------------------------
# multistep
# --------------------------------------------------------------------------------------
VARIANTS = {"taylor": 2.0, "reference": 1.0}


def _stable_order(k: int, lams: list[float], lam_next: float, max_ratio: float | None) -> int:
    """Lower the order while the step h outruns the history it extrapolates from.

    An order-k step extrapolates P over h from k points spanning S = lambda_0 -
    lambda_{k-1}; its weights grow like (h (k-1) / S)^(k-1). On grids with one large
    final lambda step (time-uniform grids end with one) a third-order step there
    amplifies the history's errors: 3M on a uniform grid at NFE 10 had RMSE 4.6 on a
    2-D mixture, against 0.23 with this rule (benchmarks/RESULTS.md).
    """
    if max_ratio is None:
        return k
    h = lam_next - lams[0]
    while k > 1 and h * (k - 1) > max_ratio * (lams[0] - lams[k - 1]):
        k -= 1
    return k


def _multistep(D, F: _Frame, x, ts, order, lower_order_final, warmup, variant, max_ratio):
    below = _final_below(lower_order_final)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    A, B = (ts.sigma, ts.alpha) if F.data else (ts.alpha, ts.sigma)
    lam, steps = ts.lam, len(ts)
    hist: list[tuple[torch.Tensor, float]] = []  # (P, lambda), newest first
    for i, t, s in ts:  # here t is the current time and s the next (a decreasing grid)
        if i == 0 and warmup == "singlestep" and order > 1:
            x_next, P = _singlestep(F, D, x, t, s, order)
            # continue from P at the start and at the last stage, whose error is
            # O(h^order): the divided differences then keep the order
            r_last = 0.5 if order == 2 else 2.0 / 3.0
            hist = [(P[-1], lam[0] + r_last * (lam[1] - lam[0])), (P[0], lam[0])]
            x = ts.check(x_next)
            continue
        x0 = D(x, t)
        if F.threshold is not None:
            x0 = dynamic_threshold(x0, *F.threshold)
        P = x0 if F.data else lincomb((1.0 / ts.sigma[i], x), (-ts.alpha[i] / ts.sigma[i], x0))
        hist = [(P, lam[i])] + hist[: order - 1]
        k = len(hist)
        if steps < below:
            k = min(k, steps - i)
        k = _stable_order(k, [lm for _, lm in hist], lam[i + 1], max_ratio)
        c = _multistep_weights(F.sign, [lm for _, lm in hist], lam[i + 1], k, VARIANTS[variant])
        terms = [(B[i + 1] * cj, Pj) for cj, (Pj, _) in zip(c, hist)]
        x = ts.check(lincomb((A[i + 1] / A[i], x), *terms))
    return x


def _multistep_steps(order):
    def steps(nfe: int, warmup: str = "multistep", **_: Any) -> int:
        if warmup not in ("multistep", "singlestep"):
            raise ValueError(f"warmup must be 'multistep' or 'singlestep', got {warmup!r}")
        if warmup == "singlestep":
            if nfe < order:
                raise ValueError(
                    f"a singlestep warm-up of order {order} costs {order} evaluations; "
                    f"nfe={nfe} is too small"
                )
            return nfe - (order - 1)
        return nfe

    return steps


def _register_multistep(name: str, order: int, data: bool, paper: str):
    def solver(
        D,
        process,
        x,
        ts,
        generator=None,
        lower_order_final: Any = True,
        warmup: str = "multistep",
        variant: str = "taylor",
        max_step_ratio: float | None = 3.0,
        thresholding: bool = False,
        threshold_ratio: float = 0.995,
        max_value: float = 1.0,
    ):
        F = _frame(name, process, data, thresholding, threshold_ratio, max_value)
        if max_step_ratio is not None and not max_step_ratio > 0:
            raise ValueError(f"{name}: max_step_ratio must be > 0 or None, got {max_step_ratio}")
        return _multistep(D, F, x, ts, order, lower_order_final, warmup, variant, max_step_ratio)

    solver.__doc__ = (
        f"{paper}: order-{order} multistep in lambda on the "
        f"{'data' if data else 'noise'} prediction; warmup='singlestep' keeps order {order}."
    )
    solver.__name__ = name.replace("+", "p").replace("-", "_")
    register_solver(name, order=order, steps=_multistep_steps(order))(solver)


_register_multistep("dpm++2m", 2, True, "DPM-Solver++(2M) (Lu et al. 2022, Alg. 2)")
_register_multistep("dpm++3m", 3, True, "DPM-Solver++(3M) (Lu et al. 2022, App. B)")
_register_multistep("dpm-solver-2m", 2, False, "Multistep DPM-Solver-2 (Lu et al. 2022b)")
_register_multistep("dpm-solver-3m", 3, False, "Multistep DPM-Solver-3 (Lu et al. 2022b)")


# --------------------------------------------------------------------------------------
# singlestep
# --------------------------------------------------------------------------------------
def singlestep_orders(nfe: int, order: int) -> list[int]:
    """How the official DPM-Solver splits an NFE budget into singlestep steps:
    order 3 -> [3, ..., 3] ending with [2, 1], [1] or [2] by nfe mod 3; order 2 ->
    [2, ..., 2] (+ [1] if nfe is odd); order 1 -> [1] * nfe (DPM-Solver, Sec. 3.4)."""
    if order == 3:
        K = nfe // 3 + 1
        tail = {0: [2, 1], 1: [1], 2: [2]}[nfe % 3]
        return [3] * (K - len(tail)) + tail
    if order == 2:
        return [2] * (nfe // 2) + [1] * (nfe % 2)
    return [1] * nfe


def _singlestep_solver(D, F: _Frame, x, ts, order):
    orders = singlestep_orders(ts.nfe, order)
    for i, t, s in ts:
        x = ts.check(_singlestep(F, D, x, t, s, orders[i])[0])
    return x


def _register_singlestep(name: str, order: int, data: bool, paper: str):
    def solver(
        D,
        process,
        x,
        ts,
        generator=None,
        thresholding: bool = False,
        threshold_ratio: float = 0.995,
        max_value: float = 1.0,
    ):
        F = _frame(name, process, data, thresholding, threshold_ratio, max_value)
        return _singlestep_solver(D, F, x, ts, order)

    solver.__doc__ = (
        f"{paper}: singlestep order {order} on the {'data' if data else 'noise'} prediction."
    )
    solver.__name__ = name.replace("+", "p").replace("-", "_")
    steps = lambda nfe, **_: len(singlestep_orders(nfe, order))
    register_solver(name, order=order, steps=steps)(solver)


_register_singlestep("dpm-solver-1", 1, False, "DPM-Solver-1 (Lu et al. 2022, eq. 3.7; = DDIM)")
_register_singlestep("dpm-solver-2", 2, False, "DPM-Solver-2 (Lu et al. 2022, Alg. 1)")
_register_singlestep("dpm-solver-3", 3, False, "DPM-Solver-3 (Lu et al. 2022, Alg. 2)")
_register_singlestep("dpm++2s", 2, True, "DPM-Solver++(2S) (Lu et al. 2022b, Alg. 1)")
_register_singlestep("dpm++3s", 3, True, "DPM-Solver++(3S) (Lu et al. 2022b, App. B)")


# --------------------------------------------------------------------------------------
# adaptive
# --------------------------------------------------------------------------------------
@register_solver("dpm-solver-adaptive", order=3, steps=lambda nfe, **_: 1, adaptive=True)
def dpm_solver_adaptive(
    D,
    process,
    x,
    ts,
    generator=None,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    theta: float = 0.9,
    predict_x0: bool = False,
):
    """Adaptive DPM-Solver-12/23 with embedded error control (Lu et al. 2022, Alg. 4).

    Each trial step of size h (in lambda) runs the order-(k-1) and order-k singlestep
    updates on shared evaluations (k evaluations); it is accepted when the scaled error
    E = max_batch RMS((x_hi - x_lo) / max(atol, rtol max(|x_lo|, |x_prev|))) <= 1, and
    h <- min(theta h E^(-1/k), lambda_end - lambda). ``nfe`` is a budget here: the
    solver stops with a ValueError if the tolerance would need more evaluations.
    The defaults (rtol 0.05, atol 0.0078 = 2/255, h_init 0.05) are the paper's for images.
    """
    k = _check_order("dpm-solver-adaptive", order, (2, 3))
    for name, v in (("rtol", rtol), ("atol", atol), ("h_init", h_init)):
        if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            raise ValueError(f"dpm-solver-adaptive: {name} must be a finite number > 0, got {v!r}")
    if not 0 < theta <= 1:
        raise ValueError(f"dpm-solver-adaptive: theta must lie in (0, 1], got {theta}")
    F = _Frame(process, predict_x0)
    t_end = ts.ts[-1]
    s = ts.ts[0]
    lam_s, lam_end = F.lam(s), F.lam(t_end)
    h = torch.as_tensor(h_init, dtype=torch.float64)
    x_prev, used = x, 0
    rms = lambda v: v.reshape(v.shape[0], -1).square().mean(dim=1).sqrt()
    while lam_end - lam_s > 1e-9:
        if used + k > ts.nfe:
            raise ValueError(
                f"dpm-solver-adaptive: rtol={rtol}, atol={atol} needs more than nfe={ts.nfe} "
                f"evaluations (reached lambda={float(lam_s):.4g} of {float(lam_end):.4g}); "
                "raise nfe or loosen the tolerances"
            )
        t = F.time(lam_s + h) if lam_s + h < lam_end else t_end
        # DPM-Solver-12 / -23: the lower update shares its stages with the higher one,
        # so the lower order-2 update of DPM-Solver-23 uses r1 = 1/3 (Alg. 4)
        x_lo, P = _singlestep(F, D, x, s, t, k - 1, r1=1.0 / 3.0)
        x_hi, _ = _singlestep(F, D, x, s, t, k, cache=P)
        used += k
        delta = torch.maximum(
            torch.full_like(x_lo, atol), rtol * torch.maximum(x_lo.abs(), x_prev.abs())
        )
        E = rms((x_hi - x_lo) / delta).max().double()
        if E <= 1.0:
            x, x_prev, s, lam_s = ts.check(x_hi), x_lo, t, F.lam(t)
        h = torch.minimum(theta * h * E.clamp(min=1e-10) ** (-1.0 / k), lam_end - lam_s)
    # the unused evaluations of the budget are not spent: see SolverSpec.adaptive
    return x


# --------------------------------------------------------------------------------------
# SDE
# --------------------------------------------------------------------------------------
@register_solver("dpm++2m-sde", order=1, stochastic=True, gaussian_only=True)
def dpmpp_2m_sde(
    D, process, x, ts, generator=None, eta: float = 1.0, lower_order_final: Any = True
):
    """DPM-Solver++(2M) SDE (Lu et al. 2022b, Sec. 5; diffusers' "sde-dpmsolver++", midpoint).

    The variance-preserving reverse SDE solved exactly in its linear part: with
    h = lambda_s - lambda_t and e = eta h,

        x_s = (sigma_s/sigma_t) e^{-e} x + alpha_s (1 - e^{-h-e}) (D0 + D1/2)
              + sigma_s sqrt(1 - e^{-2e}) z,   D1 = (D0 - D_prev) / r,

    eta = 1 is the reverse-time SDE, eta = 0 the 2M ODE solver (k-diffusion's eta).
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"dpm++2m-sde: eta must lie in [0, 1], got {eta}")
    below = _final_below(lower_order_final)
    lam = 0.5 * process.log_snr(ts.ts)
    steps, prev = len(ts), None
    for i, t, s in ts:
        x0 = D(x, t)
        h = lam[i + 1] - lam[i]
        e = eta * h
        a_s, sig_s = process.alpha(s), process.sigma(s)
        decay = -torch.expm1(-h - e)  # 1 - e^{-h - eta h}
        x_next = coef(sig_s / process.sigma(t) * torch.exp(-e), x) * x + coef(a_s * decay, x) * x0
        if prev is not None and not (steps < below and i == steps - 1):
            r = (lam[i] - lam[i - 1]) / h
            x_next = x_next + coef(0.5 * a_s * decay / r, x) * (x0 - prev)
        if eta > 0:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x_next = x_next + coef(sig_s * torch.sqrt(-torch.expm1(-2.0 * e)), x) * z
        prev, x = x0, ts.check(x_next)
    return x
