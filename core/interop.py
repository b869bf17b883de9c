"""Interop with diffusers and MONAI: their models as diffsci denoisers, their schedulers
driven by a diffsci denoiser.

diffusers' discrete checkpoints live on integer timesteps tau = 0..N-1 with
``alphas_cumprod[tau]``; diffsci's ``VP.from_alphas_cumprod`` puts them at continuous
times t = (tau + 1) / N (DPM-Solver's convention), so t_max = 1 is timestep N-1 and
t_min = 1/N is timestep 0. Fractional timesteps (Karras or Euler grids) are mapped to a
noise level as diffusers maps them back, by interpolating log sigma_VE linearly between
integer timesteps (the inverse of ``EulerDiscreteScheduler._sigma_to_t``).

A pretrained network becomes a diffsci denoiser D(x_t, t, cond=None) -> x0_hat with
:class:`DiffusersDenoiser` (``UNet2DModel``, ``UNet2DConditionModel``) or
:class:`MonaiDenoiser` (``monai.networks.nets.DiffusionModelUNet``), so every diffsci
sampler and guidance method runs on an existing checkpoint::

    import torch
    from diffusers import DDPMPipeline
    from diffsci.core import sample
    from diffsci.core.interop import DiffusersDenoiser

    pipe = DDPMPipeline.from_pretrained("google/ddpm-cifar10-32")
    D = DiffusersDenoiser(pipe.unet, pipe.scheduler)  # D.process: the checkpoint's VP
    x1 = D.process.prior((4, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x0 = sample(D, D.process, x1, "dpm++2m", nfe=20)

A conditional network takes ``cond``: a tensor is the text embedding
(``encoder_hidden_states`` / MONAI's ``context``) of a cross-attention UNet or the
``class_labels`` of a class-conditional one; a dict is passed as keyword arguments.

diffusers and MONAI are optional (``pip install diffsci[interop]``); nothing here
imports them: the wrappers use only the model and scheduler objects passed in.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .parameterization import from_x0, to_x0
from .processes import VP
from .utils import batch_time

__all__ = [
    "vp_of_scheduler",
    "time_of_timestep",
    "timestep_of_time",
    "scheduler_times",
    "run_diffusers_scheduler",
    "DiffusersDenoiser",
    "MonaiDenoiser",
    "PREDICTION_TYPES",
]

# diffusers' / MONAI's prediction_type -> diffsci's prediction name
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


def _alphas_cumprod(scheduler: Any) -> torch.Tensor:
    ac = getattr(scheduler, "alphas_cumprod", None)
    if ac is None:
        raise ValueError(
            f"{type(scheduler).__name__} has no alphas_cumprod; only discrete VP schedulers "
            "(DDPM/DDIM/DPM-Solver/UniPC/DEIS/Euler/Heun families) can be wrapped"
        )
    return torch.as_tensor(ac, dtype=torch.float64).cpu()


def vp_of_scheduler(scheduler: Any) -> VP:
    """The diffsci VP process of a diffusers or MONAI scheduler's training schedule."""
    return VP.from_alphas_cumprod(_alphas_cumprod(scheduler))


def _log_sigmas(scheduler: Any) -> torch.Tensor:
    ac = _alphas_cumprod(scheduler)
    return 0.5 * (torch.log1p(-ac) - torch.log(ac))  # log sigma_VE = log sqrt((1-a)/a)


def time_of_timestep(scheduler: Any, tau: Any) -> torch.Tensor:
    """diffsci time (float64) of a (possibly fractional) diffusers timestep."""
    tau = torch.as_tensor(tau, dtype=torch.float64).cpu()
    log_sig = _log_sigmas(scheduler)
    n = len(log_sig)
    if bool(((tau < 0) | (tau > n - 1)).any()):
        raise ValueError(f"timesteps must lie in [0, {n - 1}], got {tau}")
    lo = tau.floor().clamp(max=n - 2).long()
    w = tau - lo
    ls = (1 - w) * log_sig[lo] + w * log_sig[lo + 1]
    return vp_of_scheduler(scheduler).t_of_log_snr(-2.0 * ls)


def timestep_of_time(t: Any, n_train: int) -> torch.Tensor:
    """Continuous diffsci time -> diffusers' timestep, tau = t N - 1 (exact at the grid)."""
    return torch.as_tensor(t, dtype=torch.float64) * n_train - 1.0


