"""Conversions between network outputs, and the ``Denoiser`` wrapper.

For x_t = alpha x0 + sigma eps the five usual targets are linear in (x0, eps):

    x0                      the data prediction (the denoiser, EDM / k-diffusion)
    eps = (x_t - alpha x0) / sigma            (DDPM, Ho et al. 2020)
    v   = alpha eps - sigma x0                (Salimans & Ho 2022, eq. 8 ff.)
    score = -eps / sigma                      (Tweedie; Gaussian kernels only)
    velocity = alpha' x0 + sigma' eps         (probability-flow / flow-matching velocity)

so each converts to and from x0 given (x_t, t) for any process. The probability-flow
ODE of every Gaussian process is dx/dt = velocity (it equals f x - g^2/2 score).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .processes import Process
from .utils import batch_time, coef

__all__ = ["PREDICTIONS", "to_x0", "from_x0", "to_eps", "Denoiser", "DenoiserFn"]

PREDICTIONS = ("x0", "eps", "v", "score", "velocity")

#: A denoiser: D(x_t, t, cond=None) -> x0_hat, t a float64 tensor of shape (B,).
DenoiserFn = Callable[..., torch.Tensor]


def _check(kind: str, process: Process) -> None:
    if kind not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {kind!r}; choose one of {PREDICTIONS}")
    if kind == "score" and not process.gaussian:
        raise ValueError(
            f"score = -eps/sigma holds only for Gaussian kernels, not {type(process).__name__}"
        )


def to_x0(
    pred: torch.Tensor, kind: str, x: torch.Tensor, t: torch.Tensor, process: Process
) -> torch.Tensor:
    """Convert a prediction of type ``kind`` at (x_t, t) to the data prediction x0."""
    _check(kind, process)
    if kind == "x0":
        return pred
    t = batch_time(t, x)
    a, s = coef(process.alpha(t), x), coef(process.sigma(t), x)
    if kind == "eps":
        return (x - s * pred) / a
    if kind == "score":
        return (x + s**2 * pred) / a
    if kind == "v":
        # [[a, s], [-s, a]] (x0, eps) = (x, v): invert the 2x2 system
        return (a * x - s * pred) / (a**2 + s**2)
    # velocity: [[a, s], [a', s']] (x0, eps) = (x, u)
    da, ds = coef(process.d_alpha(t), x), coef(process.d_sigma(t), x)
    return (ds * x - s * pred) / (a * ds - s * da)


def from_x0(
    x0: torch.Tensor, kind: str, x: torch.Tensor, t: torch.Tensor, process: Process
) -> torch.Tensor:
    """Convert a data prediction x0 at (x_t, t) to a prediction of type ``kind``."""
    _check(kind, process)
    if kind == "x0":
        return x0
    t = batch_time(t, x)
    a, s = coef(process.alpha(t), x), coef(process.sigma(t), x)
    eps = (x - a * x0) / s
    if kind == "eps":
        return eps
    if kind == "score":
        return -eps / s
    if kind == "v":
        return a * eps - s * x0
    da, ds = coef(process.d_alpha(t), x), coef(process.d_sigma(t), x)
    return da * x0 + ds * eps


def to_eps(x0: torch.Tensor, x: torch.Tensor, t: torch.Tensor, process: Process) -> torch.Tensor:
    """eps_hat = (x_t - alpha x0_hat) / sigma."""
    return from_x0(x0, "eps", x, t, process)


class Denoiser(nn.Module):
    """Wrap a network ``net(x, t, cond=None)`` of any output type as a denoiser D(x_t, t, cond).

    With ``precondition="edm"`` (Karras et al. 2022, Table 1, generalised to any
    process through the scaled variables x/alpha and sigma~ = sigma/alpha):

        c_skip = sd^2 / (s~^2 + sd^2),   c_out = s~ sd / sqrt(s~^2 + sd^2),
        c_in = 1 / sqrt(s~^2 + sd^2),    c_noise = log(s~) / 4,
        D(x_t, t) = c_skip x_t/alpha + c_out F(c_in x_t/alpha, c_noise),

    and the network F sees c_noise as its time input. Otherwise it sees t itself and
    its output of type ``prediction`` is converted to x0.
    """

    def __init__(
        self,
        net: nn.Module,
        process: Process,
        prediction: str = "eps",
        precondition: str | None = None,
        sigma_data: float = 0.5,
    ) -> None:
        super().__init__()
        _check(prediction, process)
        if precondition not in (None, "edm"):
            raise ValueError(f"unknown precondition {precondition!r}: use None or 'edm'")
        if precondition == "edm" and prediction != "x0":
            raise ValueError(
                "EDM preconditioning predicts x0 through c_skip/c_out: set prediction='x0'"
            )
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.net, self.process = net, process
        self.prediction, self.precondition = prediction, precondition
        self.sigma_data = float(sigma_data)

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        t = batch_time(t, x)
        if self.precondition == "edm":
            sd = self.sigma_data
            a = coef(self.process.alpha(t), x)
            st = self.process.sigma(t) / self.process.alpha(t)  # float64, (B,)
            c_skip = coef(sd**2 / (st**2 + sd**2), x)
            c_out = coef(st * sd / torch.sqrt(st**2 + sd**2), x)
            c_in = coef(1.0 / torch.sqrt(st**2 + sd**2), x)
            c_noise = (torch.log(st) / 4.0).to(x.dtype)
            return c_skip * x / a + c_out * self._net(c_in * x / a, c_noise, cond)
        out = self._net(x, t.to(x.dtype), cond)
        return to_x0(out, self.prediction, x, t, self.process)

    def _net(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        out = self.net(x, t) if cond is None else self.net(x, t, cond)
        if out.shape != x.shape:
            raise ValueError(
                f"network output shape {tuple(out.shape)} != input shape {tuple(x.shape)}"
            )
        return out

    def config(self) -> dict[str, Any]:
        """Plain data that rebuilds this denoiser (network and process included)."""
        if not hasattr(self.net, "config"):
            raise TypeError(f"{type(self.net).__name__} has no config(); it cannot be rebuilt")
        return {
            "net": self.net.config(),
            "process": self.process.config(),
            "prediction": self.prediction,
            "precondition": self.precondition,
            "sigma_data": self.sigma_data,
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Denoiser:
        from .config import from_config

        return cls(
            from_config(cfg["net"]),
            from_config(cfg["process"]),
            prediction=cfg["prediction"],
            precondition=cfg["precondition"],
            sigma_data=cfg["sigma_data"],
        )
