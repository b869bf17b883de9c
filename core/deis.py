"""DEIS: diffusion exponential integrator sampler, tAB-DEIS (Zhang & Chen 2023, "Fast
Sampling of Diffusion Models with Exponential Integrator", ICLR 2023: the
exponential-integrator step with polynomial extrapolation of eps_theta).

With rho = sigma / alpha the probability-flow ODE of any Gaussian process reads
d(x / alpha) = eps(x, t) d rho (the linear part is solved exactly: Psi(s, t) =
alpha_s / alpha_t), so a step t_i -> t_{i+1} is

    x_{i+1} = (alpha_{i+1} / alpha_i) x_i + alpha_{i+1} sum_j C_ij eps_{i-j},
    C_ij = int_{t_i}^{t_{i+1}} l_j(v(tau)) d rho(tau),

where eps_{i-j} = (x - alpha D) / sigma are the noise predictions at the last ``order``
grid times and l_j the Lagrange basis polynomials through them in the variable ``v``
(the paper's tAB-DEIS extrapolates eps_theta by such a polynomial). Order k uses k points
(a polynomial of degree k - 1) and has convergence order k; the paper's tAB-r (r = 0..3)
is order r + 1 here, and order 1 is DDIM.

``variable`` chooses the interpolation variable:

- ``"t"``: the paper's tAB-DEIS, a polynomial in the process time (qsh-zh/deis
  ``get_sampler_t_ab``; affine changes of time, e.g. diffusers' integer timesteps,
  leave the Lagrange basis unchanged);
- ``"rho"``: a polynomial in rho, i.e. Adams-Bashforth on d(x/alpha)/d rho = eps (the
  paper's rhoAB-DEIS);
- ``"lambda"``: a polynomial in lambda = log(alpha / sigma) = -log rho, integrated
  exactly against d rho: this is diffusers' ``DEISMultistepScheduler``
  (``solver_type="logrho"``, whose closed-form ``ind_fn`` integrates the log-rho Lagrange
  basis in rho), so on the same grid the two agree to float32 round-off.

The weights C_ij are computed once per grid, in float64, by Gauss-Legendre quadrature in
u = log rho, where the integrand l_j(v(u)) e^u is smooth (panels are split at the knots
of a discrete-time schedule, where t(u) has kinks), before the loop; the official code
sums 10000 rectangles in t instead. The first ``order - 1`` steps warm up at lower order
(as the official code and diffusers do); ``lower_order_final`` drops to orders 1 and 2
on the last two steps when the grid has fewer than 15 steps (diffusers' rule; the
official code has none).

An order-1 first step bounds the global order of a multistep method by 2 in theory. On
the oracle (tests/core/test_deis.py) order 3 still measures 2.8-3.1 over NFE 64-256,
because the noise prediction barely changes at high noise, so that step's error
constant is tiny; the bound shows in the error after the first steps (slope 2.0-2.1).
``start="corrected"`` (in neither the paper nor diffusers) removes it at no extra NFE:
the evaluation at t_1, made anyway, redoes the first step with the two-point
(trapezoidal, exponential Adams-Moulton) weights, a local error O(h^3) instead of
O(h^2) (measured 3.2-3.3), as UniC corrects UniPC's first step (Zhao et al. 2023).
"""

from __future__ import annotations

import numpy as np
import torch

from .processes import Process
from .samplers import register_solver
from .utils import coef

__all__ = ["deis", "deis_coefficients"]

VARIABLES = ("t", "rho", "lambda")
_QUAD_NODES = 32  # Gauss-Legendre nodes per step (integrands are smooth in u = log rho)


def _check_options(order, variable, lower_order_final, start) -> None:
    if isinstance(order, bool) or not isinstance(order, int) or order not in (1, 2, 3):
        raise ValueError(f"deis: order must be 1, 2 or 3, got {order!r}")
    if variable not in VARIABLES:
        raise ValueError(f"deis: variable must be one of {VARIABLES}, got {variable!r}")
    if not isinstance(lower_order_final, bool):
        raise ValueError(f"deis: lower_order_final must be a bool, got {lower_order_final!r}")
    if start not in ("lower_order", "corrected"):
        raise ValueError(f"deis: start must be 'lower_order' or 'corrected', got {start!r}")


def _variable(process: Process, u: torch.Tensor, variable: str) -> torch.Tensor:
    """The interpolation variable v at u = log rho = -log_snr / 2."""
    if variable == "t":
        return process.t_of_log_snr(-2.0 * u)
    if variable == "rho":
        return torch.exp(u)
    return -u  # lambda


