"""Coarse-to-fine posterior sampling for inpainting with one unconditional prior.

A hole much larger than the patches the prior was trained on is filled by sampling the
posterior in two factors,

    p(x | y) = integral p(x | y, c) p(c | y) dc,      c = P x,

with P the f x f block average (f = ``factor``). The coarse image c is a 1/f-size
image, where the hole is f times smaller relative to the prior's patch size; the
natural-image prior is applied there as is (natural images are close to scale
invariant, and the network is fully convolutional). Stage 1 samples c from p(c | y):
an inpainting problem on the coarse grid whose observed pixels are the blocks that y
observes entirely, their noise std sigma_y / f (the mean of f^2 independent noises).
Stage 2 samples x given y and that c: the fine problem observes y's pixels and also the
block means of c on the blocks y does not observe entirely (the operator
:class:`CoarseGuidedInpainting`). Both stages run one registered posterior sampler,
by default DPS. The stage-2 operator has forward and adjoint but no SVD, so the
sampler must be one that needs only those (DPS); DDRM, PiGDM, RED-Diff and the SMC
samplers refuse it with a clear error. A weighted stage-1 ensemble is resampled to
equal weights first, so each fine sample has its own coarse sample (ancestral
sampling of the joint, as cascaded diffusion models do with a second, conditional
network; here the same unconditional network serves both levels).

Why: the fine-scale samplers fill a hole of half the image side with the surrounding
texture, and their sample mean is worse in the hole than the biharmonic fill
(benchmarks/RESULTS.md, restoration passes 2-9), while on a hole at half the prior's
patch size DPS beats the classical fills (fifth pass, ``--crop 32``). The cascade
moves the hard, large-scale part of the problem to the scale the prior handles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from diffsci.core.processes import Process
from diffsci.core.utils import check_positive_int

from .operators import Inpainting, LinearOperator, SuperResolution
from .posterior import POSTERIOR_SAMPLERS, Posterior, check_problem, register_posterior

__all__ = ["CoarseGuidedInpainting", "coarse_problem", "cascade"]


def _block_means(x_shape, factor: int) -> SuperResolution:
    """P, the factor x factor block mean over the last two dims: DDRM's avgpool
    super-resolution operator (its adjoint spreads each value / factor^2 over its block)."""
    return SuperResolution(x_shape, factor, kind="avgpool")


def _observed_blocks(mask: torch.Tensor, P: SuperResolution) -> torch.Tensor:
    """On P's coarse grid: True where ``mask`` observes the whole block."""
    return P(mask.float()[None])[0] > 1 - 1e-6


def _check_factor(A: LinearOperator, factor: int, who: str) -> int:
    factor = check_positive_int("factor", factor)
    if not isinstance(A, Inpainting):
        raise ValueError(
            f"{who} inpaints: A must be an Inpainting operator, got {type(A).__name__}"
        )
    if len(A.x_shape) < 2 or any(n % factor for n in A.x_shape[-2:]):
        raise ValueError(
            f"{who}: the last two dims of x_shape {A.x_shape} must be divisible by factor={factor}"
        )
    return factor


def coarse_problem(
    A: Inpainting, y: torch.Tensor, factor: int = 2
) -> tuple[Inpainting, torch.Tensor]:
    """The stage-1 problem: (A_c, y_c) on the 1/factor grid. A block is observed when y
    observes all its pixels; its measurement is the mean of y there, noise std
    sigma_y / factor."""
    factor = _check_factor(A, factor, "coarse_problem")
    A.check_measurement(y)
    P = _block_means(A.x_shape, factor)
    full = _observed_blocks(A.mask, P)
    if not bool(full.any()):
        raise ValueError(
            f"coarse_problem: no {factor}x{factor} block is entirely observed; "
            "use a smaller factor or a fine-scale sampler"
        )
    Ac = Inpainting(full, A.sigma_y / factor)
    return Ac, Ac(P(A.fill(y)))


