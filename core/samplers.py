"""Samplers: plain functions over a denoiser, registered by name behind one ``sample``.

Every sampler has the signature ``fn(D, process, x, ts, generator, **options) -> x``
where ``D(x, t)`` is the (counted) denoiser, ``ts`` the decreasing float64 time grid
and ``x`` the state at ``ts[0]``; it returns the state at ``ts[-1]``. Sampler state is
kept in local variables of one loop (no hidden step counters), and nothing is wrapped
in ``no_grad`` so that gradient guidance can differentiate through a sampler.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .parameterization import from_x0
from .processes import Process
from .schedules import time_grid
from .utils import all_finite, check_positive_int, coef, lincomb

__all__ = ["sample", "register_solver", "solvers", "SolverSpec"]


@dataclass(frozen=True)
class SolverSpec:
    """A registered sampler: its function, how many steps an NFE budget buys, its order."""

    name: str
    fn: Callable[..., torch.Tensor]
    steps: Callable[..., int]  # steps(nfe, **options) -> number of grid intervals
    order: int  # convergence order of the deterministic solver (strong order for SDEs)
    stochastic: bool
    gaussian_only: bool
    doc: str
    adaptive: bool = False  # chooses its own steps: nfe is then a budget, not a count


_SOLVERS: dict[str, SolverSpec] = {}


def _one_per_step(nfe: int, **_: Any) -> int:
    return nfe


def register_solver(
    name: str,
    *,
    order: int,
    steps: Callable[..., int] = _one_per_step,
    stochastic: bool = False,
    gaussian_only: bool = False,
    adaptive: bool = False,
):
    """Decorator: register a sampler function under ``name`` (duplicates are refused)."""

    def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in _SOLVERS:
            raise ValueError(f"a solver named {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _SOLVERS[name] = SolverSpec(
            name, fn, steps, order, stochastic, gaussian_only, doc, adaptive
        )
        return fn

    return wrap


def solvers() -> dict[str, SolverSpec]:
    """All registered solvers by name."""
    return dict(_SOLVERS)


class _CountedDenoiser:
    """Counts real denoiser calls and checks what comes back."""

    def __init__(self, denoiser: Callable[..., torch.Tensor], cond: Any, solver: str) -> None:
        self.denoiser, self.cond, self.solver, self.calls = denoiser, cond, solver, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        tb = torch.as_tensor(t, dtype=torch.float64, device=x.device).expand(x.shape[0])
        out = (
            self.denoiser(x, tb, cond=self.cond) if self.cond is not None else self.denoiser(x, tb)
        )
        if out.shape != x.shape:
            raise ValueError(
                f"{self.solver}: the denoiser returned shape {tuple(out.shape)} "
                f"for an input of shape {tuple(x.shape)}"
            )
        if not all_finite(out):
            raise FloatingPointError(
                f"{self.solver}: the denoiser returned NaN/Inf at call {self.calls} (t={float(t):.6g})"
            )
        return out


def sample(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    x1: torch.Tensor,
    solver: str = "heun",
    nfe: int = 10,
    schedule: Any = "logsnr",
    generator: torch.Generator | None = None,
    progress: bool = False,
    cond: Any = None,
    rho: float = 7.0,
    **options: Any,
) -> torch.Tensor:
    """Integrate from the prior sample ``x1`` (at ``process.t_max``) to data (``t_min``).

    Args:
        denoiser: D(x_t, t, cond=None) -> x0_hat, with t a float64 tensor of shape (B,).
        process: the forward process the denoiser was trained for.
        x1: the starting batch (B, ...), e.g. ``process.prior(shape, generator)``.
        solver: a registered name (``solvers()`` lists them).
        nfe: the number of denoiser evaluations to spend; exactly this many are made
            (adaptive solvers, which choose their own steps, make at most this many).
        schedule: ``uniform``, ``logsnr``, ``karras``, ``quadratic``, a list of times or
            a JSON file of one.
        generator: the source of all randomness of stochastic solvers.
        progress: show a tqdm bar over steps.
        cond: passed to the denoiser as ``cond=`` when not None.
        **options: solver-specific options (e.g. ``eta`` for ddim).
    """
    if not isinstance(solver, str) or solver not in _SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; available: {sorted(_SOLVERS)}")
    spec = _SOLVERS[solver]
    nfe = check_positive_int("nfe", nfe)
    if not isinstance(x1, torch.Tensor) or not x1.is_floating_point() or x1.ndim < 1:
        raise ValueError("x1 must be a floating-point tensor with a batch dimension")
    if not bool(torch.isfinite(x1).all()):
        raise ValueError("x1 contains NaN/Inf")
    if spec.gaussian_only and not process.gaussian:
        raise ValueError(f"solver {solver!r} needs a Gaussian process; {process!r} is not one")
    params = inspect.signature(spec.fn).parameters
    unknown = set(options) - set(params)
    if unknown:
        allowed = sorted(p for p in params if p not in ("D", "process", "x", "ts", "generator"))
        raise ValueError(
            f"solver {solver!r} takes no option(s) {sorted(unknown)}; it takes {allowed}"
        )
    steps = spec.steps(nfe, **options)
    ts = time_grid(process, steps, schedule, rho=rho).to(x1.device)
    D = _CountedDenoiser(denoiser, cond, solver)
    steps_ = _Steps(ts, solver, progress, nfe, process)
    x = spec.fn(D, process, x1, steps_, generator, **options)
    if D.calls > nfe or (D.calls != nfe and not spec.adaptive):  # a bug in a sampler
        raise RuntimeError(f"{solver} made {D.calls} denoiser calls for nfe={nfe}")
    return x


class _Steps:
    """The grid's intervals (i, t, s), with a progress bar, the NFE budget, and a NaN check.

    ``alpha``, ``sigma`` and ``lam`` (= log(alpha/sigma) = log_snr/2) hold the process at
    every grid time as Python floats, computed once in float64: samplers read their
    step coefficients from them instead of re-evaluating the schedule every step.
    """

    def __init__(
        self, ts: torch.Tensor, solver: str, progress: bool, nfe: int, process: Process
    ) -> None:
        self.ts, self.solver, self.progress, self.nfe = ts, solver, progress, nfe
        self._at = (0, ts[0], ts[0])
        self.alpha = process.alpha(ts).tolist()
        self.sigma = process.sigma(ts).tolist()
        self.lam = (0.5 * process.log_snr(ts)).tolist()

    def __len__(self) -> int:
        return len(self.ts) - 1

    def __iter__(self):
        it = range(len(self))
        if self.progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc=self.solver, leave=False)
        for i in it:
            self._at = (i, self.ts[i], self.ts[i + 1])
            yield self._at

    def check(self, x: torch.Tensor) -> torch.Tensor:
        """Return the state after a step, raising FloatingPointError if it is not finite."""
        if not all_finite(x):
            i, t, s = self._at
            raise FloatingPointError(
                f"{self.solver}: the state became NaN/Inf at step {i} "
                f"(t={float(t):.6g} -> {float(s):.6g})"
            )
        return x


# --------------------------------------------------------------------------------------
# ODE samplers
# --------------------------------------------------------------------------------------
def _velocity(D, process: Process, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Probability-flow velocity dx/dt = alpha' x0_hat + sigma' eps_hat."""
    return from_x0(D(x, t), "velocity", x, t, process)


