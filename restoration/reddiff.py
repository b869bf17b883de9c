"""RED-Diff (Mardani, Song, Kautz & Vahdat 2023, "A Variational Perspective on Solving
Inverse Problems with Diffusion Models"): variational posterior sampling as optimisation.

The posterior is approximated by q(x0 | y) = N(mu, sigma_x0^2 I) (sigma_x0 -> 0 in practice),
and mu minimises the paper's Eq. 9: a data term plus a diffusion-prior regulariser that is a
weighted score-matching loss across noise levels. Its stochastic gradient needs no Jacobian
of the denoiser (Eq. 10, the "stop-gradient" form): at a level t drawn in descending order,

    eps ~ N(0, I),   x_t = alpha_t mu + sigma_t eps,   eps_hat = eps-prediction at (x_t, t),
    loss(mu) = obs_weight ||y - A mu||^2 / (2 m) + lambda w_t <sg(eps_hat - eps), mu> / d,

and one Adam step is taken on mu. This is the scaling of the official code (NVlabs/RED-diff,
``algos/reddiff.py``): the data term is ``mean(e_obs ** 2) / 2`` over the measurement
entries (there is no 1 / sigma_y^2: ``obs_weight`` plays that role), the regulariser is
``mean((eps_hat - eps).detach() * mu)`` over the signal entries, w_t = lambda * snr_inv with
snr_inv = sigma_t / alpha_t under the weighting ``denoise_term_weight`` ("linear"; also
"sqrt", "square", "log" = log(1 + snr_inv), "trunc_linear" = min(snr_inv, 1),
"power2over3", "const"), and Adam has betas (0.9, 0.99). Defaults as its
``_configs/algo/reddiff.yaml``: lambda (``grad_term_weight``) 0.25, lr 0.1, obs_weight 1,
sigma_x0 0, and mu initialised at A^+ y. The pseudo-inverse is truncated at the noise level
(singular values s <= sigma_y dropped), as the official operators drop singular values
below a fixed ``ZERO`` (3e-2 for its blur): the full A^+ of a Gaussian blur amplifies the
measurement noise by up to 1 / s_min ~ 1e8, and Adam at lr 0.1 cannot walk mu back from
there in a few hundred steps. Here each row carries its own loss (the official
code averages over the batch as well; Adam is invariant to that constant factor up to its
eps), so the K rows of a group are independent runs that differ by their noise draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from diffsci.core.processes import Process
from diffsci.core.schedules import time_grid
from diffsci.core.svdd import CountingDenoiser

from .operators import LinearOperator
from .posterior import Posterior, check_problem, register_posterior

__all__ = ["WEIGHTINGS", "snr_weight", "reddiff_loss", "reddiff"]

WEIGHTINGS = ("linear", "sqrt", "square", "log", "trunc_linear", "power2over3", "const")
_ALIASES = {"constant": "const"}


def _check_weighting(kind: str) -> str:
    kind = _ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if kind not in WEIGHTINGS:
        raise ValueError(
            f"reddiff: unknown weighting {kind!r}; use one of {WEIGHTINGS} ('constant' = 'const')"
        )
    return kind


def snr_weight(kind: str, alpha: float, sigma: float) -> float:
    """The regulariser's weight at a level (before lambda): a function of snr_inv =
    sigma / alpha, as ``denoise_term_weight`` in the official code (RED-Diff, Sec. 4.3)."""
    kind = _check_weighting(kind)
    r = float(sigma) / float(alpha)
    return {
        "linear": r,
        "sqrt": math.sqrt(r),
        "square": r * r,
        "log": math.log1p(r),
        "trunc_linear": min(r, 1.0),
        "power2over3": r ** (2.0 / 3.0),
        "const": 1.0,
    }[kind]


def reddiff_loss(
    A: LinearOperator,
    y: torch.Tensor,
    mu: torch.Tensor,
    eps: torch.Tensor,
    eps_hat: torch.Tensor,
    weight: float | torch.Tensor,
    obs_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The RED-Diff loss per row and its analytic gradient in mu (Mardani et al. 2023,
    Eq. 9-10, with the official code's normalisation).

        loss_i = obs_weight ||y_i - A mu_i||^2 / (2 m) + weight_i <sg(eps_hat_i - eps_i), mu_i> / d
        grad_i = -obs_weight A^T (y_i - A mu_i) / m + weight_i (eps_hat_i - eps_i) / d

    with m = A.y_dim, d = A.x_dim; ``weight`` is lambda * w_t, a float or one per row (B,).
    eps_hat and eps enter as constants (the stop-gradient). Returns (loss (B,), grad like mu).
    """
    B = mu.shape[0]
    m, d = A.y_dim, A.x_dim
    w = torch.as_tensor(weight, dtype=mu.dtype, device=mu.device)
    if w.ndim == 0:
        w = w.expand(B)
    if w.shape != (B,):
        raise ValueError(
            f"reddiff_loss: weight must be a float or of shape ({B},), got {tuple(w.shape)}"
        )
    res = y - A(mu)
    diff = (eps_hat - eps).detach()
    wb = w.view(B, *([1] * (mu.ndim - 1)))
    obs = res.reshape(B, -1).square().sum(1) / (2 * m)
    reg = (diff * mu).reshape(B, -1).sum(1) / d
    loss = obs_weight * obs + w * reg
    grad = -obs_weight * A.T(res) / m + wb * diff / d
    return loss, grad


