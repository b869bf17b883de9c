"""Time-step search: the grid that makes a given solver most accurate at a given NFE.

A fixed family (uniform, logsnr, karras, ...) is a guess; at NFE 5-10 the error of a
multistep solver depends strongly on where its few steps fall. Following the idea of
learning the discretisation against a converged solve (LD3, Tong et al. 2024; AYS, Sabour
et al. 2024), ``search_schedule`` minimises, over the interior grid points, the mean
squared distance between the solver's output and a *teacher* (a converged solve of the
same ODE from the same noise):

    min_theta  mean_i || solve(x1_i; grid(theta), solver, nfe) - x_teacher_i ||^2

Two parameterisations, both strictly monotone with fixed ends and optimised
derivative-free (Nelder-Mead; the objective is only piecewise smooth where trajectories
switch modes):

- ``"warp"`` (default, 2 parameters): the ``init`` schedule read at warped positions
  w_k = 1 - (1 - (k/N)^a)^b (a Kumaraswamy CDF; a = b = 1 is ``init`` itself);
- ``"free"`` (N - 1 parameters): lambda = log_snr / 2 by positive increments,
  lambda_k = lambda_0 + (lambda_N - lambda_0) cumsum(softmax(theta))_k.

On Gaussian mixtures with a few hundred search samples, "free" fits the search batch far
better than it generalises (errors on fresh noise can even grow at NFE 10), "warp" much
less so: measured in benchmarks/RESULTS.md. Search on one batch of noise and report errors on
another: the grid is a property of (model, solver, NFE), reused for every later sample.
Save it with ``save_schedule`` and pass the file as ``schedule=`` to ``sample``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .processes import Process
from .samplers import sample, solvers
from .schedules import time_grid
from .utils import atomic_write_text, check_positive_int

__all__ = ["search_schedule", "save_schedule", "SearchResult"]


@dataclass
class SearchResult:
    grid: torch.Tensor  # the best decreasing float64 time grid found
    loss: float  # its mean squared error to the teacher on the search batch
    init_loss: float  # the same for the ``init`` schedule
    evaluations: int  # sampler runs spent


def search_schedule(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    x1: torch.Tensor,
    solver: str = "unipc",
    nfe: int = 10,
    target: torch.Tensor | None = None,
    init: str = "uniform",
    max_evals: int = 300,
    teacher: str = "dpm++3m",
    teacher_nfe: int = 200,
    rho: float = 7.0,
    parameterization: str = "warp",
    **options: Any,
) -> SearchResult:
    """Search the time grid of ``solver`` at ``nfe`` on the noise batch ``x1``.

    Args:
        denoiser, process: as for ``sample``.
        x1: noise at t_max used for the search (e.g. 64-256 samples).
        target: the converged end states from ``x1``; default: ``teacher`` at
            ``teacher_nfe`` (``dpm++3m``, third order, is converged to ~1e-5 at 200 on
            smooth problems), or pass an exact solve (e.g. ``gmm.reference_solve``).
        init: the schedule to start from (any name ``time_grid`` accepts).
        parameterization: "warp" (2 parameters, default) or "free" (one per step).
        max_evals: the budget of sampler runs (each costs ``nfe`` denoiser calls).
        **options: solver options, passed to every run.
    """
    if solver not in solvers():
        raise ValueError(f"unknown solver {solver!r}; available: {sorted(solvers())}")
    spec = solvers()[solver]
    if spec.stochastic or spec.adaptive:
        raise ValueError(f"search_schedule needs a deterministic fixed-step solver, not {solver!r}")
    check_positive_int("max_evals", max_evals)
    with torch.no_grad():
        if target is None:
            target = sample(denoiser, process, x1, teacher, nfe=teacher_nfe)
        if target.shape != x1.shape:
            raise ValueError(f"target has shape {tuple(target.shape)}, x1 {tuple(x1.shape)}")
        steps = spec.steps(nfe, **options)
        grid0 = time_grid(process, steps, init, rho=rho)
        if parameterization == "warp":
            fine = 0.5 * process.log_snr(time_grid(process, 4096, init, rho=rho)).numpy()
            u_fine = np.linspace(0.0, 1.0, len(fine))
            u = np.linspace(0.0, 1.0, steps + 1)
            theta0 = np.zeros(2)  # log a, log b

            def lambdas(theta: np.ndarray) -> np.ndarray:
                a, b = np.exp(np.clip(theta, -3.0, 3.0))
                w = 1.0 - (1.0 - u**a) ** b
                return np.interp(w, u_fine, fine)

        elif parameterization == "free":
            lam = (0.5 * process.log_snr(grid0)).numpy()
            inc = np.diff(lam) / (lam[-1] - lam[0])
            theta0 = np.log(np.maximum(inc, 1e-12))
            theta0 = theta0[1:] - theta0[0]  # the first logit is fixed at 0 (softmax's shift)

            def lambdas(theta: np.ndarray) -> np.ndarray:
                logits = np.concatenate([[0.0], theta])
                w = np.exp(logits - logits.max())
                cum = np.concatenate([[0.0], np.cumsum(w / w.sum())])
                return lam[0] + (lam[-1] - lam[0]) * cum

        else:
            raise ValueError(f"parameterization must be 'warp' or 'free', got {parameterization!r}")

        def grid(theta: np.ndarray) -> torch.Tensor:
            ts = process.t_of_log_snr(2.0 * torch.as_tensor(lambdas(theta), dtype=torch.float64))
            ts[0], ts[-1] = grid0[0], grid0[-1]
            return ts

        best = {"loss": math.inf, "grid": grid0, "evals": 0}

        def loss(theta: np.ndarray) -> float:
            best["evals"] += 1
            ts = grid(theta)
            try:
                x = sample(denoiser, process, x1, solver, nfe=nfe, schedule=ts, **options)
            except (ValueError, FloatingPointError):  # a degenerate trial grid: reject it
                return math.inf
            value = float((x.double() - target.double()).pow(2).mean())
            if not math.isfinite(value):
                return math.inf
            if value < best["loss"]:
                best.update(loss=value, grid=ts)
            return value

        init_loss = loss(theta0)
        if len(theta0) > 0 and max_evals > 1:
            from scipy.optimize import minimize

            simplex = [theta0] + [theta0 + 0.5 * e for e in np.eye(len(theta0))]
            minimize(
                loss,
                theta0,
                method="Nelder-Mead",
                options=dict(
                    maxfev=max_evals - 1, initial_simplex=np.array(simplex), xatol=1e-4, fatol=0.0
                ),
            )
    return SearchResult(best["grid"], best["loss"], init_loss, best["evals"])


def save_schedule(path, grid: torch.Tensor | list[float]) -> None:
    """Write a grid as a JSON list of times, atomically (``sample(schedule=path)`` reads it)."""
    values = [float(t) for t in torch.as_tensor(grid, dtype=torch.float64)]
    if len(values) < 2 or any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError("a schedule must hold at least two strictly decreasing times")
    atomic_write_text(path, json.dumps(values))
