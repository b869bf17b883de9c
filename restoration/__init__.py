"""diffsci.restoration: measurement operators and posterior samplers for super-resolution,
inpainting, deblurring and denoising (RED-Diff, ensemble SMC, DPS)."""

from .operators import (
    Blur,
    Denoising,
    Dense,
    Identity,
    Inpainting,
    LinearOperator,
    SuperResolution,
    bicubic_matrix,
    box_mask,
    gaussian_kernel,
    motion_kernel,
    random_mask,
)

__all__ = [
    "LinearOperator",
    "Identity",
    "Denoising",
    "Inpainting",
    "SuperResolution",
    "Blur",
    "Dense",
    "box_mask",
    "random_mask",
    "gaussian_kernel",
    "motion_kernel",
    "bicubic_matrix",
]
