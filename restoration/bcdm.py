"""Optimal boundary conditions for diffusion-ODE restoration (BCDM; Ma, Yang, Yang, Fu &
Liu, ICLR 2024, "Solving Diffusion ODEs with Optimal Boundary Conditions for Better Image
Super-Resolution").

With a deterministic (ODE) sampler the restoration is a function x0 = h(x_T, y) of the
boundary condition x_T. The paper shows (Sec. 3.2) that an approximately optimal x_T is
shared by different low-resolution inputs y, and finds it (Sec. 3.3) by Monte-Carlo search:
draw R boundary conditions from the prior, restore a reference set of (y_i, x_i) pairs with
each, and keep the one with the best average quality (the paper scores LPIPS; here the
average PSNR, or the MSE). That x_T is then reused, plug-and-play, for new measurements.

Here h is any registered posterior sampler driven by the unconditional denoiser (the paper
uses a conditional SR network with DDIM / DPM-Solver): by default PiGDM with eta = 0, whose
every step is a deterministic DDIM step. A sampler that draws noise (DDRM, which always
does in its observed coordinates) is run with a generator reseeded to ``seed`` for every
chunk of candidates, so its score is a function of x_T and of that seed. With a learned
prior give PiGDM ``weight="paper"`` (as ``evaluate.image_options`` does): its default
Tweedie weight is unstable there, worst at eta = 0 (see :func:`~.posterior.pigdm`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from diffsci.core.processes import Process
from diffsci.core.utils import check_positive_int

from .operators import LinearOperator
from .posterior import POSTERIOR_SAMPLERS, Posterior, posterior_sample

__all__ = ["BoundarySearch", "boundary_scores", "search_boundary", "sample_with_boundary"]

_F64 = torch.float64
METRICS = ("psnr", "mse")


@dataclass
class BoundarySearch:
    """The result of :func:`search_boundary`: the chosen boundary ``x_T`` (1, *x_shape),
    every candidate (R, *x_shape) with its mean ``metric`` over the reference set
    ``values`` (R,), the index of the chosen one and the denoiser evaluations spent."""

    x_T: torch.Tensor
    candidates: torch.Tensor
    values: torch.Tensor
    index: int
    metric: str
    evals: int

    @property
    def gain(self) -> float:
        """The chosen candidate's mean metric minus the candidates' average (> 0 is better
        for PSNR; < 0 is better for MSE)."""
        return float(self.values[self.index] - self.values.mean())


def _options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    if method not in POSTERIOR_SAMPLERS:
        raise ValueError(
            f"bcdm: unknown posterior sampler {method!r}; available: {sorted(POSTERIOR_SAMPLERS)}"
        )
    options = dict(options)
    if method in ("pigdm", "ddrm"):
        options.setdefault("eta", 0.0)  # the deterministic (ODE) limit of the DDIM step
    return options


def _check_pairs(A: LinearOperator, ys: torch.Tensor, xs: torch.Tensor) -> None:
    if not isinstance(A, LinearOperator):
        raise ValueError(f"bcdm: A must be a LinearOperator, got {type(A).__name__}")
    A.check_measurement(ys)
    A.check_signal(xs)
    if ys.shape[0] != xs.shape[0]:
        raise ValueError(
            f"bcdm: the reference set needs as many measurements as signals, got "
            f"{ys.shape[0]} and {xs.shape[0]}"
        )


def _metric(x: torch.Tensor, ref: torch.Tensor, metric: str, data_range: float) -> torch.Tensor:
    """(rows,) per-pair MSE or PSNR = 10 log10(data_range^2 / MSE), in float64."""
    mse = (x.to(_F64) - ref.to(_F64)).reshape(x.shape[0], -1).square().mean(1)
    if metric == "mse":
        return mse
    return 10 * torch.log10(data_range**2 / mse.clamp(min=1e-30))


def boundary_scores(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    A: LinearOperator,
    ys: torch.Tensor,
    xs: torch.Tensor,
    candidates: torch.Tensor,
    steps: int,
    method: str = "pigdm",
    metric: str = "psnr",
    data_range: float | None = None,
    seed: int = 0,
    chunk: int | None = None,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Restore every reference measurement ys (N, ...) from every boundary condition in
    ``candidates`` (R, *x_shape) with ``method`` (``steps`` steps) and score it against xs.

    Returns (mean metric per candidate (R,), per-pair metric (R, N), evaluations). PSNR
    uses ``data_range`` (default: max - min of xs). ``chunk`` candidates are restored per
    sampler call (default all), each call with a generator seeded to ``seed``.
    """
    _check_pairs(A, ys, xs)
    A.check_signal(candidates)
    if metric not in METRICS:
        raise ValueError(f"bcdm: metric must be one of {METRICS}, got {metric!r}")
    options = _options(method, options)
    if data_range is None:
        data_range = float(xs.max() - xs.min())
    if not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"bcdm: data_range must be a finite number > 0, got {data_range!r}")
    R, N = candidates.shape[0], ys.shape[0]
    chunk = check_positive_int("chunk", R if chunk is None else chunk)
    per, evals = [], 0
    for lo in range(0, R, chunk):
        c = candidates[lo : lo + chunk]
        n = c.shape[0]
        # one group per reference pair, its K = n rows the candidates (row i*n + j: pair i,
        # candidate j)
        x1 = c.unsqueeze(0).expand(N, *c.shape).reshape(N * n, *c.shape[1:]).contiguous()
        g = torch.Generator(device=c.device).manual_seed(int(seed))
        post = posterior_sample(method, denoiser, process, A, ys, x1, steps, g, **options)
        evals += post.evals
        ref = xs.repeat_interleave(n, 0)
        per.append(_metric(post.x, ref, metric, data_range).view(N, n).T)
    per_pair = torch.cat(per, 0)
    return per_pair.mean(1), per_pair, evals