def scheduler_times(scheduler: Any) -> torch.Tensor:
    """The decreasing diffsci time grid a set-up scheduler integrates over, end point
    included, for passing as ``schedule=`` to ``sample`` (same algorithm, same grid).

    Sigma-based schedulers (those with ``sigmas``) give it through their sigmas; DDIM's
    (diffusers' or MONAI's) grid is its timesteps followed by the final alpha
    (``set_alpha_to_one=False`` ends at timestep 0, i.e. t_min). DDIM steps from
    timestep tau to tau - N // n whatever timesteps it lists, so a DDIM whose listed
    timesteps are not N // n apart (diffusers' ``linspace`` spacing, ``trailing`` with n
    not dividing N, MONAI's default ``steps_offset=0``) is refused: no one grid
    reproduces its loop.
    """
    process = vp_of_scheduler(scheduler)
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None:
        sig = torch.as_tensor(sigmas, dtype=torch.float64).cpu()
        if bool((sig <= 0).any()):
            raise ValueError(
                "the scheduler ends at sigma = 0, which no diffsci time reaches; "
                "set final_sigmas_type='sigma_min'"
            )
        ts = process.t_of_log_snr(-2.0 * torch.log(sig))
        # diffusers keeps sigmas in float32: clamp its rounding back into [t_min, t_max]
        return ts.clamp(process.t_min, process.t_max)
    final = getattr(scheduler, "final_alpha_cumprod", None)
    if final is not None:
        return _ddim_times(scheduler, process, float(final))
    if getattr(getattr(scheduler, "config", None), "set_alpha_to_one", False):
        raise ValueError("DDIM with set_alpha_to_one=True ends at alpha = 1 (t = 0); set it False")
    ts = time_of_timestep(scheduler, scheduler.timesteps.double())
    return torch.cat([ts, ts.new_tensor([process.t_min])])


def _ddim_times(scheduler: Any, process: VP, final_alpha_cumprod: float) -> torch.Tensor:
    """The grid of a diffusers or MONAI ``DDIMScheduler`` after ``set_timesteps(n)``.

    Both step from timestep tau to tau - N // n (then to ``final_alpha_cumprod`` below
    0), whatever timesteps ``set_timesteps`` listed; the loop is a DDIM on one grid only
    when the listed timesteps are N // n apart.
    """
    taus = torch.as_tensor(scheduler.timesteps).long().cpu()
    n_train = len(_alphas_cumprod(scheduler))
    n = int(getattr(scheduler, "num_inference_steps", None) or len(taus))
    prev = taus - n_train // n
    bad = (prev[:-1] != taus[1:]).nonzero()
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{type(scheduler).__name__} steps from timestep {int(taus[i])} to "
            f"{int(prev[i])} (timestep - N // n) but evaluates its next step at "
            f"{int(taus[i + 1])}, so its loop is no DDIM on any one time grid. List timesteps "
            "N // n apart: diffusers timestep_spacing='leading', or 'trailing' with n "
            f"dividing N; MONAI steps_offset = N - 1 - (N // n) (n - 1) = "
            f"{n_train - 1 - (n_train // n) * (n - 1)} for N = {n_train}, n = {n}"
        )
    ts = time_of_timestep(scheduler, taus.double())
    if int(prev[-1]) >= 0:
        t_end = time_of_timestep(scheduler, prev[-1:].double())
    elif final_alpha_cumprod >= 1.0:
        raise ValueError("DDIM with set_alpha_to_one=True ends at alpha = 1 (t = 0); set it False")
    else:  # alphas_cumprod[0] with set_alpha_to_one=False: t_min
        lam = math.log(final_alpha_cumprod) - math.log1p(-final_alpha_cumprod)
        t_end = process.t_of_log_snr(torch.tensor([lam], dtype=torch.float64))
        t_end = t_end.clamp(process.t_min, process.t_max)
    return torch.cat([ts, t_end])


