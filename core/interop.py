"""Interop with diffusers and MONAI: their models as diffsci denoisers, their schedulers
driven by a diffsci denoiser.

diffusers' discrete checkpoints live on integer timesteps tau = 0..N-1 with
``alphas_cumprod[tau]``; diffsci's ``VP.from_alphas_cumprod`` puts them at continuous
times t = (tau + 1) / N (DPM-Solver's convention), so t_max = 1 is timestep N-1 and
t_min = 1/N is timestep 0. Fractional timesteps (Karras or Euler grids) are mapped to a
noise level as diffusers maps them back, by interpolating log sigma_VE linearly between
integer timesteps (the inverse of ``EulerDiscreteScheduler._sigma_to_t``).

diffusers and MONAI are optional (``pip install diffsci[interop]``); they are imported
only when one of these functions runs.
"""

from __future__ import annotations

from typing import Any

import torch

from .parameterization import from_x0
from .processes import VP

__all__ = [
    "vp_of_scheduler",
    "time_of_timestep",
    "timestep_of_time",
    "scheduler_times",
    "run_diffusers_scheduler",
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
    grid is its timesteps followed by the final alpha (``set_alpha_to_one=False`` ends at
    timestep 0, i.e. t_min).
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
    if getattr(scheduler.config, "set_alpha_to_one", False):
        raise ValueError("DDIM with set_alpha_to_one=True ends at alpha = 1 (t = 0); set it False")
    ts = time_of_timestep(scheduler, scheduler.timesteps.double())
    return torch.cat([ts, ts.new_tensor([process.t_min])])


def run_diffusers_scheduler(
    scheduler: Any,
    denoiser: Any,
    x1: torch.Tensor,
    num_inference_steps: int,
    cond: Any = None,
) -> tuple[torch.Tensor, int]:
    """Run a diffusers scheduler's own sampling loop with a diffsci denoiser as its model.

    ``x1`` is VP-scaled noise at the scheduler's first time (``t_max``); the model sees
    what a diffusers UNet would (the scaled input and the timestep) and answers in the
    scheduler's ``prediction_type`` from ``denoiser(x, t)``. Sigma-based schedulers
    (Euler, Heun) carry x_VE = x_VP sqrt(1 + sigma^2); the result is returned VP-scaled.

    Returns (x at the scheduler's final time, number of model calls).
    """
    process = vp_of_scheduler(scheduler)
    pred = PREDICTION_TYPES.get(scheduler.config.prediction_type)
    if pred is None:
        raise ValueError(f"unsupported prediction_type {scheduler.config.prediction_type!r}")
    scheduler.set_timesteps(num_inference_steps)
    sigma_based = float(scheduler.init_noise_sigma) != 1.0
    x = x1 * float(scheduler.init_noise_sigma) if sigma_based else x1.clone()
    calls = 0
    for tau in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, tau)
        t = time_of_timestep(scheduler, tau).to(x.device)
        tb = t.expand(x.shape[0])
        x0 = denoiser(x_in, tb) if cond is None else denoiser(x_in, tb, cond=cond)
        out = from_x0(x0, pred, x_in, tb, process)
        calls += 1
        x = scheduler.step(out, tau, x).prev_sample
    if sigma_based:
        sig_end = float(scheduler.sigmas[-1])
        x = x / (1.0 + sig_end**2) ** 0.5
    return x, calls