def search_boundary(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    A: LinearOperator,
    ys: torch.Tensor,
    xs: torch.Tensor,
    steps: int = 20,
    candidates: int = 32,
    generator: torch.Generator | None = None,
    method: str = "pigdm",
    metric: str = "psnr",
    data_range: float | None = None,
    seed: int = 0,
    chunk: int | None = None,
    **options: Any,
) -> BoundarySearch:
    """BCDM's Monte-Carlo search (Ma et al. 2024, Sec. 3.3) of one boundary condition x_T
    shared by all measurements: draw ``candidates`` x_T from ``process.prior`` (with
    ``generator``), restore the reference pairs (ys, xs) with each (``method``, ``steps``
    steps, deterministic by default) and keep the best mean ``metric`` (highest PSNR or
    lowest MSE). Costs candidates * N * steps evaluations for N reference pairs.
    The chosen ``.x_T`` is used on new measurements by :func:`sample_with_boundary`.
    """
    _check_pairs(A, ys, xs)
    R = check_positive_int("candidates", candidates)
    cands = process.prior((R, *A.x_shape), generator=generator, dtype=xs.dtype, device=xs.device)
    values, _, evals = boundary_scores(
        denoiser,
        process,
        A,
        ys,
        xs,
        cands,
        steps,
        method=method,
        metric=metric,
        data_range=data_range,
        seed=seed,
        chunk=chunk,
        **options,
    )
    index = int(values.argmax() if metric == "psnr" else values.argmin())
    return BoundarySearch(cands[index : index + 1].clone(), cands, values, index, metric, evals)


def sample_with_boundary(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    A: LinearOperator,
    y: torch.Tensor,
    x_T: torch.Tensor | BoundarySearch,
    steps: int,
    method: str = "pigdm",
    seed: int = 0,
    **options: Any,
) -> Posterior:
    """Restore new measurements y (G, ...) from the shared boundary condition ``x_T``
    ((1, *x_shape) or a :class:`BoundarySearch`): one row per measurement, with the
    sampler and step count the search used (and a generator seeded to ``seed``)."""
    if isinstance(x_T, BoundarySearch):
        x_T = x_T.x_T
    options = _options(method, options)
    A.check_signal(x_T)
    if x_T.shape[0] != 1:
        raise ValueError(f"bcdm: x_T must hold one boundary condition, got {x_T.shape[0]}")
    x1 = x_T.expand(y.shape[0], *x_T.shape[1:]).contiguous()
    g = torch.Generator(device=x_T.device).manual_seed(int(seed))
    return posterior_sample(method, denoiser, process, A, y.to(x_T.dtype), x1, steps, g, **options)