def run_diffusers_scheduler(
    scheduler: Any,
    denoiser: Any,
    x1: torch.Tensor,
    num_inference_steps: int,
    cond: Any = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    """Run a diffusers scheduler's own sampling loop with a diffsci denoiser as its model.

    ``x1`` is VP-scaled noise at the scheduler's first time (``t_max``); the model sees
    what a diffusers UNet would (the scaled input and the timestep) and answers in the
    scheduler's ``prediction_type`` from ``denoiser(x, t)``. Sigma-based schedulers
    (Euler, Heun) carry x_VE = x_VP sqrt(1 + sigma^2); the result is returned VP-scaled.

    ``generator`` goes to the scheduler's ``step`` (stochastic schedulers draw their
    noise from it, as diffsci's samplers do, so both see the same noise).

    Returns (x at the scheduler's final time, number of model calls).
    """
    process = vp_of_scheduler(scheduler)
    pred = _prediction(scheduler, None)
    scheduler.set_timesteps(num_inference_steps)
    sigma_based = float(scheduler.init_noise_sigma) != 1.0
    x = x1 * float(scheduler.init_noise_sigma) if sigma_based else x1.clone()
    calls, extra = 0, {}
    if generator is not None:
        if "generator" not in inspect.signature(scheduler.step).parameters:
            raise ValueError(f"{type(scheduler).__name__}.step takes no generator")
        extra["generator"] = generator
    # the model times of the whole loop at once (time_of_timestep rebuilds the process)
    times = time_of_timestep(scheduler, scheduler.timesteps.double()).to(x.device)
    for tau, t in zip(scheduler.timesteps, times):
        x_in = scheduler.scale_model_input(x, tau)
        tb = t.expand(x.shape[0])
        x0 = denoiser(x_in, tb) if cond is None else denoiser(x_in, tb, cond=cond)
        out = from_x0(x0, pred, x_in, tb, process)
        calls += 1
        x = scheduler.step(out, tau, x, **extra).prev_sample
    if sigma_based:
        sig_end = float(scheduler.sigmas[-1])
        x = x / (1.0 + sig_end**2) ** 0.5
    return x, calls


# --------------------------------------------------------------------------------------
# Pretrained networks as diffsci denoisers
# --------------------------------------------------------------------------------------
def _prediction(scheduler: Any, prediction_type: str | None) -> str:
    """diffsci's prediction name for a scheduler's (or the given) ``prediction_type``."""
    kind = prediction_type
    if kind is None:
        config = getattr(scheduler, "config", None)  # diffusers: a FrozenDict config
        if isinstance(config, Mapping):
            kind = config.get("prediction_type")
        else:  # MONAI: an attribute
            kind = getattr(scheduler, "prediction_type", None)
    kind = getattr(kind, "value", kind)  # MONAI's StrEnum hashes by member name, not value
    if not isinstance(kind, str) or kind not in PREDICTION_TYPES:
        raise ValueError(
            f"unsupported prediction_type {kind!r}: use one of {sorted(PREDICTION_TYPES)}"
        )
    return PREDICTION_TYPES[kind]


def _param_dtype(net: nn.Module, default: torch.dtype) -> torch.dtype:
    for p in net.parameters():
        if p.is_floating_point():
            return p.dtype
    return default


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """Floating-point tensors (also inside dicts) in the network's dtype; the rest as is."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, Mapping):
        return {k: _cast(v, dtype) for k, v in value.items()}
    return value


class _TimestepDenoiser(nn.Module):
    """What every wrapped discrete-timestep network shares: diffsci time t -> timestep
    tau = t N - 1, the call in the network's dtype, ``cond`` -> keyword arguments, a
    learned variance split off, and the output of ``prediction_type`` -> x0.

    Subclasses say which keyword a tensor ``cond`` stands for, which keywords the
    network cannot run without, and how to call it (:meth:`_call`).
    """

    def __init__(
        self,
        net: nn.Module,
        scheduler: Any,
        prediction_type: str | None,
        tensor_cond: str | None,
        required_cond: tuple[str, ...],
    ) -> None:
        super().__init__()
        self.net = net
        self.process = vp_of_scheduler(scheduler)
        self.n_train = len(_alphas_cumprod(scheduler))
        self.prediction = _prediction(scheduler, prediction_type)
        self.tensor_cond, self.required_cond = tensor_cond, required_cond

    def _call(self, x: torch.Tensor, tau: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        t = batch_time(t, x)
        lo, hi = self.process.t_min, self.process.t_max
        if bool(((t < lo - 1e-9) | (t > hi + 1e-9)).any()):
            raise ValueError(
                f"diffsci time t must lie in [1/N, 1] = [{lo:g}, {hi:g}], got {t.tolist()}; "
                "convert a library timestep with time_of_timestep"
            )
        # float32, as the libraries embed their integer timesteps (exact at t = (tau+1)/N)
        tau = timestep_of_time(t, self.n_train).float()
        dtype = _param_dtype(self.net, x.dtype)
        out = self._call(x.to(dtype), tau, _cast(self._cond_kwargs(cond), dtype))
        return to_x0(self._mean(out, x).to(x.dtype), self.prediction, x, t, self.process)

    def _cond_kwargs(self, cond: Any) -> dict[str, Any]:
        name = type(self.net).__name__
        if cond is None:
            kwargs: dict[str, Any] = {}
        elif isinstance(cond, Mapping):
            kwargs = dict(cond)
        elif isinstance(cond, torch.Tensor):
            if self.tensor_cond is None:
                raise ValueError(
                    f"this {name} is unconditional: a tensor cond means nothing to it; "
                    "pass a dict for other keyword arguments"
                )
            kwargs = {self.tensor_cond: cond}
        else:
            raise ValueError(f"cond must be a tensor or a dict of keyword arguments, got {cond!r}")
        missing = [k for k in self.required_cond if kwargs.get(k) is None]
        if missing:
            raise ValueError(
                f"this {name} is conditional and needs {', '.join(missing)}: pass cond= a "
                f"tensor (taken as {self.tensor_cond}) or a dict of keyword arguments"
            )
        return kwargs

    def _mean(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The prediction; of a learned-variance output [prediction, variance] (2C
        channels for C), its first half (Nichol & Dhariwal 2021, Sec. 3.1)."""
        if out.shape == x.shape:
            return out
        c = x.shape[1]
        if out.shape[:1] + out.shape[2:] == x.shape[:1] + x.shape[2:] and out.shape[1] == 2 * c:
            return out[:, :c]
        raise ValueError(
            f"{type(self.net).__name__} returned shape {tuple(out.shape)} for an input of "
            f"shape {tuple(x.shape)}: neither the same shape nor a learned variance (2C channels)"
        )


class DiffusersDenoiser(_TimestepDenoiser):
    """A diffusers ``UNet2DModel`` / ``UNet2DConditionModel`` as a diffsci denoiser.

    ``D = DiffusersDenoiser(unet, scheduler)``; ``D.process`` is the VP of the scheduler's
    ``alphas_cumprod`` (``VP.from_alphas_cumprod``) and ``D(x, t, cond=None)`` returns x0:
    the UNet sees timestep tau = t N - 1 (float32; integer on the training grid
    t = (tau+1)/N) and ``x`` in its own dtype, and its ``.sample`` of the scheduler's
    ``prediction_type`` (epsilon / v_prediction / sample, or ``prediction_type=``) is
    converted to x0 in ``x``'s dtype (Ho et al. 2020, eq. 15; Salimans & Ho 2022, eq. 8).

    ``cond``: a tensor is ``encoder_hidden_states`` for a cross-attention UNet
    (``UNet2DConditionModel``) and ``class_labels`` for a class-conditional
    ``UNet2DModel``; a dict is passed as keyword arguments (``added_cond_kwargs``, ...).

    A learned-variance UNet (out_channels = 2 in_channels: IF, improved DDPM) is used
    through its first half, the prediction; the variance half is dropped, as diffusers'
    pipelines drop it for DDIM: diffsci's samplers fix their own variances.
    """

    def __init__(self, unet: nn.Module, scheduler: Any, prediction_type: str | None = None):
        ehs = inspect.signature(unet.forward).parameters.get("encoder_hidden_states")
        required: tuple[str, ...] = ()
        if ehs is not None and ehs.default is inspect.Parameter.empty:
            required += ("encoder_hidden_states",)
        if getattr(unet, "class_embedding", None) is not None:
            required += ("class_labels",)
        super().__init__(unet, scheduler, prediction_type, (required or (None,))[0], required)

    def _call(self, x: torch.Tensor, tau: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        return self.net(x, timestep=tau, **kwargs).sample


class MonaiDenoiser(_TimestepDenoiser):
    """A MONAI ``DiffusionModelUNet`` with its ``DDPMScheduler`` / ``DDIMScheduler`` as a
    diffsci denoiser.

    As :class:`DiffusersDenoiser`: the model is called as
    ``model(x, timesteps=tau, context=..., class_labels=...)`` with tau = t N - 1, and its
    output of the scheduler's ``prediction_type`` is converted to x0 exactly as the
    scheduler's ``step`` forms ``pred_original_sample``. A tensor ``cond`` is ``context``
    for a ``with_conditioning`` model and ``class_labels`` for a class-conditional one;
    a dict is passed as keyword arguments.
    """

    def __init__(self, model: nn.Module, scheduler: Any, prediction_type: str | None = None):
        required: tuple[str, ...] = ()
        if getattr(model, "with_conditioning", False):
            required += ("context",)
        if getattr(model, "num_class_embeds", None) is not None:
            required += ("class_labels",)
        super().__init__(model, scheduler, prediction_type, (required or (None,))[0], required)

    def _call(self, x: torch.Tensor, tau: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        return self.net(x, timesteps=tau, **kwargs)
