"""Small networks: a residual MLP for low-dimensional data and a convolutional UNet for images."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .config import Configurable
from .utils import check_positive_int

__all__ = ["MLP", "UNet", "time_embedding"]


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


def _groups(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` not above ``groups`` (GroupNorm needs one)."""
    return next(g for g in range(min(groups, channels), 0, -1) if channels % g == 0)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding added in between (DDPM's ResnetBlock)."""

    def __init__(self, c_in: int, c_out: int, emb: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in, groups), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out, groups), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.emb(e)[:, :, None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Single-head self-attention over the pixels, residual (DDPM's AttnBlock)."""

    def __init__(self, c: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(c, groups), c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        a = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, HW, C)
        return x + self.proj(a.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module, Configurable):
    """A small convolutional UNet for images (B, C, H, W) (Ronneberger et al. 2015, with
    the residual blocks and time embedding of DDPM, Ho et al. 2020, Appendix B).

    Level ``i`` runs ``num_res_blocks`` residual blocks with ``channels[i]`` channels;
    levels are separated by a stride-2 convolution (down) and nearest upsampling plus a
    convolution (up); each decoder level takes the encoder output of the same level as
    a skip connection. The sinusoidal time embedding, passed through a small MLP, is
    added in every residual block. ``attention=True`` adds one self-attention layer at
    the coarsest level. The network is fully convolutional: one trained on 32x32
    patches runs on 64x64 images (H and W must be divisible by 2^(len(channels) - 1)).
    The output convolution starts at zero, so the untrained network predicts 0.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: tuple[int, ...] | list[int] = (32, 64, 64),
        num_res_blocks: int = 1,
        emb_dim: int = 128,
        groups: int = 8,
        attention: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        channels = [int(c) for c in channels]
        if not channels:
            raise ValueError("UNet: channels must name at least one level")
        for name, v in [("in_channels", in_channels), ("num_res_blocks", num_res_blocks)]:
            check_positive_int(f"UNet: {name}", v)
        for name, v in [("emb_dim", emb_dim), ("groups", groups)] + [
            (f"channels[{i}]", c) for i, c in enumerate(channels)
        ]:
            check_positive_int(f"UNet: {name}", v)
        self._set_config(
            in_channels=in_channels,
            channels=channels,
            num_res_blocks=num_res_blocks,
            emb_dim=emb_dim,
            groups=groups,
            attention=bool(attention),
        )
        self.emb_dim, self.levels = emb_dim, len(channels)
        self.temb = nn.Sequential(
            nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.enc, self.down = nn.ModuleList(), nn.ModuleList()
        c_prev = channels[0]
        for i, c in enumerate(channels):
            blocks = [
                _ResBlock(c_prev if j == 0 else c, c, emb_dim, groups)
                for j in range(num_res_blocks)
            ]
            self.enc.append(nn.ModuleList(blocks))
            if i < self.levels - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            c_prev = c
        self.mid = _ResBlock(c_prev, c_prev, emb_dim, groups)
        self.attn = _Attention(c_prev, groups) if attention else None
        self.dec, self.up = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(self.levels)):
            c = channels[i]
            blocks = [
                _ResBlock((c_prev + c) if j == 0 else c, c, emb_dim, groups)
                for j in range(num_res_blocks)
            ]
            self.dec.append(nn.ModuleList(blocks))
            if i > 0:
                self.up.append(nn.Conv2d(c, channels[i - 1], 3, padding=1))
            c_prev = channels[i - 1] if i > 0 else c
        self.norm_out = nn.GroupNorm(_groups(channels[0], groups), channels[0])
        self.conv_out = nn.Conv2d(channels[0], in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if cond is not None:
            raise ValueError("this UNet is unconditional; it takes no cond")
        if x.ndim != 4:
            raise ValueError(f"UNet expects images (B, C, H, W), got shape {tuple(x.shape)}")
        f = 2 ** (self.levels - 1)
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"UNet: H and W must be divisible by {f}, got {tuple(x.shape[-2:])}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        e = self.temb(time_embedding(t, self.emb_dim))
        h = self.conv_in(x)
        skips = []
        for i, blocks in enumerate(self.enc):
            for block in blocks:
                h = block(h, e)
            skips.append(h)
            if i < self.levels - 1:
                h = self.down[i](h)
        h = self.mid(h, e)
        if self.attn is not None:
            h = self.attn(h)
        for i, blocks in enumerate(self.dec):
            if i > 0:  # up to the resolution of this level
                h = self.up[i - 1](nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, e)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))
