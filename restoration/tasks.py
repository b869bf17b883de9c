"""The four image restoration tasks of the benchmark and the CLI, on (C, H, W) images in
[-1, 1]: one place that fixes their operators and noise level.

- ``sr4``: x4 super-resolution by 4x4 average pooling (DDRM's SR operator);
- ``inpaint-box``: a centred square hole of half the image side (a quarter of the pixels);
- ``inpaint-random``: half of the pixels observed, at random (a fixed seed per image size);
- ``deblur``: circular Gaussian blur, 9x9 kernel, std 2 pixels.

All add Gaussian noise of std ``SIGMA_Y = 0.05`` (2.5% of the [-1, 1] range).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .operators import (
    Blur,
    Inpainting,
    LinearOperator,
    SuperResolution,
    box_mask,
    gaussian_kernel,
    random_mask,
)

__all__ = ["TASKS", "SIGMA_Y", "make_operator"]

TASKS = ("sr4", "inpaint-box", "inpaint-random", "deblur")
SIGMA_Y = 0.05


def make_operator(task: str, x_shape: Sequence[int], sigma_y: float = SIGMA_Y) -> LinearOperator:
    """The operator of ``task`` for images of per-sample shape x_shape = (C, H, W)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; available: {TASKS}")
    x_shape = tuple(x_shape)
    if len(x_shape) != 3:
        raise ValueError(f"image tasks take x_shape = (C, H, W), got {x_shape}")
    H, W = x_shape[1:]
    if task == "sr4":
        return SuperResolution(x_shape, 4, kind="avgpool", sigma_y=sigma_y)
    if task == "inpaint-box":
        h, w = H // 2, W // 2
        return Inpainting(box_mask(x_shape, ((H - h) // 2, (W - w) // 2, h, w)), sigma_y)
    if task == "inpaint-random":
        g = torch.Generator().manual_seed(H * 1000 + W)
        return Inpainting(random_mask(x_shape, 0.5, g, shared_dims=(0,)), sigma_y)
    return Blur(x_shape, gaussian_kernel(9, 2.0), sigma_y=sigma_y)
