"""TSDiff: the unconditional time-series diffusion model of Kollovieh et al., "Predict,
Refine, Synthesize: Self-Guiding Diffusion Models for Probabilistic Time-Series
Forecasting" (NeurIPS 2023), as a diffsci network, with its windows, scaling and
self-guided forecasting.

The network (the paper's architecture as in amazon-science/
unconditional-time-series-diffusion, ``arch/backbones.py``) is a stack of residual blocks

    h = x + W_t e(t);   z = h + S4(LayerNorm(h));   g = tanh(z) * sigmoid(z);
    x <- x + W_1 g,     skip_b = W_2 g,             eps_hat = MLP(sum_b skip_b)

on series (B, L, C), C = the target plus its lags stacked as channels. The S4 layer here
is a *diagonal* state-space layer (S4D, Gu et al. 2022) computed by FFT convolution: per
channel h a kernel

    K_h[l] = 2 Re sum_n C_hn (exp(dt_h A_hn) - 1) / A_hn * exp(dt_h A_hn l),  l < L,

(zero-order hold, B = 1), S4D-Lin initialisation A_n = -1/2 + i pi n, log dt uniform in
[log dt_min, log dt_max], C complex normal; y = IFFT(FFT(u) FFT(K)) with both padded to
2L is the causal convolution y[l] = sum_{m <= l} K[l - m] u[m]. Bidirectional: a second
kernel runs over the flipped sequence; both outputs (the forward one with the skip D u)
pass a GELU and a linear layer mixes them back to H channels. (The official code uses
the full S4 layer, NPLR kernel with d_state 128 and Cauchy kernels, summing the two
directions into one two-sided kernel; the diagonal FFT version needs no extension.)

The default process is the paper's DDPM: T = 100 linear betas from 1e-4 to 0.1
(``tsdiff_process``), as a continuous-time VP through ``VP.from_alphas_cumprod`` (step i
sits at t = (i + 1) / T). Any diffsci process works with the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from diffsci.core.config import Configurable
from diffsci.core.guidance import self_guidance
from diffsci.core.nets import time_embedding
from diffsci.core.processes import VP, Process
from diffsci.core.samplers import sample
from diffsci.core.utils import check_positive_int

__all__ = [
    "linear_beta_alphas_cumprod",
    "tsdiff_process",
    "S4DKernel",
    "fft_conv",
    "BiS4DLayer",
    "TSDiffNet",
    "mean_scale",
    "scale",
    "unscale",
    "check_lags",
    "required_past",
    "make_window",
    "window_sampler",
    "forecast",
]


# --------------------------------------------------------------------------------------
# The diffusion schedule
# --------------------------------------------------------------------------------------
def linear_beta_alphas_cumprod(
    timesteps: int = 100, beta_start: float = 1e-4, beta_end: float = 0.1
) -> torch.Tensor:
    """abar_i = prod_{j <= i} (1 - beta_j), beta linear from ``beta_start`` to ``beta_end``
    (TSDiff's ``linear_beta_schedule``: T = 100, 1e-4 to 0.1), in float64."""
    check_positive_int("timesteps", timesteps)
    if not 0.0 < beta_start < beta_end < 1.0:
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
    betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


def tsdiff_process(timesteps: int = 100, beta_start: float = 1e-4, beta_end: float = 0.1) -> VP:
    """The paper's DDPM schedule as a diffsci process: ``VP.from_alphas_cumprod`` of the
    linear betas (step i at t = (i + 1) / T, t_min = 1 / T)."""
    return VP.from_alphas_cumprod(linear_beta_alphas_cumprod(timesteps, beta_start, beta_end))


# --------------------------------------------------------------------------------------
# The diagonal state-space layer
# --------------------------------------------------------------------------------------
class S4DKernel(nn.Module):
    """Convolution kernels of ``channels`` diagonal SSMs with ``modes`` complex modes
    each (S4D-Lin, Gu et al. 2022, "On the Parameterization and Initialization of
    Diagonal State Space Models": the Vandermonde kernel with ZOH, S4D-Lin init).

    ``forward(L)`` returns K of shape (channels, L), K[h, l] as in the module doc.
    """

    def __init__(
        self, channels: int, modes: int = 32, dt_min: float = 1e-3, dt_max: float = 1e-1
    ) -> None:
        super().__init__()
        check_positive_int("S4DKernel: channels", channels)
        check_positive_int("S4DKernel: modes", modes)
        if not 0.0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        u = torch.rand(channels)
        self.log_dt = nn.Parameter(math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min)))
        # A = -exp(log_neg_re) + i im: the real part stays negative (a stable SSM)
        self.log_neg_re = nn.Parameter(torch.full((channels, modes), math.log(0.5)))
        self.im = nn.Parameter(
            math.pi * torch.arange(modes, dtype=torch.float32).repeat(channels, 1)
        )
        self.C = nn.Parameter(torch.randn(channels, modes, 2) * math.sqrt(0.5))

    def discretized(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dtA, (exp(dtA) - 1) / A, C), each (H, N) complex: the ZOH system
        x_l = exp(dtA) x_{l-1} + (exp(dtA) - 1) / A u_l, y_l = 2 Re(C x_l)."""
        A = torch.complex(-torch.exp(self.log_neg_re), self.im)  # Re A < 0: stable
        dtA = A * torch.exp(self.log_dt)[:, None]
        return dtA, torch.expm1(dtA) / A, torch.view_as_complex(self.C)

    def forward(self, L: int) -> torch.Tensor:
        dtA, gain, C = self.discretized()
        ell = torch.arange(L, device=dtA.device, dtype=torch.float32)
        vander = torch.exp(dtA[:, :, None] * ell)  # (H, N, L): exp(dtA l)
        return 2.0 * torch.einsum("hn,hnl->hl", C * gain, vander).real


def fft_conv(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Causal convolution y[..., l] = sum_{m <= l} K[..., l - m] u[..., m] over the last
    axis, by FFT with both zero-padded to 2L (no circular wrap-around). u (B, H, L),
    K (H, L)."""
    L = u.shape[-1]
    if K.shape[-1] != L:
        raise ValueError(f"the kernel has length {K.shape[-1]}, the sequence {L}")
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(K, n=2 * L), n=2 * L)
    return y[..., :L]


