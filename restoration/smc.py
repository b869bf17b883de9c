"""Sequential Monte Carlo posterior samplers for linear inverse problems: MCGdiff and AFDPS.

Both follow the interface of :mod:`diffsci.restoration.posterior`,

    method(denoiser, process, A, y, x1, steps, generator=None, **options) -> Posterior,

with K consecutive rows of ``x1`` the particles of one measurement, and return the weighted
ensemble (log-weights normalised within each group; ``Posterior.resample`` draws from it).
Evaluations are counted with ``CountingDenoiser`` (one per particle per denoiser call).
Both work in A's SVD basis (``A.Vt`` / ``A.V``, singular values s_i, rank r) and need an
operator with an SVD.

- MCGdiff (Cardoso, Janati el Idrissi, Le Corff & Moulines, ICLR 2024, "Monte Carlo guided
  diffusion for Bayesian linear inverse problems", Alg. 1 and Sec. 3.3): a fully adapted
  particle filter over the DDIM/DDPM backward chain. Observed coordinate i is "seen" at
  the time tau_i where the noise-to-signal c = sigma / alpha equals sigma_y / s_i.
- AFDPS ("Solving Inverse Problems via Diffusion-Based Priors: An Approximation-Free
  Ensemble Sampling Approach", 2025): exact Gaussian conditioning at t_max, then weighted
  particle dynamics whose Feynman-Kac weights make p_t(x) exp(-mu_y(x)) the target at
  every time, with ESS-triggered multinomial resampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from diffsci.core.processes import Process
from diffsci.core.samplers import ddpm_posterior_std
from diffsci.core.schedules import time_grid
from diffsci.core.svdd import CountingDenoiser, select_in_groups

from .operators import LinearOperator
from .posterior import Posterior, check_problem, register_posterior

__all__ = ["mcgdiff", "afdps"]

_F64 = torch.float64
_LOG2PI = math.log(2 * math.pi)


def _log_normal(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis of log N(x; mean, var) (elementwise variances)."""
    return -0.5 * ((x - mean).square() / var + var.log() + _LOG2PI).sum(-1)


