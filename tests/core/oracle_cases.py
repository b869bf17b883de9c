"""Shared set-up of the solver tests: processes, diffusers' DDPM schedule, the smooth
oracle used for order tests, and small helpers."""

import numpy as np
import torch

from diffsci.core import EDM, VP, GaussianMixture

# DDPM's 1000-step linear betas, as diffusers builds them
ac = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
PROCESSES = {"VP": VP(), "EDM": EDM(), "VP-discrete": VP.from_alphas_cumprod(ac)}
DIFFUSERS_KW = dict(
    num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear"
)


def smooth_gmm() -> GaussianMixture:
    """Four wide components in 2-D: smooth enough for clean convergence orders."""
    return GaussianMixture.random(
        4, 2, generator=torch.Generator().manual_seed(7), scale=(0.3, 0.6)
    )


def slope(nfes, errs) -> float:
    """Empirical order: -slope of log(error) against log(NFE)."""
    return -np.polyfit(np.log(nfes), np.log(errs), 1)[0]


def float64_sigmas(cls):
    """The same diffusers scheduler with its sigmas kept in float64 (it casts to float32)."""

    class Float64(cls):
        def set_timesteps(self, *args, **kwargs):
            super().set_timesteps(*args, **kwargs)
            self.sigmas = self.sigmas.double()

    return Float64
