"""diffsci.restoration: measurement operators and posterior samplers for super-resolution,
inpainting, deblurring and denoising (RED-Diff, ensemble SMC, DPS)."""

from .bcdm import BoundarySearch, boundary_scores, sample_with_boundary, search_boundary
from .cascade import CoarseGuidedInpainting, cascade, coarse_problem
from .cow import cow, cow_levels
from .operators import (
    Blur,
    Denoising,
    Dense,
    Identity,
    Inpainting,
    LinearOperator,
    SuperResolution,
    bicubic_matrix,
    box_mask,
    gaussian_kernel,
    motion_kernel,
    random_mask,
)
from .oracle import OracleProblem, mcgdiff_prior, mcgdiff_problem
from .posterior import (
    POSTERIOR_SAMPLERS,
    Posterior,
    check_problem,
    ddrm,
    dps,
    pigdm,
    posterior_sample,
    register_posterior,
)
from .reddiff import reddiff, reddiff_loss, snr_weight
from .smc import afdps, mcgdiff

__all__ = [
    "LinearOperator",
    "Identity",
    "Denoising",
    "Inpainting",
    "SuperResolution",
    "Blur",
    "Dense",
    "box_mask",
    "random_mask",
    "gaussian_kernel",
    "motion_kernel",
    "bicubic_matrix",
    "OracleProblem",
    "mcgdiff_prior",
    "mcgdiff_problem",
    "Posterior",
    "POSTERIOR_SAMPLERS",
    "register_posterior",
    "posterior_sample",
    "check_problem",
    "dps",
    "ddrm",
    "pigdm",
    "reddiff",
    "reddiff_loss",
    "snr_weight",
    "cow",
    "cow_levels",
    "cascade",
    "coarse_problem",
    "CoarseGuidedInpainting",
    "BoundarySearch",
    "boundary_scores",
    "search_boundary",
    "sample_with_boundary",
    "mcgdiff",
    "afdps",
]