def _check_unit(name: str, value: float, who: str, low_open: bool = True) -> float:
    """A float in (0, 1] (``low_open``) or [0, 1]; ValueError otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: {name} must be a number, got {value!r}") from None
    ok = (0 < v <= 1) if low_open else (0 <= v <= 1)
    if not ok or isinstance(value, bool):
        rng = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{who}: {name} must lie in {rng}, got {value!r}")
    return v


def _check_positive(name: str, value: float, who: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: {name} must be a positive number, got {value!r}") from None
    if isinstance(value, bool) or not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{who}: {name} must be a positive finite number, got {value!r}")
    return v


def _normalise(logw: torch.Tensor, groups: int) -> torch.Tensor:
    """Log-weights (G*K,) normalised within each group of K consecutive rows."""
    lw = logw.view(groups, -1)
    return (lw - torch.logsumexp(lw, 1, keepdim=True)).reshape(-1)


# ------------------------------------------------------------------------------------------
# MCGdiff
# ------------------------------------------------------------------------------------------
def _mcgdiff_grid(process: Process, steps: int, tau: torch.Tensor, adapt: bool) -> torch.Tensor:
    """``steps + 1`` decreasing times, uniform in t, with the distinct tau_i strictly
    inside (t_min, t_max) inserted (``adapt``; the official code also builds its grid
    around the taus, ``get_optimal_timesteps_from_singular_values``). Falls back to the
    plain uniform grid when there are not enough steps to hold every tau."""
    if adapt:
        lo, hi = process.t_min, process.t_max
        inner = torch.unique(tau[(tau > lo + 1e-9) & (tau < hi - 1e-9)])
        n = inner.numel()
        for base in range(steps - n, steps + 1):
            if base < 1:
                continue
            ts = torch.cat([time_grid(process, base, "uniform"), inner])
            ts = torch.unique(ts).flip(0)  # sorted descending
            keep = torch.cat([torch.ones(1, dtype=torch.bool), (ts[:-1] - ts[1:]) > 1e-12])
            ts = ts[keep]
            if len(ts) == steps + 1:
                return ts
    return time_grid(process, steps, "uniform")


@register_posterior("mcgdiff")
def mcgdiff(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    A: LinearOperator,
    y: torch.Tensor,
    x1: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    eta: float = 1.0,
    kappa: float = 1e-4,
    adapt_grid: bool = True,
    ess_threshold: float = 0.5,
    weights: str = "smoothed",
) -> Posterior:
    """MCGdiff (Cardoso et al. 2024, ICLR, "Monte Carlo guided diffusion for Bayesian linear
    inverse problems", Alg. 1; noisy observations Sec. 3.3), checked against the official
    code (github.com/gabrielvc/mcg_diff, ``mcg_diff/particle_filter.py``, ``utils.py``).

    In A's spectral basis x_bar = V^T x (x_t = alpha_t x0 + sigma_t eps), with
    y_bar_i = (U^T y)_i / s_i = x0_i + c_i n and c_i = sigma_y / s_i, the coordinate i is
    observed at tau_i where c(tau_i) = sigma_t / alpha_t = c_i (tau_i = t_min when
    sigma_y = 0, t_max when c_i exceeds c(t_max)): alpha_tau y_bar_i is then a draw of
    x_tau,i given x0, so p(x0 | y) = p(x0 | x_tau_i,i = alpha_tau_i y_bar_i for all i). The
    filter runs the DDIM(eta) backward chain (mean m_s = alpha_s x0_hat + sqrt(sigma_s^2 -
    c^2) eps_hat, std c = eta * DDPM posterior std) with the look-ahead potentials, for
    t >= tau_i,

        g_t,i(x_i) = N(x_i; alpha_t y_bar_i, v_t,i),  v_t,i = alpha_t^2 (|c_t^2 - c_i^2| +
                     kappa / alpha_tau_i^2)

    (the forward kernel from tau_i to t; at t = tau_i a near-delta of variance kappa, the
    official ``gaussian_var``). One step t -> s, over the coordinates with s >= tau_i:
    the auxiliary weight Z(x_t) = prod_i N(m_s,i; alpha_s y_bar_i, c^2 + v_s,i) (the
    integral of the transition against g_s), multinomial resampling within each group
    (``select_in_groups``), then the locally optimal proposal: K_i = c^2 / (c^2 + v_s,i),
    x_s,i = K_i alpha_s y_bar_i + (1 - K_i) m_s,i + sqrt(K_i v_s,i) z; every other
    coordinate (unobserved, or past its tau_i) follows the prior transition m_s + c z.
    These update rules, the tau_i rule, eta = 1 and kappa = 1e-4 are the official code's.

    Weights (``weights``):

    - ``"path"``: the official incremental weight Z(x_t) / g_t(x_t), except that once a
      coordinate passes its tau_i the potential g_tau,i stays in the path weight (the
      constraint x_tau,i = alpha y_bar_i remains imposed) where the official code divides
      it out and, for sigma_y > 0, multiplies the final weights by p(y | x_0): both
      formulations target the same posterior as kappa -> 0, theirs with infinite-variance
      final weights (1 / g_tau of a draw pinned to g_tau's width);
    - ``"smoothed"`` (default): Z(x_t) / Z_F(x_s), with the backward kernel of the SMC
      sampler taken as the forward noising kernel F(x_t | x_s) twisted by g_t, so
      Z_F(x_s) = prod_i N(alpha_t y_bar_i; (alpha_t / alpha_s) x_s,i, var F + v_t,i). Exact
      when the backward chain reverses the forward process (the same discretisation error
      the chain already carries), and it avoids the chi-square noise of 1 / g_t(x_t) at a
      freshly pinned draw.

    A group is resampled when its ESS falls below ``ess_threshold`` * K (the official code
    resamples at every step, ``ess_threshold=1``; with 100+ steps that drifts the mode
    proportions and collapses the genealogy). On the d = 8 oracle (9 problems, K = 500,
    100 steps, SW to the exact posterior, mean of 3 runs) the defaults give e.g. 1.87,
    1.92, 1.85 on the three multimodal posteriors where ``weights="path",
    ess_threshold=1`` gives 5.63, 4.85, 4.81, and are as good elsewhere; the last
    step keeps its weights, returned normalised per group. The initial particles ``x1``
    (a draw of N(0, sigma(t_max)^2 I)) get the weight g_t_max (c_i > c(t_max): tau_i =
    t_max and g the exact likelihood N(y_bar_i; x_T / alpha_T, c_i^2 - c_T^2)).

    ``adapt_grid`` inserts the tau_i into the uniform time grid so each coordinate is
    conditioned exactly at its tau (the official code builds its grid around them too,
    ``get_optimal_timesteps_from_singular_values``); otherwise, or when ``steps`` cannot
    hold them all, tau_i is the grid time just below, where N(y_bar_i; x_tau / alpha_tau,
    c_i^2 - c_tau^2) is the exact likelihood. Needs an operator with an SVD and eta > 0;
    sigma_y = 0 is handled (tau_i = t_min). Costs ``steps`` evaluations per particle.
    """
    who = "mcgdiff"
    Y, K = check_problem(process, A, y, x1, steps, who, svd=True)
    eta = _check_unit("eta", eta, who)
    kappa = _check_positive("kappa", kappa, who)
    ess_threshold = _check_unit("ess_threshold", ess_threshold, who, low_open=False)
    if weights not in ("path", "smoothed"):
        raise ValueError(f"{who}: weights must be 'path' or 'smoothed', got {weights!r}")
    G, B, dt = y.shape[0], x1.shape[0], x1.dtype
    s, r, sig_y = A.singulars.to(_F64), A.rank, A.sigma_y
    ybar = (A.Ut(Y)[:, :r].to(_F64)) / s  # (B, r)

    # tau_i: c(tau_i) = sigma_y / s_i, i.e. log-SNR 2 log(s_i / sigma_y), clamped to the range
    t_lo, t_hi = process.t_min, process.t_max
    if sig_y > 0:
        c_obs = sig_y / s
        tau = process.t_of_log_snr(2 * torch.log(s / sig_y)).clamp(t_lo, t_hi)
    else:
        c_obs = torch.zeros_like(s)
        tau = torch.full_like(s, t_lo)
    ts = _mcgdiff_grid(process, steps, tau, adapt_grid).to(_F64)
    steps = len(ts) - 1
    # snap each tau to the grid time at or just below it
    below = ts[None, :] <= tau[:, None] + 1e-12
    tau = torch.where(below, ts[None, :], torch.full_like(below, -1.0, dtype=_F64)).amax(1)
    tau = torch.where(tau < 0, ts[-1], tau)
    kap = kappa / process.alpha(tau).to(_F64) ** 2  # kappa in x0 units at tau

    def pot(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(active mask (r,), mean scale alpha_t, variance v_t (r,)) of g_t."""
        a = process.alpha(t).to(_F64)
        c2 = (process.sigma(t).to(_F64) / a) ** 2
        return tau <= t + 1e-12, a, a**2 * ((c2 - c_obs**2).abs() + kap)

    D = CountingDenoiser(denoiser, who=who)
    xb = A.Vt(x1).to(_F64)  # particles in V's basis (VP scale)
    act, a_t, v_t = pot(ts[0])
    logw = _log_normal(xb[:, :r][:, act], a_t * ybar[:, act], v_t[act].expand(B, -1))
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        a, sg = process.alpha(t).to(_F64), process.sigma(t).to(_F64)
        a_n, sg_n = process.alpha(t_next).to(_F64), process.sigma(t_next).to(_F64)
        x = A.V(xb.to(dt))
        x0 = A.Vt(D(x, t)).to(_F64)
        eps = (xb - a * x0) / sg
        c = eta * ddpm_posterior_std(process, t, t_next).to(_F64)
        m = a_n * x0 + (sg_n**2 - c**2).clamp(min=0).sqrt() * eps  # DDIM mean, V basis
        act_n, a_tn, v_n = pot(t_next)
        # weights: int p(x_s | x_t) g_s(x_s) dx_s / g_t(x_t) over the coordinates still active
        if bool(act_n.any()):
            yb = ybar[:, act_n]
            logw = logw + _log_normal(m[:, :r][:, act_n], a_tn * yb, (c**2 + v_n[act_n]))
            if weights == "path":
                logw = logw - _log_normal(xb[:, :r][:, act_n], a_t * yb, v_t[act_n])
        last = i == steps - 1
        if not last and bool((logw != 0).any()):
            lw = _normalise(logw, G).view(G, K)
            need = 1 / torch.exp(2 * lw).sum(1) < ess_threshold * K - 1e-9
            if bool(need.any()):
                idx = select_in_groups(logw, G, K, K, generator).view(G, K)
                keep = torch.arange(B, device=idx.device).view(G, K)
                idx = torch.where(need[:, None], idx, keep).reshape(-1)
                m = m[idx]
                logw = torch.where(need[:, None], torch.zeros_like(lw), logw.view(G, K))
                logw = logw.reshape(-1)
        z = torch.randn(m.shape, generator=generator, dtype=_F64, device=m.device)
        new = m + c * z
        if bool(act_n.any()):
            vk = v_n[act_n]
            gain = c**2 / (c**2 + vk)
            obs = m[:, :r][:, act_n]
            cols = torch.arange(r, device=m.device)[act_n]
            new[:, cols] = (
                gain * a_tn * ybar[:, act_n] + (1 - gain) * obs + (gain * vk).sqrt() * z[:, cols]
            )
            if weights == "smoothed":  # the backward kernel: forward noising twisted by g_t
                r_ts = a / a_n
                var_f = sg**2 - r_ts**2 * sg_n**2 + v_t[act_n]
                logw = logw - _log_normal(a * ybar[:, act_n], r_ts * new[:, cols], var_f)
        xb, a_t, v_t = new, a_tn, v_n
    out = A.V((xb / process.alpha(ts[-1]).to(_F64)).to(dt))
    return Posterior(out, G, D.evals, _normalise(logw, G).to(dt))


# ------------------------------------------------------------------------------------------
# AFDPS
# ------------------------------------------------------------------------------------------
def _condition(
    m: torch.Tensor, q: torch.Tensor, yh: torch.Tensor, s: torch.Tensor, sig2: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Gaussian N(z; m, q) on the observed coordinates times exp(-(yh - s z)^2 /
    (2 sig2)): returns (posterior mean, posterior variance, log of the normaliser
    sum_i log N(yh_i; s_i m_i, sig2 + s_i^2 q_i))."""
    prec = 1 / q + s**2 / sig2
    mean = (m / q + s * yh / sig2) / prec
    return mean, 1 / prec, _log_normal(yh, s * m, sig2 + s**2 * q)


@register_posterior("afdps")
def afdps(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    A: LinearOperator,
    y: torch.Tensor,
    x1: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    variant: str = "sde",
    ess_threshold: float = 0.5,
    discretization: str = "exact",
    corrector_steps: int = 1,
    langevin_step: float = 0.5,
) -> Posterior:
    """AFDPS (Chen, Ren, Min, Ying & Izzo, "Solving Inverse Problems via Diffusion-Based
    Priors: An Approximation-Free Ensemble Sampling Approach", 2025, Alg. 1; the update
    rules checked against the authors' sampler as vendored in github.com/erichou1/AFDPS,
    ``algo/afdps_core/ensemble_denoiser_edm.py``, its ``likelihood_at='noisy'`` reference
    mode: drift d - 2 s^2 sigma' sigma grad mu, noise s sqrt(2 sigma' sigma), log-weight
    rate s^2 sigma' sigma (|grad mu|^2 - lap mu) + d . grad mu, start from the
    ``proximal_generator`` draw of N(0, sigma_max^2 I) given y, ESS resampling with
    threshold c): weighted particles whose Feynman-Kac weights
    make pi_t(x) ~ p_t(x) exp(-mu_y(x)) the target at every time, with
    mu_y(x) = |y - A x|^2 / (2 sigma_y^2) evaluated at the noisy state in the paper's
    variance-exploding units x = x_t / alpha_t (x_t = alpha x0 + sigma eps, so x = x0 + c eps,
    c = sigma / alpha). pi at t -> 0 is the exact posterior; no approximation of
    p(y | x_t) enters.

    Stage I: the prior at t_max is taken as N(0, c_T^2 I) (the paper's Gaussian
    approximation), so x_T | y is Gaussian and sampled exactly (in A's SVD basis:
    precision 1/c_T^2 + s_i^2/sigma_y^2), from the noise in ``x1``.

    Stage II, in reverse time tau (dtau = t - t_next > 0), with the prior's reverse drift
    H = ((g^2 + v^2) / 2) grad log p_t (f = 0 in these units, g^2 dtau = c_t^2 - c_next^2),
    the particle dynamics and log-weight rate

        dx = (H - v^2 grad mu_y) dtau + v dW,
        d log w = [(v^2 / 2)(|grad mu_y|^2 - lap mu_y) - H . grad mu_y] dtau,

    - ``variant="sde"``: v = g (H = g^2 grad log p_t);
    - ``variant="ode"``: v = 0 (probability flow, H = g^2/2 grad log p_t, log w rate
      -H . grad mu_y), followed by ``corrector_steps`` Langevin steps on pi_{t_next}
      (step ``langevin_step`` * c_next^2, no weight change), each costing one evaluation.
      The default step 0.5 was the best of 0.1 / 0.5 / 1.0 on the oracle (summed SW over
      9 problems 19.0 / 14.3 / 11.3, but 1.0 lost on 3 of them); the corrector is
      unadjusted, so its bias is not reweighted away.

    Here lap mu_y = tr(A^T A) / sigma_y^2 is a constant (mu_y is evaluated at the noisy
    state, as the paper does for linear operators), so no Jacobian trace of the denoiser is
    needed (the denoiser is called once per particle per step, no autograd).

    ``discretization="euler"`` applies the rules above by explicit Euler-Maruyama, as the
    paper does; it is stiff when s_i^2 g^2 dtau / sigma_y^2 > 2 (small sigma_y or few steps:
    on the d = 8 oracle at 100 uniform steps it diverges), and its weight increment
    (v^2/2) |grad mu_y|^2 dtau has a variance that only vanishes once g^2 dtau << sigma_y^2 /
    s_i^2. ``"exact"`` (default) keeps the SDE's Euler-Maruyama prior kernel
    K(x'|x) = N(x + H dtau, v^2 dtau) but treats the quadratic mu_y exactly: the particle is
    drawn from K(x'|x) exp(-mu_y(x')) (a Gaussian in the SVD basis; the locally optimal
    proposal), and the SMC-sampler weight with the backward kernel F(x|x') exp(-mu_y(x)),
    F the forward noising kernel N(x; x', v^2 dtau), is

        log w += log int K(x''|x) e^{-mu_y(x'')} dx'' - log int F(x''|x') e^{-mu_y(x'')} dx''
               = sum_i log N(y_i; s_i (x + H dtau)_i, sigma_y^2 + s_i^2 v^2 dtau)
                 - log N(y_i; s_i x'_i, sigma_y^2 + s_i^2 v^2 dtau)

    (y_i = (U^T y)_i), exact up to the prior kernel's discretisation (p_t K = p_s F) and
    bounded at any step size. (The plain weight int K e^{-mu_y} / e^{-mu_y(x)}, whose
    dtau -> 0 limit is the paper's rate, carries the chi-square noise exp(mu_y(x)) of a
    freshly conditioned x: measured on a Gaussian prior with sigma_y = 0.05 it collapsed
    the ensemble, while this weight recovers the exact posterior mean and variance.) The
    ODE step is the DDIM map in these units, x0_hat + (c_next / c)(x - x0_hat), with the
    exact weight mu_y(x) - mu_y(x') of a deterministic flow, and the Langevin corrector
    draws from N(x + eps grad log p, 2 eps) exp(-mu_y) (the same exact Gaussian).

    Groups are resampled (multinomial, ``select_in_groups``) when their ESS falls below
    ``ess_threshold`` * K, never after the last step; the returned weights are the
    accumulated ones. Needs sigma_y > 0. Costs ``steps`` evaluations per particle for the
    SDE, ``steps * (1 + corrector_steps)`` for the ODE variant.
    """
    who = "afdps"
    Y, K = check_problem(process, A, y, x1, steps, who, svd=True)
    if variant not in ("sde", "ode"):
        raise ValueError(f"{who}: variant must be 'sde' or 'ode', got {variant!r}")
    if discretization not in ("exact", "euler"):
        raise ValueError(
            f"{who}: discretization must be 'exact' or 'euler', got {discretization!r}"
        )
    ess_threshold = _check_unit("ess_threshold", ess_threshold, who, low_open=False)
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int):
        raise ValueError(f"{who}: corrector_steps must be an int >= 0, got {corrector_steps!r}")
    if corrector_steps < 0:
        raise ValueError(f"{who}: corrector_steps must be an int >= 0, got {corrector_steps!r}")
    langevin_step = _check_positive("langevin_step", langevin_step, who)
    if A.sigma_y <= 0:
        raise ValueError(f"{who} needs sigma_y > 0 (mu_y = |y - A x|^2 / (2 sigma_y^2))")
    G, B, dt = y.shape[0], x1.shape[0], x1.dtype
    s, r, sig2 = A.singulars.to(_F64), A.rank, A.sigma_y**2
    yh = A.Ut(Y)[:, :r].to(_F64)  # (B, r)
    exact = discretization == "exact"
    ts = time_grid(process, steps, "uniform").to(_F64)

    def c2_of(t: torch.Tensor) -> torch.Tensor:
        return (process.sigma(t).to(_F64) / process.alpha(t).to(_F64)) ** 2

    def mu(z: torch.Tensor) -> torch.Tensor:  # mu_y up to a constant, z in V's basis
        return (yh - s * z[:, :r]).square().sum(1) / (2 * sig2)

    def grad_mu(z: torch.Tensor) -> torch.Tensor:
        g = torch.zeros_like(z)
        g[:, :r] = s * (s * z[:, :r] - yh) / sig2
        return g

    lap = float((s**2).sum()) / sig2
    D = CountingDenoiser(denoiser, who=who)

    def score(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """grad log p_t in the VE units, V's basis: (D(alpha x) - x) / c^2."""
        a = process.alpha(t).to(_F64)
        x0 = A.Vt(D(A.V((a * z).to(dt)), t)).to(_F64)
        return (x0 - z) / c2_of(t)

    def noise(shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=_F64, device=x1.device)

    def gauss_step(m: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw from N(m, q I) exp(-mu_y); return (draw, log normaliser per particle)."""
        z = noise(m.shape)
        new = m + q.sqrt() * z
        mean, var, logz = _condition(m[:, :r], q.expand(r), yh, s, sig2)
        new[:, :r] = mean + var.sqrt() * z[:, :r]
        return new, logz

    # Stage I: N(0, c_T^2 I) conditioned on y, driven by the noise of x1
    cT2 = c2_of(ts[0])
    xi = A.Vt(x1).to(_F64) / process.sigma(ts[0]).to(_F64)
    mean, var, _ = _condition(torch.zeros_like(yh), cT2.expand(r), yh, s, sig2)
    z = cT2.sqrt() * xi
    z[:, :r] = mean + var.sqrt() * xi[:, :r]
    logw = torch.zeros(B, dtype=_F64, device=x1.device)

    sc = score(z, ts[0])
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        c2, c2n = c2_of(t), c2_of(t_next)
        dc2 = c2 - c2n  # int g^2 dtau over the step
        if variant == "sde":
            H = dc2 * sc  # H dtau
            if exact:
                z_new, logz = gauss_step(z + H, dc2)
                back = _log_normal(yh, s * z_new[:, :r], sig2 + s**2 * dc2)
                logw = logw + logz - back
            else:
                gm = grad_mu(z)
                z_new = z + H - dc2 * gm + dc2.sqrt() * noise(z.shape)
                logw = logw + 0.5 * dc2 * (gm.square().sum(1) - lap) - (H * gm).sum(1)
        else:
            if exact:  # DDIM map in VE units: x0 + (c'/c)(x - x0), x0 = x + c^2 score
                x0 = z + c2 * sc
                z_new = x0 + (c2n / c2).sqrt() * (z - x0)
                logw = logw + mu(z) - mu(z_new)
            else:
                H = 0.5 * dc2 * sc
                z_new = z + H
                logw = logw - (H * grad_mu(z)).sum(1)
        z = z_new
        last = i == steps - 1
        if not last or (variant == "ode" and corrector_steps > 0):
            sc = score(z, t_next)
        if variant == "ode":
            eps_l = langevin_step * c2n
            for j in range(corrector_steps):
                if exact:
                    z, _ = gauss_step(z + eps_l * sc, 2 * eps_l)
                else:
                    z = z + eps_l * (sc - grad_mu(z)) + (2 * eps_l).sqrt() * noise(z.shape)
                if not (last and j == corrector_steps - 1):
                    sc = score(z, t_next)
        # ESS-triggered resampling per group (never after the last step)
        if not last:
            lw = _normalise(logw, G).view(G, K)
            ess = 1 / torch.exp(2 * lw).sum(1)
            need = ess < ess_threshold * K
            if bool(need.any()):
                idx = select_in_groups(logw, G, K, K, generator).view(G, K)
                keep = torch.arange(B, device=idx.device).view(G, K)
                idx = torch.where(need[:, None], idx, keep).reshape(-1)
                z, sc = z[idx], sc[idx]
                logw = torch.where(need[:, None], torch.zeros_like(lw), logw.view(G, K))
                logw = logw.reshape(-1)
    out = A.V(z.to(dt))  # x = x_t / alpha_t at t_min
    return Posterior(out, G, D.evals, _normalise(logw, G).to(dt))