@register_solver("euler", order=1)
def euler(D, process, x, ts, generator=None):
    """Euler's method on the probability-flow ODE dx/dt = alpha' x0 + sigma' eps (Song et al. 2021)."""
    for _, t, s in ts:
        x = ts.check(x + (s - t) * _velocity(D, process, x, t))
    return x


def _heun_steps(nfe: int, **_: Any) -> int:
    return (nfe + 1) // 2  # an odd budget ends with one Euler step (EDM Alg. 1, line 8)


@register_solver("heun", order=2, steps=_heun_steps)
def heun(D, process, x, ts, generator=None):
    """Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Alg. 1)."""
    n = len(ts)
    euler_last = ts.nfe % 2 == 1
    for i, t, s in ts:
        h = s - t
        d = _velocity(D, process, x, t)
        x_e = x + h * d
        if euler_last and i == n - 1:
            x = ts.check(x_e)
            break
        # Apply 2nd order correction.
        d_prime = _velocity(D, process, x_e, s)
        x = ts.check(x + h * (0.5 * d + 0.5 * d_prime))
    return x


def ddpm_posterior_std(process: Process, t, s) -> torch.Tensor:
    """Std of the DDPM posterior q(x_s | x_t, x0), s < t: sigma_s sqrt(1 - e^{lambda_t -
    lambda_s}) with lambda = log_snr (Ho et al. 2020, eq. 7, for any Gaussian process)."""
    return process.sigma(s) * torch.sqrt(-torch.expm1(process.log_snr(t) - process.log_snr(s)))


def _ddim_step(process, x, x0, t, s, eta, generator):
    """One DDIM step (Song et al. 2021a, eq. 12) for any Gaussian process.

    x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps_hat + c z, where the DDPM posterior
    variance is sigma_s^2 (1 - exp(lambda_t - lambda_s)) and c = eta * its square root.
    """
    a_t, s_t = process.alpha(t), process.sigma(t)
    a_s, s_s = process.alpha(s), process.sigma(s)
    eps = (x - coef(a_t, x) * x0) / coef(s_t, x)
    c = eta * ddpm_posterior_std(process, t, s)
    x_next = coef(a_s, x) * x0 + coef(torch.sqrt(s_s**2 - c**2), x) * eps
    if eta > 0:
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x_next = x_next + coef(c, x) * z
    return x_next