def _lagrange(v: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """Lagrange basis l_j(v) = prod_{k != j} (v - v_k) / (v_j - v_k), stacked over j."""
    out = []
    for j in range(len(nodes)):
        lj = torch.ones_like(v)
        for k in range(len(nodes)):
            if k != j:
                lj = lj * (v - nodes[k]) / (nodes[j] - nodes[k])
        out.append(lj)
    return torch.stack(out)


def _knots(process: Process, variable: str) -> torch.Tensor | None:
    """u = log rho at the knots of a piecewise-linear (discrete-time) schedule, where
    t(u) has kinks: the quadrature is split there so that it stays exact."""
    grid = process.knots
    if variable != "t" or grid is None:
        return None
    return (-0.5 * process.log_snr(grid)).sort().values


def _quadrature(
    u0: torch.Tensor, u1: torch.Tensor, knots: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes u and weights w with sum w f(u) = int_{u0}^{u1} f(u) e^u du (signed):
    Gauss-Legendre, panel by panel between the ``knots`` inside (u1 < u0 allowed)."""
    lo, hi = torch.minimum(u0, u1), torch.maximum(u0, u1)
    inner = knots[(knots > lo) & (knots < hi)] if knots is not None else u0.new_zeros(0)
    edges = torch.cat([lo.reshape(1), inner, hi.reshape(1)])
    x, w = np.polynomial.legendre.leggauss(_QUAD_NODES if len(edges) == 2 else 12)
    x = torch.as_tensor(x, dtype=torch.float64)
    w = torch.as_tensor(w, dtype=torch.float64)
    half = 0.5 * (edges[1:] - edges[:-1])[:, None]
    u = (0.5 * (edges[1:] + edges[:-1])[:, None] + half * x).reshape(-1)
    sign = 1.0 if bool(u1 >= u0) else -1.0
    return u, sign * (half * w).reshape(-1) * torch.exp(u)


def _weights(
    process: Process,
    spans: list[tuple[torch.Tensor, torch.Tensor]],
    nodes: list[torch.Tensor],
    variable: str,
) -> list[torch.Tensor]:
    """int_{u0}^{u1} l_j(v(u)) e^u du = int l_j(v) d rho for each span (u0, u1) and the
    Lagrange basis through its interpolation ``nodes`` (values of v), in float64."""
    knots = _knots(process, variable)
    quads = [_quadrature(u0, u1, knots) for u0, u1 in spans]
    v_all = _variable(process, torch.cat([u for u, _ in quads]), variable)  # one call
    out, start = [], 0
    for (u, w), vn in zip(quads, nodes):
        v = v_all[start : start + len(u)]
        start += len(u)
        out.append((_lagrange(v, vn) * w).sum(-1))
    return out


def deis_coefficients(
    process: Process,
    ts: torch.Tensor,
    order: int = 3,
    variable: str = "t",
    lower_order_final: bool = True,
) -> list[torch.Tensor]:
    """The tAB-DEIS weights C_ij of every step of the grid ``ts`` (Zhang & Chen 2023, tAB-DEIS).

    Entry i holds the k_i weights of step t_i -> t_{i+1}, newest point first, so that
    x_{i+1} / alpha_{i+1} = x_i / alpha_i + sum_j C_ij eps_{i-j}; k_i = min(order, i + 1),
    lowered on the last two steps of grids under 15 steps if ``lower_order_final``.
    """
    ts = torch.as_tensor(ts, dtype=torch.float64).cpu()
    u = -0.5 * process.log_snr(ts)
    v = _variable(process, u, variable)
    steps = len(ts) - 1
    spans, nodes = [], []
    for i in range(steps):
        k = min(order, i + 1)
        if lower_order_final and steps < 15:
            k = min(k, steps - i)
        spans.append((u[i], u[i + 1]))
        nodes.append(v[i - k + 1 : i + 1].flip(0))
    return _weights(process, spans, nodes, variable)


@register_solver("deis", order=3)
def deis(
    D,
    process,
    x,
    ts,
    generator=None,
    order: int = 3,
    variable: str = "t",
    lower_order_final: bool = True,
    start: str = "lower_order",
):
    """DEIS, tAB-DEIS multistep exponential integrator (Zhang & Chen 2023).

    ``order`` 1-3 (1 = DDIM), ``variable`` of the Lagrange extrapolation: ``"t"`` (the
    paper's tAB), ``"rho"`` (rhoAB) or ``"lambda"`` (diffusers' log-rho DEIS);
    ``start="corrected"`` (orders 2-3) redoes the first step with the evaluation at t_1
    (no extra NFE) so that order 3 keeps global order 3.
    """
    _check_options(order, variable, lower_order_final, start)
    grid = ts.ts.cpu()
    weights = deis_coefficients(process, grid, order, variable, lower_order_final)
    alpha, sigma = process.alpha(grid), process.sigma(grid)
    u = -0.5 * process.log_snr(grid)
    hist: list[torch.Tensor] = []  # noise predictions, newest last
    x_first = None  # the state at t_0, kept for the corrected start
    for i, t, _ in ts:
        x0 = D(x, t)
        eps = (x - coef(alpha[i], x) * x0) / coef(sigma[i], x)
        if start == "corrected" and i == 1 and order > 1:
            # Adams-Moulton start: redo t_0 -> t_1 with the two-point weights through
            # (v_0, v_1), the eps at t_1 taken at the predicted state (PECE)
            nodes = _variable(process, u[[1, 0]], variable)
            (c,) = _weights(process, [(u[0], u[1])], [nodes], variable)
            y = x_first / coef(alpha[0], x) + coef(c[0], x) * eps + coef(c[1], x) * hist[-1]
            x = coef(alpha[1], x) * y
        hist = (hist + [eps])[-order:]
        if i == 0:
            x_first = x
        c = weights[i]
        y = x / coef(alpha[i], x)
        for j in range(len(c)):
            y = y + coef(c[j], x) * hist[-1 - j]
        x = ts.check(coef(alpha[i + 1], x) * y)
    return x
