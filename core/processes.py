"""Forward processes x_t = alpha(t) x0 + sigma(t) * noise, with t in [0, 1] (0 = data).

Every process exposes the same small interface (score_sde's ``SDE`` idea, with the
capability on the process rather than ``isinstance`` chains in samplers):

- ``alpha(t)``, ``sigma(t)``, ``log_snr(t) = log(alpha^2 / sigma^2)`` and its inverse
  ``t_of_log_snr(lam)``, all in float64;
- ``d_alpha(t)``, ``d_sigma(t)`` (exact, by autograd unless given in closed form);
- SDE coefficients ``drift_coef(t) = f(t) = d log alpha / dt`` and
  ``diffusion_sq(t) = g(t)^2 = d sigma^2/dt - 2 f(t) sigma^2`` (Kingma et al. 2021,
  VDM, eq. 27 in the continuous limit);
- ``noise(shape)``, ``perturb(x0, t, noise)``, ``prior(shape)``.

Samplers integrate from ``t_max`` down to ``t_min``: the ends where the log-SNR is
still finite (as DPM-Solver integrates from T to eps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .config import Configurable
from .utils import as_time, coef, derivative

__all__ = ["Process", "VP", "VE", "EDM", "SubVP", "Interpolant", "PFGMPP"]


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation with linear extrapolation (``xp`` increasing).

    Differentiable in ``x``, as DPM-Solver's ``interpolate_fn``.
    """
    idx = torch.searchsorted(xp, x.detach().contiguous()).clamp(1, len(xp) - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    f0, f1 = fp[idx - 1], fp[idx]
    return f0 + (x - x0) * (f1 - f0) / (x1 - x0)


class Process(Configurable):
    """A forward noising process; subclasses define ``log_alpha`` and ``log_sigma``."""

    gaussian: bool = True  # is x_t | x0 Gaussian? (SDE samplers and the oracle need it)
    t_min: float = 0.0
    t_max: float = 1.0

    # --- the two functions that define a process -------------------------------------
    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_sigma(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- derived quantities ----------------------------------------------------------
    def alpha(self, t: float | torch.Tensor) -> torch.Tensor:
        return self.log_alpha(as_time(t)).exp()

    def sigma(self, t: float | torch.Tensor) -> torch.Tensor:
        return self.log_sigma(as_time(t)).exp()

    def log_snr(self, t: float | torch.Tensor) -> torch.Tensor:
        """lambda(t) = log(alpha^2 / sigma^2), decreasing in t."""
        t = as_time(t)
        return 2.0 * (self.log_alpha(t) - self.log_sigma(t))

    def t_of_log_snr(self, lam: float | torch.Tensor) -> torch.Tensor:
        """Inverse of ``log_snr``; generic vectorised bisection on [0, 1] in float64.

        Subclasses override it with a closed form where one exists.
        """
        lam = as_time(lam)
        lo = torch.zeros_like(lam)
        hi = torch.ones_like(lam)
        for _ in range(64):  # 2^-64 < float64 resolution on [0, 1]
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > lam  # log-SNR decreases: the root is to the right
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    @property
    def knots(self) -> torch.Tensor | None:
        """Times where the schedule is only piecewise smooth (the grid of a discrete-time
        checkpoint), or None; quadratures over time split their panels there."""
        return None

    def d_alpha(self, t: float | torch.Tensor) -> torch.Tensor:
        return derivative(self.alpha, t)

    def d_sigma(self, t: float | torch.Tensor) -> torch.Tensor:
        return derivative(self.sigma, t)

    def drift_coef(self, t: float | torch.Tensor) -> torch.Tensor:
        """f(t) = d log alpha / dt: the forward SDE is dx = f x dt + g dW."""
        return derivative(self.log_alpha, t)

    def diffusion_sq(self, t: float | torch.Tensor) -> torch.Tensor:
        """g(t)^2 = d sigma^2 / dt - 2 f(t) sigma^2 = -sigma^2 d lambda / dt."""
        t = as_time(t)
        return -(self.sigma(t) ** 2) * derivative(self.log_snr, t)

    # --- sampling --------------------------------------------------------------------
    def noise(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Standardised noise of the perturbation kernel (Gaussian here).

        With a ``generator``, the noise is drawn on the generator's device and then moved
        to ``device``: a CPU generator gives the same numbers for a model on any device
        (torch refuses a CPU generator for a CUDA draw)."""
        if generator is None:
            return torch.randn(tuple(shape), dtype=dtype, device=device)
        z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=generator.device)
        return z if device is None else z.to(device)

    def perturb(
        self, x0: torch.Tensor, t: float | torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """x_t = alpha(t) x0 + sigma(t) noise; ``t`` is a scalar or per-sample (B,)."""
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        t = as_time(t).to(x0.device)
        return coef(self.alpha(t), x0) * x0 + coef(self.sigma(t), x0) * noise

    def prior(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """A draw from the prior at ``t_max``: sigma(t_max) * noise (the x0 term is dropped)."""
        z = self.noise(shape, generator=generator, dtype=dtype, device=device)
        return float(self.sigma(self.t_max)) * z

    def __repr__(self) -> str:
        kw = ", ".join(
            f"{k}={v!r}" for k, v in self._config_kwargs.items() if not isinstance(v, list)
        )
        return f"{type(self).__name__}({kw})"


class VP(Process):
    """Variance-preserving process, alpha^2 + sigma^2 = 1 (Song et al. 2021; DDPM).

    ``schedule="linear"``: beta(t) = beta_min + t (beta_max - beta_min), so
    log alpha(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2 (score_sde eq. 33).
    ``schedule="cosine"``: alpha^2(t) = f(t)/f(0), f(t) = cos^2(pi/2 (t + s)/(1 + s))
    (Nichol & Dhariwal 2021, eq. 17); it ends at t_max = 0.9946 where alpha is still
    positive, as in DPM-Solver.
    Discrete 1000-step checkpoints: :meth:`VP.from_alphas_cumprod`.
    """

    def __init__(
        self,
        schedule: str = "linear",
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        s: float = 0.008,
        alphas_cumprod: Sequence[float] | None = None,
        t_min: float | None = None,
        t_max: float | None = None,
    ) -> None:
        if schedule not in ("linear", "cosine", "discrete"):
            raise ValueError(f"unknown VP schedule {schedule!r}: use linear, cosine or discrete")
        if schedule == "linear" and not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        self.schedule = schedule
        self.beta_min, self.beta_max, self.s = float(beta_min), float(beta_max), float(s)
        default_t = (1e-3, 1.0)
        if schedule == "cosine":
            default_t = (1e-3, 0.9946)
        if schedule == "discrete":
            if alphas_cumprod is None:
                raise ValueError("schedule='discrete' needs alphas_cumprod")
            ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
            if ac.ndim != 1 or len(ac) < 2 or not bool(((ac > 0) & (ac < 1)).all()):
                raise ValueError("alphas_cumprod must be a 1-D sequence of values in (0, 1)")
            if not bool((ac[1:] < ac[:-1]).all()):
                raise ValueError("alphas_cumprod must be strictly decreasing")
            n = len(ac)
            # DPM-Solver's NoiseScheduleVP('discrete'): step i sits at t = (i + 1) / N.
            self._t_grid = torch.arange(1, n + 1, dtype=torch.float64) / n
            self._log_alpha_grid = 0.5 * ac.log()
            default_t = (1.0 / n, 1.0)
            alphas_cumprod = ac.tolist()
        self.t_min = default_t[0] if t_min is None else float(t_min)
        self.t_max = default_t[1] if t_max is None else float(t_max)
        self._set_config(
            schedule=schedule,
            beta_min=self.beta_min,
            beta_max=self.beta_max,
            s=self.s,
            alphas_cumprod=alphas_cumprod,
            t_min=self.t_min,
            t_max=self.t_max,
        )

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Sequence[float] | torch.Tensor) -> VP:
        """VP process of a discrete-time checkpoint (e.g. 1000-step DDPM betas).

        log alpha is interpolated linearly in t between the grid points t_i = (i+1)/N.
        """
        if isinstance(alphas_cumprod, torch.Tensor):
            alphas_cumprod = alphas_cumprod.detach().double().cpu().tolist()
        return cls(schedule="discrete", alphas_cumprod=list(alphas_cumprod))

    @property
    def knots(self) -> torch.Tensor | None:
        return self._t_grid if self.schedule == "discrete" else None

    def _cos_arg(self, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * math.pi * (t + self.s) / (1.0 + self.s)

    @property
    def _cos0(self) -> float:
        """cos(pi/2 s/(1+s)) = sqrt(f(0)): the cosine schedule's normaliser."""
        return math.cos(0.5 * math.pi * self.s / (1.0 + self.s))

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        if self.schedule == "linear":
            return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        if self.schedule == "cosine":
            return torch.log(torch.cos(self._cos_arg(t))) - math.log(self._cos0)
        return _interp(t, self._t_grid, self._log_alpha_grid)

    def log_sigma(self, t: torch.Tensor) -> torch.Tensor:
        # sigma = sqrt(1 - alpha^2), computed as 0.5 log(-expm1(2 log alpha)) for accuracy
        return 0.5 * torch.log(-torch.expm1(2.0 * self.log_alpha(t)))

    def t_of_log_snr(self, lam: float | torch.Tensor) -> torch.Tensor:
        lam = as_time(lam)
        log_alpha = -0.5 * torch.nn.functional.softplus(-lam)  # alpha^2 = sigmoid(lambda)
        return self._t_of_log_alpha(log_alpha)

    def _t_of_log_alpha(self, log_alpha: torch.Tensor) -> torch.Tensor:
        if self.schedule == "linear":
            # root of (b1 - b0)/4 t^2 + b0/2 t - c = 0, c = -log alpha, in its stable form
            c = -log_alpha
            b0, b1 = self.beta_min, self.beta_max
            return 4.0 * c / (b0 + torch.sqrt(b0**2 + 4.0 * (b1 - b0) * c))
        if self.schedule == "cosine":
            arg = torch.acos(torch.exp(log_alpha) * self._cos0)
            return 2.0 * (1.0 + self.s) / math.pi * arg - self.s
        return _interp(log_alpha, self._log_alpha_grid.flip(0), self._t_grid.flip(0))


class SubVP(VP):
    """Sub-VP process (Song et al. 2021, eq. 11): alpha as VP-linear, sigma = 1 - alpha^2."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3):
        super().__init__("linear", beta_min=beta_min, beta_max=beta_max, t_min=t_min)
        self._set_config(beta_min=self.beta_min, beta_max=self.beta_max, t_min=self.t_min)

    def log_sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.log(-torch.expm1(2.0 * self.log_alpha(t)))

    def t_of_log_snr(self, lam: float | torch.Tensor) -> torch.Tensor:
        # a = alpha^2 solves e^lam (1 - a)^2 = a; with q = e^-lam the root in (0, 1) is
        # a = 2 / (2 + q + sqrt(q^2 + 4q)) (the roots multiply to 1).
        q = torch.exp(-as_time(lam))
        a = 2.0 / (2.0 + q + torch.sqrt(q**2 + 4.0 * q))
        return self._t_of_log_alpha(0.5 * torch.log(a))


class VE(Process):
    """Variance-exploding process (Song et al. 2021, eq. 30): alpha = 1,
    sigma(t) = sigma_min (sigma_max / sigma_min)^t."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.t_min, self.t_max = 0.0, 1.0
        self._set_config(sigma_min=self.sigma_min, sigma_max=self.sigma_max)

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def log_sigma(self, t: torch.Tensor) -> torch.Tensor:
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return lo + t * (hi - lo)

    def t_of_log_snr(self, lam: float | torch.Tensor) -> torch.Tensor:
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return (-0.5 * as_time(lam) - lo) / (hi - lo)


class EDM(Process):
    """EDM process (Karras et al. 2022): alpha = 1, sigma(t) = sigma_max * t.

    Their sigma(t) = t rescaled to t in [0, 1]; samplers stop at
    t_min = sigma_min / sigma_max. ``sigma_data`` is used by EDM preconditioning.
    """

    def __init__(
        self, sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float = 0.5
    ) -> None:
        if not 0 < sigma_min < sigma_max or sigma_data <= 0:
            raise ValueError(
                f"need 0 < sigma_min < sigma_max and sigma_data > 0, got "
                f"{sigma_min}, {sigma_max}, {sigma_data}"
            )
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.sigma_data = float(sigma_data)
        self.t_min, self.t_max = self.sigma_min / self.sigma_max, 1.0
        self._set_config(
            sigma_min=self.sigma_min, sigma_max=self.sigma_max, sigma_data=self.sigma_data
        )

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def log_sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.log(self.sigma_max * t)

    def t_of_log_snr(self, lam: float | torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * as_time(lam)) / self.sigma_max


class Interpolant(Process):
    """Stochastic interpolant x_t = alpha(t) x0 + beta(t) x1 + gamma(t) z
    (Albergo, Boffi & Vanden-Eijnden 2023, eq. 2.1), x1, z ~ N(0, I) independent.

    Presets: ``"linear"`` alpha = 1 - t, beta = t (rectified flow when gamma = 0,
    Liu et al. 2023); ``"trig"`` alpha = cos(pi t / 2), beta = sin(pi t / 2).
    gamma(t) = sqrt(a t (1 - t)) with ``a = gamma_scale`` (their eq. 4.6).
    With a Gaussian x1 the marginal is that of a Gaussian process with
    sigma(t) = sqrt(beta^2 + gamma^2); the velocity b = alpha' x0 + sigma' eps and
    the score -eps / sigma follow from the denoiser (``core.parameterization``).
    alpha(1) = 0, so samplers start at t_max = 1 - 1e-3 where the log-SNR is finite.
    """

    def __init__(
        self,
        kind: str = "linear",
        gamma_scale: float = 0.0,
        t_min: float = 1e-3,
        t_max: float = 1.0 - 1e-3,
    ) -> None:
        if kind not in ("linear", "trig"):
            raise ValueError(f"unknown interpolant {kind!r}: use 'linear' or 'trig'")
        if gamma_scale < 0 or not math.isfinite(gamma_scale):
            raise ValueError(f"gamma_scale must be finite and >= 0, got {gamma_scale}")
        if not 0 < t_min < t_max < 1:
            raise ValueError(f"need 0 < t_min < t_max < 1, got {t_min}, {t_max}")
        self.kind, self.gamma_scale = kind, float(gamma_scale)
        self.t_min, self.t_max = float(t_min), float(t_max)
        self._set_config(kind=kind, gamma_scale=self.gamma_scale, t_min=t_min, t_max=t_max)

    def interp_alpha(self, t: torch.Tensor) -> torch.Tensor:
        t = as_time(t)
        return 1.0 - t if self.kind == "linear" else torch.cos(0.5 * math.pi * t)

    def interp_beta(self, t: torch.Tensor) -> torch.Tensor:
        t = as_time(t)
        return t if self.kind == "linear" else torch.sin(0.5 * math.pi * t)

    def interp_gamma(self, t: torch.Tensor) -> torch.Tensor:
        t = as_time(t)
        return torch.sqrt(self.gamma_scale * t * (1.0 - t))

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.log(self.interp_alpha(t))

    def log_sigma(self, t: torch.Tensor) -> torch.Tensor:
        # gamma^2 written out, not interp_gamma(t)^2: sqrt'(0) = inf would make autograd's
        # d sigma / dt NaN when gamma_scale = 0
        return 0.5 * torch.log(self.interp_beta(t) ** 2 + self.gamma_scale * t * (1.0 - t))

    def t_of_log_snr(self, lam: float | torch.Tensor) -> torch.Tensor:
        if self.gamma_scale > 0:
            return super().t_of_log_snr(lam)  # no closed form: bisection
        half = 0.5 * as_time(lam)  # = log(alpha / beta)
        if self.kind == "linear":  # (1 - t) / t = e^half
            return torch.sigmoid(-half)
        return 2.0 / math.pi * torch.atan(torch.exp(-half))  # cot(pi t / 2) = e^half


class PFGMPP(Process):
    """PFGM++ (Xu et al. 2023) with augmentation dimension ``D``, aligned with EDM.

    The perturbation kernel is p_r(x | y) ∝ (||x - y||^2 + r^2)^(-(N + D)/2) for data of
    dimension N, with r = sigma * sqrt(D) (their eq. 4 and Sec. 4) and sigma(t) as EDM.
    Writing x = y + r R u (u uniform on the sphere, R^2 ~ BetaPrime(N/2, D/2)), the
    standardised noise is n = z * sqrt(D / chi2_D) with z ~ N(0, I_N) independent of
    chi2_D, since ||z||^2 ~ chi2_N; so x = y + sigma * n, and n -> z as D -> inf
    (EDM's Gaussian). The ODE dx/dsigma = (x - D(x, sigma)) / sigma is EDM's, so every
    deterministic sampler applies; SDE samplers do not (``gaussian = False``).
    """

    gaussian = False

    def __init__(
        self,
        D: float = 128.0,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
    ) -> None:
        if not D > 0 or not math.isfinite(D):
            raise ValueError(f"augmentation dimension D must be finite and > 0, got {D}")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.D = float(D)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.sigma_data = float(sigma_data)
        self.t_min, self.t_max = self.sigma_min / self.sigma_max, 1.0
        self._set_config(
            D=self.D, sigma_min=self.sigma_min, sigma_max=self.sigma_max, sigma_data=sigma_data
        )

    log_alpha = EDM.log_alpha
    log_sigma = EDM.log_sigma
    t_of_log_snr = EDM.t_of_log_snr

    def noise(self, shape, generator=None, dtype=torch.float32, device=None):
        """Heavy-tailed standardised noise n = z sqrt(D / chi2_D), z ~ N(0, I_N) per sample."""
        from scipy.stats import chi2

        shape = tuple(shape)
        z = torch.randn(shape, generator=generator, dtype=torch.float64)
        # chi2_D by inverse CDF of generator-drawn uniforms: reproducible for any real D > 0
        u = torch.rand(shape[0], generator=generator, dtype=torch.float64).clamp(1e-300, 1.0)
        c = torch.as_tensor(chi2.ppf(u.numpy(), self.D), dtype=torch.float64)
        n = z * coef(torch.sqrt(self.D / c), z)
        return n.to(dtype=dtype, device=device)

    def radius_density(self, R: torch.Tensor, sigma: float, N: int) -> torch.Tensor:
        """Unnormalised density of R = ||x - y|| under the kernel: R^(N-1) / (R^2 + r^2)^((N+D)/2)."""
        r = sigma * math.sqrt(self.D)
        R = as_time(R)
        return torch.exp((N - 1) * torch.log(R) - 0.5 * (N + self.D) * torch.log(R**2 + r**2))
