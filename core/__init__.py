"""diffsci.core: the shared diffusion core.

Forward processes, the denoiser currency and its parameterizations, samplers behind
one ``sample`` entry point, training losses and loop, the exact Gaussian-mixture
oracle and metrics. See DESIGN.md for the contract.
"""

from . import deis, dpm_solver, momentum, unipc  # noqa: F401  (they register samplers)
from .analytic import GaussianMixture
from .discrete import MarkovChainOracle, MaskedDiffusion, sample_masked
from .guidance import cfg, classifier_guidance, combine, concept_blend, dps, rl_guidance
from .likelihood import bits_per_dim, ode_log_likelihood
from .losses import diffusion_loss, loss_weight
from .metrics import sliced_wasserstein
from .nets import MLP, UNet
from .parameterization import PREDICTIONS, Denoiser, from_x0, to_x0
from .processes import EDM, PFGMPP, VE, VP, Interpolant, Process, SubVP
from .samplers import register_solver, sample, solvers
from .schedules import SCHEDULES, time_grid
from .search import save_schedule, search_schedule
from .superdiff import ito_log_density, superdiff
from .svdd import (
    ValueNet,
    best_of_n,
    fit_value_mc,
    smc_continuous,
    smc_masked,
    svdd_continuous,
    svdd_masked,
)
from .training import TrainConfig, load_denoiser, train

__all__ = [
    "Process",
    "VP",
    "VE",
    "EDM",
    "SubVP",
    "Interpolant",
    "PFGMPP",
    "Denoiser",
    "PREDICTIONS",
    "to_x0",
    "from_x0",
    "GaussianMixture",
    "sliced_wasserstein",
    "sample",
    "solvers",
    "register_solver",
    "SCHEDULES",
    "time_grid",
    "search_schedule",
    "save_schedule",
    "MLP",
    "UNet",
    "diffusion_loss",
    "ode_log_likelihood",
    "cfg",
    "rl_guidance",
    "classifier_guidance",
    "combine",
    "dps",
    "concept_blend",
    "MaskedDiffusion",
    "MarkovChainOracle",
    "sample_masked",
    "superdiff",
    "ito_log_density",
    "svdd_continuous",
    "svdd_masked",
    "fit_value_mc",
    "ValueNet",
    "smc_continuous",
    "smc_masked",
    "best_of_n",
    "bits_per_dim",
    "loss_weight",
    "TrainConfig",
    "train",
    "load_denoiser",
]