class CoarseGuidedInpainting(LinearOperator):
    """The stage-2 measurement: y = [x at ``mask``; block means of x (factor x factor)
    on the blocks that are not entirely observed], flattened, one noise level sigma_y.

    The two parts are the rows of an inpainting selection and of a block average; on a
    block-aligned hole they are orthogonal. Forward and adjoint only (no SVD): samplers
    that need one (DDRM, PiGDM) refuse it with a clear error.
    """

    def __init__(self, mask: torch.Tensor, factor: int, sigma_y: float = 0.0) -> None:
        self.pixels = Inpainting(mask, sigma_y)
        self.factor = _check_factor(self.pixels, factor, "CoarseGuidedInpainting")
        self.pool = _block_means(mask.shape, self.factor)
        self.blocks = ~_observed_blocks(mask, self.pool)  # coarse, True = guided
        n = self.pixels.y_dim + int(self.blocks.sum())
        super().__init__(tuple(mask.shape), (n,), sigma_y)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.pool(x).reshape(x.shape[0], -1)
        sel = self.blocks.flatten().to(x.device)
        return torch.cat([self.pixels._forward(x), c[:, sel]], 1)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        n = self.pixels.y_dim
        sel = self.blocks.flatten().to(y.device)
        c = y.new_zeros(y.shape[0], sel.numel())
        c[:, sel] = y[:, n:]
        c = c.reshape(y.shape[0], *self.blocks.shape)
        return self.pixels._adjoint(y[:, :n]) + self.pool.adjoint(c)

    def measurement(self, y: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """The stage-2 y from the original measurement y (B, n_obs) and coarse images
        (B, *coarse shape): y's pixels, then coarse's values on the guided blocks."""
        self.pixels.check_measurement(y)
        if tuple(coarse.shape[1:]) != tuple(self.blocks.shape) or coarse.shape[0] != y.shape[0]:
            raise ValueError(
                f"coarse must have shape ({y.shape[0]}, {', '.join(map(str, self.blocks.shape))}), "
                f"got {tuple(coarse.shape)}"
            )
        sel = self.blocks.flatten().to(y.device)
        return torch.cat([y, coarse.reshape(coarse.shape[0], -1)[:, sel].to(y.dtype)], 1)


@register_posterior("cascade")
def cascade(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    A: LinearOperator,
    y: torch.Tensor,
    x1: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    method: str = "dps",
    factor: int = 2,
    coarse_steps: int | None = None,
    **options: Any,
) -> Posterior:
    """Coarse-to-fine inpainting (module docstring): ``method`` (a registered sampler
    that needs no SVD, with ``options``) samples the 1/``factor`` coarse image from the coarse problem in
    ``coarse_steps`` steps (default ``steps``), then the full image given y and that
    coarse image in ``steps`` steps. The coarse start is factor * (block mean of x1),
    exactly N(0, I). ``evals`` counts both stages' denoiser calls (a coarse call costs
    about 1 / factor^2 of a fine one)."""
    who = "cascade"
    if method == who or method not in POSTERIOR_SAMPLERS:
        raise ValueError(
            f"cascade: method must be another registered sampler, got {method!r}; "
            f"available: {sorted(set(POSTERIOR_SAMPLERS) - {who})}"
        )
    factor = _check_factor(A, factor, who)
    Y, _ = check_problem(process, A, y, x1, steps, who)  # y repeated for each of x1's rows
    coarse_steps = check_positive_int(
        "coarse_steps", steps if coarse_steps is None else coarse_steps
    )
    Ac, yc = coarse_problem(A, y, factor)
    x1c = factor * _block_means(A.x_shape, factor)(
        x1
    )  # the mean of factor^2 unit normals, rescaled to unit
    post_c = POSTERIOR_SAMPLERS[method](
        denoiser, process, Ac, yc, x1c, coarse_steps, generator, **options
    ).resample(generator=generator)
    Af = CoarseGuidedInpainting(A.mask, factor, A.sigma_y)
    yf = Af.measurement(Y, post_c.x)
    post_f = POSTERIOR_SAMPLERS[method](denoiser, process, Af, yf, x1, steps, generator, **options)
    return Posterior(post_f.x, y.shape[0], post_c.evals + post_f.evals)
