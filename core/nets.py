"""Small networks for low-dimensional data."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .config import Configurable
from .utils import check_positive_int

__all__ = ["MLP", "time_embedding"]


def time_embedding(t: torch.Tensor, dim: int, max_period: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos(t w_j), sin(t w_j)], w_j geometric in [1, max_period]
    (Vaswani et al. 2017, as used by DDPM); works for t in [0, 1] and EDM's c_noise."""
    half = dim // 2
    w = torch.exp(torch.linspace(0.0, math.log(max_period), half, dtype=t.dtype, device=t.device))
    arg = t[:, None] * w[None]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


class _Block(nn.Module):
    def __init__(self, hidden: int, emb: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        u = nn.functional.silu(self.fc1(self.norm(h)) + self.emb(e))
        return h + self.fc2(u)


class MLP(nn.Module, Configurable):
    """Residual MLP with a sinusoidal time embedding, for data of any shape (B, ...).

    The input is flattened to (B, dim) and the output restored to the input shape.
    ``num_classes`` adds a learned class embedding for ``cond`` (integer labels); the
    extra index ``num_classes`` is the null label used by classifier-free guidance.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        depth: int = 3,
        emb_dim: int = 64,
        num_classes: int | None = None,
    ) -> None:
        nn.Module.__init__(self)
        for name, v in (("dim", dim), ("hidden", hidden), ("depth", depth), ("emb_dim", emb_dim)):
            check_positive_int(f"MLP: {name}", v)
        self._set_config(
            dim=dim, hidden=hidden, depth=depth, emb_dim=emb_dim, num_classes=num_classes
        )
        self.dim, self.emb_dim = dim, emb_dim
        self.inp = nn.Linear(dim, hidden)
        self.temb = nn.Sequential(
            nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.cemb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.blocks = nn.ModuleList(_Block(hidden, emb_dim) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        shape = x.shape
        h = x.reshape(shape[0], -1)
        if h.shape[1] != self.dim:
            raise ValueError(f"MLP expects {self.dim} features per sample, got {h.shape[1]}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(shape[0])
        e = self.temb(time_embedding(t, self.emb_dim))
        if cond is not None:
            if self.cemb is None:
                raise ValueError("this MLP was built without num_classes; it takes no cond")
            e = e + self.cemb(torch.as_tensor(cond, device=x.device).long())
        h = self.inp(h)
        for block in self.blocks:
            h = block(h, e)
        return self.out(h).reshape(shape)