@register_posterior("reddiff")
def reddiff(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    A: LinearOperator,
    y: torch.Tensor,
    x1: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    lam: float = 0.25,
    lr: float = 0.1,
    weighting: str = "linear",
    obs_weight: float = 1.0,
    init: str = "pinv",
    sigma_x0: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.99),
    schedule: str = "uniform",
    pinv_rcond: float | None = None,
) -> Posterior:
    """RED-Diff (Mardani et al. 2023, Algorithm 1): Adam on the variational mean mu, one
    denoiser evaluation per step at the descending levels of a ``schedule`` grid (its
    ``steps`` levels below t_max, ending at t_min, as the official DDIM grid ends at 0).

    Options (official defaults): ``lam`` = lambda 0.25, ``lr`` 0.1, ``weighting`` "linear"
    (w_t = sigma_t / alpha_t; see :data:`WEIGHTINGS`), ``obs_weight`` 1, ``sigma_x0`` 0 (the
    std of q: x0 = mu + sigma_x0 z is what is noised), Adam ``betas`` (0.9, 0.99), ``init``
    "pinv" (mu0 = A^+ y, needs an SVD), "adjoint" (A^T y) or "x1" (mu0 = x1). ``pinv_rcond``
    is the relative cutoff of A^+ (``LinearOperator.pinv``); None: the noise level,
    sigma_y / max(s), i.e. the directions where A's gain is below the noise std (their
    component of y is more noise than signal for a unit-scale x) start at 0; with
    sigma_y = 0, numpy's default. The returned samples are the final mu's; costs ``steps``
    evaluations per row, no backward pass.
    """
    who = "reddiff"
    Y, K = check_problem(process, A, y, x1, steps, who)
    weighting = _check_weighting(weighting)
    for name, v in (("lam", lam), ("obs_weight", obs_weight), ("sigma_x0", sigma_x0)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{who}: {name} must be a finite number >= 0, got {v!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"{who}: lr must be a finite number > 0, got {lr!r}")
    if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
        raise ValueError(f"{who}: betas must be two numbers in [0, 1), got {betas!r}")
    if pinv_rcond is not None and not (
        isinstance(pinv_rcond, (int, float))
        and 0 <= pinv_rcond < 1
        and not isinstance(pinv_rcond, bool)
    ):
        raise ValueError(
            f"{who}: pinv_rcond must be None or a number in [0, 1), got {pinv_rcond!r}"
        )
    if init == "pinv":
        if not A.has_svd:
            raise ValueError(
                f"{who}: init='pinv' needs an operator with an SVD; {type(A).__name__} has "
                "none (use init='adjoint' or 'x1')"
            )
        mu = A.pinv(Y, rcond=A.noise_rcond if pinv_rcond is None else pinv_rcond)
    elif init == "adjoint":
        mu = A.T(Y)
    elif init == "x1":
        mu = x1.clone()
    else:
        raise ValueError(f"{who}: init must be 'pinv', 'adjoint' or 'x1', got {init!r}")
    mu = mu.to(x1.dtype).detach()
    b1, b2 = float(betas[0]), float(betas[1])
    m1, m2 = torch.zeros_like(mu), torch.zeros_like(mu)
    ts = time_grid(process, steps, schedule)[1:].to(x1.device)
    D = CountingDenoiser(denoiser, who=who)
    for k, t in enumerate(ts, start=1):
        a, s = float(process.alpha(t)), float(process.sigma(t))
        x0 = mu
        if sigma_x0 > 0:
            z = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
            x0 = mu + sigma_x0 * z
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        xt = a * x0 + s * eps
        eps_hat = (xt - a * D(xt, t)) / s
        w = lam * snr_weight(weighting, a, s)
        _, g = reddiff_loss(A, Y, x0, eps, eps_hat, w, obs_weight)
        # Adam (Kingma & Ba 2015, Algorithm 1), weight decay 0, eps 1e-8 as torch.optim.Adam
        m1.mul_(b1).add_(g, alpha=1 - b1)
        m2.mul_(b2).addcmul_(g, g, value=1 - b2)
        step = lr / (1 - b1**k)
        denom = (m2 / (1 - b2**k)).sqrt_().add_(1e-8)
        mu = mu - step * m1 / denom
        if not bool(torch.isfinite(mu).all()):
            raise FloatingPointError(f"{who}: mu became NaN/Inf at step {k} (t={float(t):.4g})")
    return Posterior(mu, y.shape[0], D.evals)
