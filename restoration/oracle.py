"""The exact-posterior test problem of MCGdiff (Cardoso et al. 2024, "Monte Carlo guided
diffusion for Bayesian linear inverse problems", Sec. 4.1).

Prior: a 25-component Gaussian mixture with identity covariances and means
(8i, 8j, 8i, 8j, ...) (the pair repeated d/2 times) for i, j in {-2, ..., 2}, weights
proportional to squared standard normals. Measurement: ``Dense.random_mcgdiff`` (random
singular vectors, singular values sorted U(0, 1), sigma_y = U(0, 1) * the largest), and
y = A x* + sigma_y n for x* drawn from the prior. The posterior is again a Gaussian
mixture, known exactly (``GaussianMixture.posterior``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffsci.core.analytic import GaussianMixture
from diffsci.core.utils import check_positive_int

from .operators import Dense

__all__ = ["OracleProblem", "mcgdiff_problem", "mcgdiff_prior"]

_F64 = torch.float64


def mcgdiff_prior(d: int, generator: torch.Generator | None = None) -> GaussianMixture:
    """The 25-component mixture of the MCGdiff protocol in dimension d (even)."""
    d = check_positive_int("d", d)
    if d % 2:
        raise ValueError(f"mcgdiff_prior: d must be even (the pair of means repeats), got {d}")
    grid = torch.arange(-2, 3, dtype=_F64) * 8
    pairs = torch.cartesian_prod(grid, grid)  # (25, 2)
    means = pairs.repeat(1, d // 2)
    weights = torch.randn(25, generator=generator, dtype=_F64).square()
    return GaussianMixture(weights / weights.sum(), means, torch.ones(25, d, dtype=_F64))


@dataclass
class OracleProblem:
    prior: GaussianMixture
    A: Dense
    y: torch.Tensor  # (1, d_y)
    posterior: GaussianMixture
    x_true: torch.Tensor  # (1, d)


def mcgdiff_problem(d: int, d_y: int, seed: int) -> OracleProblem:
    """One random (prior, A, y, exact posterior) of the protocol, fully determined by seed."""
    g = torch.Generator().manual_seed(seed)
    prior = mcgdiff_prior(d, g)
    A = Dense.random_mcgdiff(d, d_y, g)
    x = prior.sample(1, g)
    y = A(x) + A.sigma_y * torch.randn(1, d_y, generator=g, dtype=_F64)
    post = prior.posterior(A.matrix(), y[0], A.sigma_y)
    return OracleProblem(prior, A, y, post, x)
