"""Time grids for samplers: decreasing float64 times from t_max down to t_min.

- ``uniform``: uniform in t;
- ``logsnr``: uniform in log-SNR lambda (DPM-Solver's ``logSNR`` skip type);
- ``karras``: sigma~_i = (s_max^(1/rho) + i/N (s_min^(1/rho) - s_max^(1/rho)))^rho with
  sigma~ = sigma/alpha (Karras et al. 2022, eq. 5), rho = 7 by default;
- ``quadratic``: uniform in sqrt(t) (DPM-Solver's ``time_quadratic``);
- or an explicit decreasing sequence of times (list, tensor or a JSON file of one list).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import torch

from .processes import Process
from .utils import check_positive_int

__all__ = ["SCHEDULES", "time_grid"]

SCHEDULES = ("uniform", "logsnr", "karras", "quadratic")


def _check_grid(ts: torch.Tensor, process: Process) -> torch.Tensor:
    if ts.ndim != 1 or len(ts) < 2:
        raise ValueError("a time grid needs at least two times")
    if not bool(torch.isfinite(ts).all()):
        raise ValueError("a time grid must be finite")
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError("a time grid must be strictly decreasing (from noise t=1 to data t=0)")
    lo, hi = process.t_min, process.t_max
    if ts[-1] < lo - 1e-12 or ts[0] > hi + 1e-12:
        raise ValueError(
            f"a time grid must lie in [t_min, t_max] = [{lo:g}, {hi:g}] of {process!r}, "
            f"got [{float(ts[-1]):g}, {float(ts[0]):g}]"
        )
    return ts


def time_grid(
    process: Process,
    steps: int,
    schedule: str | Sequence[float] | torch.Tensor = "logsnr",
    rho: float = 7.0,
    t_start: float | None = None,
    t_end: float | None = None,
) -> torch.Tensor:
    """``steps + 1`` decreasing float64 times from ``t_start`` (t_max) to ``t_end`` (t_min)."""
    check_positive_int("steps", steps)
    if isinstance(schedule, (str, os.PathLike)) and str(schedule) not in SCHEDULES:
        if not os.path.isfile(schedule):
            raise ValueError(
                f"unknown schedule {schedule!r}: use one of {SCHEDULES}, a list of times "
                "or the path of a JSON file holding one"
            )
        with open(schedule) as f:
            schedule = json.load(f)
    if not isinstance(schedule, str):
        ts = torch.as_tensor(schedule, dtype=torch.float64)
        if len(ts) != steps + 1:
            raise ValueError(
                f"the given schedule has {len(ts)} times, need steps + 1 = {steps + 1}"
            )
        return _check_grid(ts, process)

    t0 = process.t_max if t_start is None else float(t_start)
    t1 = process.t_min if t_end is None else float(t_end)
    if not t0 > t1:
        raise ValueError(f"t_start ({t0}) must exceed t_end ({t1})")
    i = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if schedule == "uniform":
        ts = t0 + i * (t1 - t0)
    elif schedule == "quadratic":
        ts = (math.sqrt(t0) + i * (math.sqrt(t1) - math.sqrt(t0))) ** 2
    else:
        lam0, lam1 = float(process.log_snr(t0)), float(process.log_snr(t1))
        if not (math.isfinite(lam0) and math.isfinite(lam1)):
            raise ValueError(f"schedule {schedule!r} needs a finite log-SNR at both ends")
        if schedule == "logsnr":
            lam = lam0 + i * (lam1 - lam0)
        else:  # karras, in sigma~ = exp(-lambda / 2)
            s0, s1 = math.exp(-lam0 / 2) ** (1 / rho), math.exp(-lam1 / 2) ** (1 / rho)
            lam = -2.0 * rho * torch.log(s0 + i * (s1 - s0))
        ts = process.t_of_log_snr(lam)
    ts[0], ts[-1] = t0, t1  # exact ends despite round-off
    return _check_grid(ts, process)