@register_solver("ddim", order=1)
def ddim(D, process, x, ts, generator=None, eta: float = 0.0):
    """DDIM (Song et al. 2021a): eta = 0 deterministic, eta = 1 ancestral DDPM."""
    if not 0.0 <= eta <= 1.0 or not math.isfinite(eta):
        raise ValueError(f"ddim: eta must lie in [0, 1], got {eta}")
    if eta > 0 and not process.gaussian:
        raise ValueError(f"ddim: eta > 0 injects Gaussian noise; {process!r} is not Gaussian")
    if eta > 0:
        for _, t, s in ts:
            x = ts.check(_ddim_step(process, x, D(x, t), t, s, eta, generator))
        return x
    A, S = ts.alpha, ts.sigma
    for i, t, _ in ts:
        # x_s = alpha_s x0 + sigma_s (x - alpha_t x0) / sigma_t, as one combination
        k = S[i + 1] / S[i]
        x = ts.check(lincomb((k, x), (A[i + 1] - k * A[i], D(x, t))))
    return x


@register_solver("ddpm", order=1, stochastic=True, gaussian_only=True)
def ddpm(D, process, x, ts, generator=None):
    """Ancestral sampling from the DDPM posterior q(x_s | x_t, x0_hat) (Ho et al. 2020, eq. 7)."""
    for _, t, s in ts:
        x = ts.check(_ddim_step(process, x, D(x, t), t, s, 1.0, generator))
    return x


# --------------------------------------------------------------------------------------
# SDE samplers
# --------------------------------------------------------------------------------------
def _sde_step(D, process, x, t, s, eps_t, generator):
    """Euler-Maruyama step of dx = [v - eps(t) score] dt + sqrt(2 eps(t)) dW, t -> s < t.

    Any eps(t) >= 0 keeps the marginals of the process (Albergo et al. 2023, eq. 2.33;
    eps = g^2/2 is the reverse-time SDE of Anderson 1982 / Song et al. 2021, eq. 6).
    """
    h = s - t  # negative
    x0 = D(x, t)
    a_t, s_t = coef(process.alpha(t), x), coef(process.sigma(t), x)
    eps_hat = (x - a_t * x0) / s_t
    score = -eps_hat / s_t
    v = coef(process.d_alpha(t), x) * x0 + coef(process.d_sigma(t), x) * eps_hat
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + h * (v - coef(eps_t, x) * score) + coef(torch.sqrt(-2.0 * eps_t * h), x) * z


@register_solver("euler_maruyama", order=1, stochastic=True, gaussian_only=True)
def euler_maruyama(D, process, x, ts, generator=None):
    """Euler-Maruyama on the reverse-time SDE dx = [f x - g^2 score] dt + g dW (Song et al. 2021)."""
    for _, t, s in ts:
        x = ts.check(_sde_step(D, process, x, t, s, 0.5 * process.diffusion_sq(t), generator))
    return x


@register_solver("interpolant_sde", order=1, stochastic=True, gaussian_only=True)
def interpolant_sde(D, process, x, ts, generator=None, noise: Any = 1.0):
    """Stochastic-interpolant SDE with tunable diffusion eps(t) (Albergo et al. 2023, eq. 2.33).

    ``noise`` is a constant eps >= 0 or a callable eps(t); eps = 0 is the probability-flow ODE.
    """
    for _, t, s in ts:
        e = torch.as_tensor(noise(t) if callable(noise) else noise, dtype=torch.float64)
        if not bool(torch.isfinite(e).all()) or bool((e < 0).any()):
            raise ValueError(f"interpolant_sde: noise level must be finite and >= 0, got {e}")
        x = ts.check(_sde_step(D, process, x, t, s, e, generator))
    return x


def _pc_steps(nfe: int, n_corrector: int = 1, **_: Any) -> int:
    if isinstance(n_corrector, bool) or not isinstance(n_corrector, int) or n_corrector < 0:
        raise ValueError(f"pc: n_corrector must be an integer >= 0, got {n_corrector!r}")
    per_step = 1 + n_corrector
    if nfe % per_step:
        raise ValueError(
            f"pc: each step costs 1 + n_corrector = {per_step} evaluations; "
            f"nfe={nfe} is not a multiple of {per_step}"
        )
    return nfe // per_step


@register_solver("pc", order=1, steps=_pc_steps, stochastic=True, gaussian_only=True)
def pc(D, process, x, ts, generator=None, n_corrector: int = 1, snr: float = 0.16):
    """Predictor-corrector (Song et al. 2021, Alg. 2/3): reverse-SDE Euler-Maruyama predictor,
    then ``n_corrector`` Langevin steps x += e score + sqrt(2 e) z at the new time s.

    The step is score_sde's e = 2 (snr ||z|| / ||score||)^2 with ||score|| replaced by
    sqrt(d) / sigma_s, its value when the noise dominates, so e = 2 (snr sigma_s)^2:
    score_sde's batch-averaged norms couple the samples, and per-sample norms blow the
    step up where the score vanishes (at a mode).
    """
    if not snr > 0:
        raise ValueError(f"pc: snr must be > 0, got {snr}")
    for _, t, s in ts:
        x = _sde_step(D, process, x, t, s, 0.5 * process.diffusion_sq(t), generator)
        step = coef(2.0 * (snr * process.sigma(s)) ** 2, x)
        for _ in range(n_corrector):
            score = from_x0(D(x, s), "score", x, s, process)
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = x + step * score + torch.sqrt(2.0 * step) * z
        x = ts.check(x)
    return x
