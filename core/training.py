"""One training loop for every denoiser, on Lightning Fabric.

The same call runs on one CPU, several GPUs or several nodes (launch with ``fabric run``
or ``torchrun`` and pass a configured ``Fabric``). All randomness (batches, times, noise)
comes from one ``torch.Generator`` per rank, saved in the checkpoint, so a resumed run
continues bit-for-bit like an uninterrupted one.

A checkpoint is one file: weights, EMA weights, optimizer state, generator states, the
step, the losses so far and the full config that rebuilds the denoiser (no pickled
code). It is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .losses import TIME_SAMPLING, WEIGHTINGS, diffusion_loss
from .parameterization import Denoiser
from .utils import atomic_write, check_positive_int

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "save_checkpoint",
    "load_checkpoint",
    "load_denoiser",
]

FORMAT = "diffsci-checkpoint-v1"


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train` (all serialised into the checkpoint)."""

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    weighting: str = "eps"
    time_sampling: str = "uniform"
    seed: int = 0
    checkpoint_every: int = 500
    lr_schedule: str = "constant"  # or "cosine": lr * (1 + cos(pi step / steps)) / 2

    def validate(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            check_positive_int(f"TrainConfig.{name}", getattr(self, name))
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose one of {WEIGHTINGS}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}: use constant or cosine")
        if self.time_sampling not in TIME_SAMPLING:
            raise ValueError(
                f"unknown time_sampling {self.time_sampling!r}; choose one of {TIME_SAMPLING}"
            )


@dataclass
class TrainResult:
    denoiser: Denoiser  # the trained weights
    ema: Denoiser  # the exponential moving average (usually the better sampler)
    losses: list[float] = field(default_factory=list)
    step: int = 0


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a checkpoint dictionary atomically."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (tensors and plain data only)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a diffsci checkpoint ({FORMAT})")
    return state


def load_denoiser(path: str | os.PathLike, ema: bool = True) -> Denoiser:
    """Rebuild the denoiser stored in a checkpoint, with its EMA weights by default."""
    state = load_checkpoint(path)
    den = Denoiser.from_config(state["config"])
    den.net.load_state_dict(state["ema" if ema else "model"])
    return den.eval()


def _batch(data: Any, n: int, generator: torch.Generator) -> torch.Tensor:
    if callable(data):
        return data(n, generator)
    idx = torch.randint(len(data), (n,), generator=generator)
    return data[idx]


def train(
    denoiser: Denoiser,
    data: torch.Tensor | Callable[[int, torch.Generator], torch.Tensor],
    config: TrainConfig | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    fabric: Any = None,
) -> TrainResult:
    """Train ``denoiser`` with :func:`diffusion_loss` (Adam, EMA, gradient clipping).

    Args:
        denoiser: a :class:`Denoiser` (its network is trained in place).
        data: a tensor of training examples (B, ...) or a callable ``sample(n, generator)``.
        config: hyper-parameters; ``config.steps`` is the total number of steps.
        checkpoint: file to write every ``checkpoint_every`` steps and at the end.
        resume: continue from ``checkpoint`` if it exists (exactly where it stopped).
        fabric: a ``lightning.fabric.Fabric``; default one CPU process.
    """
    from lightning.fabric import Fabric

    config = config or TrainConfig()
    config.validate()
    if not isinstance(denoiser, Denoiser):
        raise TypeError("train() needs a diffsci Denoiser (it owns the process and the config)")
    if not callable(data) and (not isinstance(data, torch.Tensor) or len(data) == 0):
        raise ValueError("data must be a non-empty tensor or a callable sample(n, generator)")
    fabric = fabric or Fabric(accelerator="cpu", devices=1)
    process = denoiser.process
    generator = torch.Generator().manual_seed(config.seed + 1_000_003 * fabric.global_rank)
    # On the training device before the EMA copy and the optimizer exist, so that both
    # (and optimizer state restored by a resume) live beside the weights. The generator
    # stays on the CPU: batches, times and noise are the same draws on every device.
    denoiser.net.to(fabric.device)
    ema_net = copy.deepcopy(denoiser.net).requires_grad_(False)
    optimizer = torch.optim.Adam(denoiser.net.parameters(), lr=config.lr)
    step, losses = 0, []

    if checkpoint is not None and resume and os.path.exists(checkpoint):
        state = load_checkpoint(checkpoint)
        if state["config"] != denoiser.config():
            raise ValueError(f"{checkpoint} was written for another model config")
        denoiser.net.load_state_dict(state["model"])
        ema_net.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator_states"][fabric.global_rank])
        step, losses = state["step"], list(state["losses"])

    model, optimizer = fabric.setup(denoiser, optimizer)

    def save() -> None:
        gens = fabric.all_gather(generator.get_state())
        gens = [gens] if fabric.world_size == 1 else list(gens)
        if fabric.is_global_zero:
            save_checkpoint(
                checkpoint,
                {
                    "format": FORMAT,
                    "config": denoiser.config(),
                    "model": denoiser.net.state_dict(),
                    "ema": ema_net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator_states": [g.cpu() for g in gens],
                    "step": step,
                    "losses": losses,
                    "train_config": asdict(config),
                },
            )
        fabric.barrier()

    bar = None
    if progress and fabric.is_global_zero and step < config.steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=step, desc="train", leave=False)
    while step < config.steps:
        x0 = _batch(data, config.batch_size, generator).to(fabric.device)
        loss = diffusion_loss(
            model,
            process,
            x0,
            config.weighting,
            config.time_sampling,
            generator,
            sigma_data=denoiser.sigma_data,
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {float(loss)} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        if config.grad_clip is not None:
            fabric.clip_gradients(model, optimizer, max_norm=config.grad_clip)
        if config.lr_schedule == "cosine":  # a function of the step: resumes exactly
            for group in optimizer.param_groups:
                group["lr"] = config.lr * 0.5 * (1.0 + math.cos(math.pi * step / config.steps))
        optimizer.step()
        with torch.no_grad():  # EMA of the weights: e <- d e + (1 - d) w
            for e, w in zip(ema_net.parameters(), denoiser.net.parameters()):
                e.lerp_(w, 1.0 - config.ema_decay)
            for e, b in zip(ema_net.buffers(), denoiser.net.buffers()):  # e.g. norm statistics
                e.copy_(b)
        step += 1
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if checkpoint is not None and (step % config.checkpoint_every == 0 or step == config.steps):
            save()
    if bar is not None:
        bar.close()
    ema = Denoiser(
        ema_net, process, denoiser.prediction, denoiser.precondition, denoiser.sigma_data
    )
    return TrainResult(denoiser=denoiser, ema=ema.eval(), losses=losses, step=step)
