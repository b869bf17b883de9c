"""Posterior samplers for linear inverse problems y = A x + sigma_y n, one interface.

Every sampler is a function

    method(denoiser, process, A, y, x1, steps, generator=None, **options) -> Posterior

with ``denoiser`` the prior's data prediction D(x_t, t), ``process`` its Gaussian forward
process, ``A`` a :class:`~diffsci.restoration.operators.LinearOperator` (its ``sigma_y`` is
the noise level), ``y`` (G, *A.y_shape) for G independent measurements and ``x1``
(G*K, *A.x_shape) the starting noise: K consecutive rows per measurement (samples for
independent samplers, particles for SMC ones). ``steps`` counts time steps; the returned
:class:`Posterior` carries the samples, normalised log-weights per group (None when
equally weighted) and ``evals``, the denoiser evaluations summed over rows, so methods
are compared at equal budgets. All methods are registered in ``POSTERIOR_SAMPLERS`` (one
registry, duplicate names refused).

Here: DPS (Chung et al. 2023, through ``diffsci.core.guidance.dps``), DDRM (Kawar et al.
2022) and PiGDM (Song et al. 2023). The SMC samplers (MCGdiff, AFDPS) and RED-Diff live
in their own modules on the same interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from diffsci.core.guidance import dps as dps_guidance
from diffsci.core.processes import Process
from diffsci.core.samplers import _ddim_step, ddpm_posterior_std, sample
from diffsci.core.schedules import time_grid
from diffsci.core.svdd import CountingDenoiser, select_in_groups
from diffsci.core.utils import check_positive_int

from .operators import LinearOperator

__all__ = [
    "Posterior",
    "POSTERIOR_SAMPLERS",
    "register_posterior",
    "posterior_sample",
    "check_problem",
    "dps",
    "ddrm",
    "pigdm",
]

_F64 = torch.float64


@dataclass
class Posterior:
    """Samples (G*K, ...) in groups of K per measurement, optional log-weights (G*K,)
    normalised within each group, and the denoiser evaluations spent (summed over rows)."""

    x: torch.Tensor
    groups: int
    evals: int
    log_weights: torch.Tensor | None = None

    @property
    def per_group(self) -> int:
        return self.x.shape[0] // self.groups

    def weights(self) -> torch.Tensor:
        """(G, K) normalised weights (uniform when unweighted)."""
        K = self.per_group
        if self.log_weights is None:
            return torch.full((self.groups, K), 1.0 / K, dtype=_F64)
        return torch.softmax(self.log_weights.to(_F64).view(self.groups, K), 1)

    def mean(self) -> torch.Tensor:
        """(G, ...) the weighted posterior mean per measurement."""
        w = self.weights().to(self.x.dtype)
        xs = self.x.reshape(self.groups, self.per_group, -1)
        return (w[..., None] * xs).sum(1).reshape(self.groups, *self.x.shape[1:])

    def resample(self, n: int | None = None, generator: torch.Generator | None = None):
        """An equally weighted Posterior of ``n`` (default K) draws per group from the
        weighted ensemble (multinomial)."""
        K = self.per_group
        n = check_positive_int("n", K if n is None else n)
        if self.log_weights is None and n == K:
            return self
        logits = torch.zeros(self.x.shape[0], dtype=_F64)
        if self.log_weights is not None:
            logits = self.log_weights.to(_F64)
        idx = select_in_groups(logits, self.groups, K, n, generator)
        return Posterior(self.x[idx], self.groups, self.evals)

    def ess(self) -> torch.Tensor:
        """(G,) effective sample size 1 / sum w^2 per group."""
        return 1.0 / self.weights().square().sum(1)


POSTERIOR_SAMPLERS: dict[str, Callable[..., Posterior]] = {}


def register_posterior(name: str) -> Callable:
    """Register a posterior sampler under ``name`` (refuses a duplicate)."""

    def deco(fn: Callable[..., Posterior]) -> Callable[..., Posterior]:
        if name in POSTERIOR_SAMPLERS:
            raise ValueError(f"a posterior sampler named {name!r} is already registered")
        POSTERIOR_SAMPLERS[name] = fn
        return fn

    return deco


def posterior_sample(method: str, /, *args: Any, **kwargs: Any) -> Posterior:
    """``POSTERIOR_SAMPLERS[method](*args, **kwargs)`` with a clear error for a bad name.
    ``method`` is positional-only, so a sampler's own ``method`` option (the cascade's
    stage sampler) passes through in kwargs."""
    if method not in POSTERIOR_SAMPLERS:
        raise ValueError(
            f"unknown posterior sampler {method!r}; available: {sorted(POSTERIOR_SAMPLERS)}"
        )
    return POSTERIOR_SAMPLERS[method](*args, **kwargs)


def check_problem(
    process: Process,
    A: LinearOperator,
    y: torch.Tensor,
    x1: torch.Tensor,
    steps: int,
    who: str,
    svd: bool = False,
) -> tuple[torch.Tensor, int]:
    """Validate a posterior-sampling problem (``svd=True``: the method needs A's SVD);
    return (y repeated per row (G*K, ...), K)."""
    if not isinstance(process, Process) or not process.gaussian:
        raise ValueError(f"{who}: process must be a Gaussian Process, got {process!r}")
    if not isinstance(A, LinearOperator):
        raise ValueError(f"{who}: A must be a LinearOperator, got {type(A).__name__}")
    check_positive_int("steps", steps)
    if not isinstance(y, torch.Tensor) or not isinstance(x1, torch.Tensor):
        raise ValueError(f"{who}: y and x1 must be tensors")
    if svd and not A.has_svd:
        raise ValueError(f"{who} needs an operator with an SVD; {type(A).__name__} has none")
    A.check_measurement(y)
    A.check_signal(x1)
    G, B = y.shape[0], x1.shape[0]
    if B % G:
        raise ValueError(
            f"{who}: x1 has {B} rows, not a multiple of the {G} measurements in y "
            "(K consecutive rows per measurement)"
        )
    return y.to(x1.dtype).repeat_interleave(B // G, 0), B // G


@register_posterior("dps")
def dps(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    A: LinearOperator,
    y: torch.Tensor,
    x1: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    solver: str = "ddpm",
    scale: float = 1.0,
    gaussian: bool = True,
) -> Posterior:
    """DPS (Chung et al. 2023, "Diffusion Posterior Sampling for General Noisy Inverse
    Problems"): the gradient of the measurement fit of x0_hat(x_t), taken through the
    denoiser by the core's ``guidance.dps``. Two step-size rules:

    - ``gaussian=True``: the Gaussian likelihood -||y - A x0_hat||^2 / (2 sigma_y^2) times
      ``scale`` enters the score (classifier guidance), driven by any stochastic ``solver``
      (needs sigma_y > 0);
    - ``gaussian=False``: the paper's Algorithm 1, with zeta' = ``scale``: an ancestral
      DDPM step x'_s ~ q(x_s | x_t, x0_hat) followed by

          x_s = x'_s - zeta' grad_{x_t} ||y - A x0_hat(x_t)||

      (zeta_i = zeta' / ||y - A x0_hat|| on the gradient of the squared norm, i.e. zeta'
      on the gradient of the norm, per sample, as the official code
      DPS2022/diffusion-posterior-sampling, ``PosteriorSampling``). zeta' is a step in x
      per sampler step, so it does not carry over between step counts: the paper's 0.3 - 1
      are for 1000 steps. Implemented as the DDPM step from the shifted prediction
      x0_hat - (zeta' / c0) grad, with c0 the step's coefficient of x0_hat (exact: the
      step is affine in x0_hat); ``solver`` must be "ddpm".

    Costs ``steps`` evaluations per sample (each with a backward pass).
    """
    who = "dps"
    Y, K = check_problem(process, A, y, x1, steps, who)
    if gaussian and A.sigma_y <= 0:
        raise ValueError("dps: the Gaussian rule needs sigma_y > 0; use gaussian=False")
    if not gaussian and solver != "ddpm":
        raise ValueError(
            f"dps: the paper's rule (gaussian=False) is Algorithm 1's ancestral DDPM step; "
            f"solver must be 'ddpm', got {solver!r}"
        )
    D = CountingDenoiser(denoiser, who=who)
    counted = lambda x, t, cond=None: D(x, t, grad=torch.is_grad_enabled())
    if gaussian:
        guided = dps_guidance(counted, process, A, Y, noise_std=A.sigma_y, scale=scale)
        x = sample(guided, process, x1, solver, nfe=steps, schedule="uniform", generator=generator)
        return Posterior(x.detach(), y.shape[0], D.evals)
    ts = time_grid(process, steps, "uniform").to(x1.device)
    x = x1
    for i in range(steps):
        t, s = ts[i], ts[i + 1]
        a_t, s_t, a_s, s_s = (
            float(v)
            for v in (process.alpha(t), process.sigma(t), process.alpha(s), process.sigma(s))
        )
        c = float(ddpm_posterior_std(process, t, s))
        c0 = a_s - (s_s**2 - c**2) ** 0.5 * a_t / s_t  # x_s = c0 x0_hat + (x0-free terms)
        # guidance.dps shifts x0_hat by w sigma_t^2 / alpha_t grad(-||r||); want zeta' / c0
        guided = dps_guidance(
            counted, process, A, Y, noise_std=None, scale=scale * a_t / (c0 * s_t**2)
        )
        x = _ddim_step(process, x, guided(x, t), t, s, 1.0, generator).detach()
        if not bool(torch.isfinite(x).all()):
            raise FloatingPointError(f"{who}: x became NaN/Inf at step {i + 1} (t={float(s):.4g})")
    return Posterior(x, y.shape[0], D.evals)


def _spectral_y(A: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """Ut(y) restricted to the rank: the measurement in A's left singular basis."""
    return A.Ut(y)[:, : A.rank]


@register_posterior("ddrm")
def ddrm(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    A: LinearOperator,
    y: torch.Tensor,
    x1: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    eta: float = 0.85,
    eta_b: float = 1.0,
) -> Posterior:
    """DDRM (Kawar et al. 2022, "Denoising Diffusion Restoration Models", Eq. 7-8).

    Works in A's spectral basis: x_bar = V^T x / alpha (the variance-exploding scale,
    noise level c_t = sigma_t / alpha_t), y_bar_i = (U^T y)_i / s_i with noise sigma_y / s_i.
    From the denoiser's x0_hat and eps_hat, each coordinate at the next level c:

    - unobserved (s_i = 0):       x0_i + sqrt(1 - eta^2) c eps_i + eta c z;
    - s_i c < sigma_y (y noisier than x_t):
                                  x0_i + sqrt(1 - eta^2) c (y_bar_i - x0_i) s_i / sigma_y
                                  + eta c z;
    - s_i c >= sigma_y:           (1 - eta_b) x0_i + eta_b y_bar_i
                                  + sqrt(c^2 - eta_b^2 sigma_y^2 / s_i^2) z.

    Defaults eta = 0.85, eta_b = 1 as the paper's code. The last step goes to c = 0 (the
    clean estimate; with sigma_y = 0 the observed coordinates then equal y exactly).
    Needs an operator with an SVD.
    Costs ``steps`` evaluations per sample.
    """
    who = "ddrm"
    Y, K = check_problem(process, A, y, x1, steps, who, svd=True)
    s, r, sig_y = A.singulars.to(x1.dtype), A.rank, A.sigma_y
    ybar = _spectral_y(A, Y) / s
    ts = time_grid(process, steps, "uniform").to(x1.device)
    D = CountingDenoiser(denoiser, who=who)
    x = x1
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        a, sg = float(process.alpha(t)), float(process.sigma(t))
        a_n, sg_n = float(process.alpha(t_next)), float(process.sigma(t_next))
        if i == steps - 1:  # the last step lands on clean data (c = 0), as DDRM's x0 output
            a_n, sg_n = 1.0, 0.0
        x0 = D(x, t)
        eps = (x - a * x0) / sg
        c = sg_n / a_n
        v0, ve = A.Vt(x0), A.Vt(eps)
        z = torch.randn(v0.shape, generator=generator, dtype=v0.dtype, device=v0.device)
        nxt = v0 + (1 - eta**2) ** 0.5 * c * ve + eta * c * z  # the unobserved rule
        obs, zo = v0[:, :r], z[:, :r]
        if sig_y > 0:
            after = obs + (1 - eta**2) ** 0.5 * c * (ybar - obs) * s / sig_y + eta * c * zo
        else:
            after = obs  # never used: s c >= 0 = sigma_y always
        var_b = (c**2 - (eta_b * sig_y / s) ** 2).clamp(min=0.0)
        before = (1 - eta_b) * obs + eta_b * ybar + var_b.sqrt() * zo
        nxt[:, :r] = torch.where(s * c >= sig_y, before, after)
        x = a_n * A.V(nxt)
    return Posterior(x, y.shape[0], D.evals)


@register_posterior("pigdm")
def pigdm(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    A: LinearOperator,
    y: torch.Tensor,
    x1: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    eta: float = 1.0,
    scale: float = 1.0,
    weight: str = "tweedie",
    project: bool = False,
) -> Posterior:
    """PiGDM (Song, Vahdat, Mardani & Kautz 2023, "Pseudoinverse-Guided Diffusion Models
    for Inverse Problems", Eq. 5-8): the likelihood p(y | x_t) ~ N(A x0_hat, r_t^2 A A^T +
    sigma_y^2 I), with r_t^2 = c_t^2 / (1 + c_t^2) (c_t = sigma_t / alpha_t, the prior's
    unit-variance approximation of Cov[x0 | x_t]). Its score,

        g = (d x0_hat / d x_t)^T A^T (r_t^2 A A^T + sigma_y^2 I)^{-1} (y - A x0_hat),

    computed with A's SVD and one vector-Jacobian product, guides the data prediction:
    x0_guided = x0_hat + scale * (sigma_t^2 / alpha_t) g, followed by a DDIM(eta) step
    (eta = 1: the DDPM posterior); the last step returns the guided clean estimate.
    Costs ``steps`` evaluations per sample.

    ``weight`` sets the guidance's time weighting:

    - ``"tweedie"`` (default): the shift sigma_t^2 / alpha_t above, what Eq. 7 gives
      through Tweedie's formula (the oracle tables use it);
    - ``"paper"``: the paper's Algorithm 1 and its official code (NVlabs/RED-diff,
      ``algos/pgdm.py``), which shift x0_hat by sqrt(alpha_bar_t) (d x0_hat / d x_t)^T
      A^+ (y - A x0_hat) (their x_s adds it times the step's x0 coefficient): for
      sigma_y = 0 exactly the shift above times alpha_t^2, which is how it is applied
      here (keeping the sigma_y term). With a learned network the Jacobian at high noise is far
      from its ideal alpha_t-small value, and the 1 / alpha_t of the Tweedie weight
      (119 at the first step of the cosine schedule) amplifies that error: on the
      image prior the first guided x0 has norm ~6000 (sr4, eta = 0) and the sample
      never recovers. The alpha_t^2 factor switches guidance on only as the noise falls.

    ``project=True`` projects each guided x0 onto the measurement's affine set, x0 +
    A^+ (y - A x0), with A^+ cut at the noise level (``A.noise_rcond``), as DDNM's
    range-null-space step (Wang, Yu & Zhang 2023). For inpainting (A A^T = I) it pastes
    y into the observed entries, the official PiGDM code's inpainting branch; noise in
    y is kept, not denoised.
    """
    who = "pigdm"
    if weight not in ("tweedie", "paper"):
        raise ValueError(f"pigdm: weight must be 'tweedie' or 'paper', got {weight!r}")
    Y, K = check_problem(process, A, y, x1, steps, who, svd=True)
    s, r = A.singulars.to(x1.dtype), A.rank
    ts = time_grid(process, steps, "uniform").to(x1.device)
    D = CountingDenoiser(denoiser, who=who)
    x = x1
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        a, sg = process.alpha(t), process.sigma(t)
        c2 = float(sg**2 / a**2)
        r2 = c2 / (1 + c2)
        xg = x.detach().requires_grad_(True)
        x0 = D(xg, t, grad=True)
        # (r^2 A A^T + sigma_y^2)^{-1} in U's basis: 1 / (r^2 s^2 + sigma_y^2)
        res = _spectral_y(A, Y) - s * A.Vt(x0)[:, :r]
        v = A.V(s * res / (r2 * s**2 + A.sigma_y**2))  # A^T (r^2 AA^T + sigma_y^2)^-1 res
        (g,) = torch.autograd.grad(x0, xg, v.detach())
        # Tweedie: sigma^2 / alpha; the paper's: that times alpha^2
        w = float(sg**2 * a) if weight == "paper" else float(sg**2 / a)
        x0 = x0.detach() + scale * w * g
        if project:
            x0 = x0 + A.pinv(Y - A(x0), rcond=A.noise_rcond)
        last = i == steps - 1  # the last step returns the guided clean estimate
        x = x0 if last else _ddim_step(process, x, x0, t, t_next, eta, generator)
    return Posterior(x.detach(), y.shape[0], D.evals)