class BiS4DLayer(nn.Module):
    """Bidirectional S4D layer on (B, L, H): a forward kernel on u and a backward one on
    the flipped u, y = Linear(GELU([K_f * u + D u, flip(K_b * flip(u))]))."""

    def __init__(
        self, hidden: int, modes: int = 32, dt_min: float = 1e-3, dt_max: float = 1e-1
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.kernel = S4DKernel(2 * hidden, modes, dt_min, dt_max)  # forward, then backward
        self.D = nn.Parameter(torch.randn(hidden))
        self.mix = nn.Linear(2 * hidden, hidden)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        H = self.hidden
        K = self.kernel(u.shape[1])
        uh = u.transpose(1, 2)  # (B, H, L)
        y_f = fft_conv(uh, K[:H]) + self.D[:, None] * uh
        y_b = fft_conv(uh.flip(-1), K[H:]).flip(-1)
        y = torch.cat([y_f, y_b], dim=1).transpose(1, 2)  # (B, L, 2H)
        return self.mix(nn.functional.gelu(y))


class _Block(nn.Module):
    """TSDiff's residual block (``S4Block`` of the official code)."""

    def __init__(self, hidden: int, modes: int, dt_min: float, dt_max: float) -> None:
        super().__init__()
        self.time = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.s4 = BiS4DLayer(hidden, modes, dt_min, dt_max)
        self.out_res = nn.Linear(hidden, hidden)
        self.out_skip = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x + self.time(e)[:, None, :]
        z = h + self.s4(self.norm(h))  # pre-norm residual S4 layer
        g = torch.tanh(z) * torch.sigmoid(z)
        return x + self.out_res(g), self.out_skip(g)


class TSDiffNet(nn.Module, Configurable):
    """The TSDiff backbone: eps_theta(x_t, t) for series (B, L, C), C = 1 + len(lags).

    Args:
        lags: the lags stacked as channels after the target (e.g. (24, 48, ...) hourly;
            the official code uses 24 x [1..7, 14, 21, 28] hourly and 30 x [1..12] daily).
        hidden: channels of the residual stream (official small config: 64).
        num_blocks: residual blocks (official small config: 3).
        emb_dim: size of the sinusoidal time embedding (official: 128).
        modes: complex modes per SSM channel (official d_state 128 = 64 conjugate pairs).
        dt_min, dt_max: range of the initial SSM step sizes.
        init_skip: add the input to the output (the official option; off in its configs).

    The time input is the process time t in [0, 1] (``core.nets.time_embedding``).
    """

    def __init__(
        self,
        lags: Sequence[int] = (),
        hidden: int = 64,
        num_blocks: int = 3,
        emb_dim: int = 128,
        modes: int = 32,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        init_skip: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        lags = check_lags(lags)
        for name, v in (("hidden", hidden), ("num_blocks", num_blocks), ("emb_dim", emb_dim)):
            check_positive_int(f"TSDiffNet: {name}", v)
        self._set_config(
            lags=list(lags),
            hidden=hidden,
            num_blocks=num_blocks,
            emb_dim=emb_dim,
            modes=modes,
            dt_min=float(dt_min),
            dt_max=float(dt_max),
            init_skip=bool(init_skip),
        )
        self.lags, self.channels, self.emb_dim = lags, 1 + len(lags), emb_dim
        self.init_skip = bool(init_skip)
        self.inp = nn.Sequential(nn.Linear(self.channels, hidden), nn.ReLU())
        self.temb = nn.Sequential(
            nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        self.blocks = nn.ModuleList(
            _Block(hidden, modes, dt_min, dt_max) for _ in range(num_blocks)
        )
        self.out = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, self.channels)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if cond is not None:
            raise ValueError("TSDiffNet is unconditional; it takes no cond (use self-guidance)")
        if x.ndim != 3 or x.shape[-1] != self.channels:
            raise ValueError(
                f"TSDiffNet expects series (B, L, {self.channels}) (target + {len(self.lags)} "
                f"lags), got shape {tuple(x.shape)}"
            )
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        e = self.temb(time_embedding(t, self.emb_dim))
        h = self.inp(x)
        skip = 0.0
        for block in self.blocks:
            h, s = block(h, e)
            skip = skip + s
        out = self.out(skip)
        return out + x if self.init_skip else out


# --------------------------------------------------------------------------------------
# Scaling and windows
# --------------------------------------------------------------------------------------
def mean_scale(
    context: torch.Tensor, observed: torch.Tensor | None = None, eps: float = 1e-7
) -> torch.Tensor:
    """Mean scaling (GluonTS ``MeanScaler``, as TSDiff): s = mean |context| over the observed
    values + eps, per series. ``context`` (B, T); ``observed`` (B, T) bool (default: the
    finite values). Raises for a series with nothing observed."""
    if context.ndim != 2:
        raise ValueError(f"context must have shape (B, T), got {tuple(context.shape)}")
    obs = torch.isfinite(context) if observed is None else observed.bool() & torch.isfinite(context)
    n = obs.sum(1)
    if bool((n == 0).any()):
        bad = torch.nonzero(n == 0).flatten().tolist()
        raise ValueError(f"series {bad}: the context window is all NaN / unobserved")
    total = torch.where(obs, context, torch.zeros_like(context)).abs().sum(1)
    return total / n + eps


def scale(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x / s for a batch x (B, ...) and per-series scales s (B,)."""
    return x / s.reshape(-1, *([1] * (x.ndim - 1))).to(x)


def unscale(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x * s: the inverse of :func:`scale`."""
    return x * s.reshape(-1, *([1] * (x.ndim - 1))).to(x)


def check_lags(lags: Sequence[int]) -> tuple[int, ...]:
    """Lags as a tuple of distinct positive ints."""
    lags = tuple(lags)
    for lag in lags:
        check_positive_int("a lag", lag)
    if len(set(lags)) != len(lags):
        raise ValueError(f"lags must be distinct, got {lags}")
    return lags


def required_past(context_length: int, lags: Sequence[int] = ()) -> int:
    """Past points a forecast needs: the context plus the largest lag."""
    return context_length + max(check_lags(lags), default=0)


def make_window(
    past: torch.Tensor,
    context_length: int,
    prediction_length: int,
    lags: Sequence[int] = (),
    future: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model's window (B, context + prediction, 1 + len(lags)) from a history.

    ``past`` (B, P) holds the last P values (NaN = missing); P must be at least
    ``context_length + max(lags)``. Channel 0 is the target over the context and the
    horizon, channel 1 + k the target lagged by lags[k] (TSDiff's
    ``lagged_sequence_values``). All is divided by the mean scale of the observed context.
    ``future`` (B, prediction) fills the horizon (training windows; default unknown).

    Returns (window with 0 where unobserved, observed mask (bool, same shape), scale (B,)).
    """
    check_positive_int("context_length", context_length)
    check_positive_int("prediction_length", prediction_length)
    lags = check_lags(lags)
    if past.ndim != 2:
        raise ValueError(f"past must have shape (B, P), got {tuple(past.shape)}")
    B, P = past.shape
    need = required_past(context_length, lags)
    if P < need:
        raise ValueError(
            f"the history has {P} points; context_length {context_length} + largest lag "
            f"{max(lags, default=0)} = {need} are needed"
        )
    s = mean_scale(past[:, P - context_length :])
    H = prediction_length
    if future is None:
        future = torch.full((B, H), float("nan"), dtype=past.dtype, device=past.device)
    elif future.shape != (B, H):
        raise ValueError(f"future must have shape ({B}, {H}), got {tuple(future.shape)}")
    full = scale(torch.cat([past, future.to(past)], 1), s)  # (B, P + H)
    pos = torch.arange(P - context_length, P + H, device=past.device)  # window -> full index
    idx = torch.stack([pos] + [pos - lag for lag in lags], -1)  # (L, C)
    x = full[:, idx]  # (B, L, C)
    mask = torch.isfinite(x)
    x = torch.where(mask, x, torch.zeros_like(x))
    return x, mask, s


def window_sampler(
    series: torch.Tensor | Sequence[torch.Tensor],
    context_length: int,
    prediction_length: int,
    lags: Sequence[int] = (),
) -> Callable[[int, torch.Generator], torch.Tensor]:
    """Training data for ``core.train``: ``sample(n, generator)`` draws n random windows
    (n, context + prediction, 1 + len(lags)) from the series (each 1-D, fully observed),
    mean-scaled by their context (TSDiff's unconditional training on random windows)."""
    seqs = [torch.as_tensor(x, dtype=torch.float32).flatten() for x in series]
    need = required_past(context_length, lags) + prediction_length
    seqs = [x for x in seqs if len(x) >= need]
    if not seqs:
        raise ValueError(f"no series is long enough: a window needs {need} points")

    def sample_windows(n: int, generator: torch.Generator) -> torch.Tensor:
        which = torch.randint(len(seqs), (n,), generator=generator).tolist()
        u = torch.rand(n, generator=generator, dtype=torch.float64).tolist()
        ends = [need + int(ui * (len(seqs[i]) - need + 1)) for i, ui in zip(which, u)]
        w = torch.stack([seqs[i][e - need : e] for i, e in zip(which, ends)])
        cut = need - prediction_length
        return make_window(w[:, :cut], context_length, prediction_length, lags, w[:, cut:])[0]

    return sample_windows


# --------------------------------------------------------------------------------------
# Forecasting by self-guidance
# --------------------------------------------------------------------------------------
def forecast(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    past: torch.Tensor,
    prediction_length: int,
    context_length: int,
    lags: Sequence[int] = (),
    num_samples: int = 100,
    guidance_scale: float = 4.0,
    energy: str = "quantile",
    solver: str = "ddpm",
    nfe: int | None = None,
    schedule: Any = "uniform",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """TSDiff-Q / TSDiff-MS forecasts (Kollovieh et al. 2023, observation self-guidance):
    sample the unconditional model guided by the observed context (and its lags).

    ``past`` (B, P) with NaN for missing values; returns samples (B, num_samples,
    prediction_length) in the original units. Sample path i of each series is guided
    with the quantile kappa_i = i / (n + 1) (``energy="quantile"``) or by the squared error
    (``"mse"``). ``nfe`` defaults to T - 1 steps of a discrete process's grid (the
    official 100 DDPM steps with the last denoising below); the forecast is the guided
    denoiser's x0 at t_min. The official scale per data set is e.g. 4 (electricity,
    quantile). The squared-error energy's gradient grows with the error, so it needs a
    much smaller scale: on the synthetic seasonal test series (a 300-step model, CRPS,
    seasonal naive 0.315) the quantile energy gave 0.222 / 0.218 / 0.219 at s = 1 / 4 / 8
    with DDPM, MSE 0.454 / 0.379 / 0.268 at s = 0.02 / 0.05 / 0.2 and diverged at 0.5.
    """
    check_positive_int("num_samples", num_samples)
    obs, mask, s = make_window(past, context_length, prediction_length, lags)
    B, L, C = obs.shape
    n = num_samples
    obs, mask = obs.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    D = self_guidance(denoiser, process, obs, mask, guidance_scale, energy=energy, quantiles=n)
    if nfe is None:
        knots = process.knots
        nfe = len(knots) - 1 if knots is not None else 100
    x1 = process.prior((B * n, L, C), generator=generator)
    x = sample(D, process, x1, solver=solver, nfe=nfe, schedule=schedule, generator=generator)
    t_min = torch.full((B * n,), process.t_min, dtype=torch.float64)
    x0 = D(x, t_min).detach()
    y = x0[:, context_length:, 0].reshape(B, n, prediction_length)
    return unscale(y, s)
