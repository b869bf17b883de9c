"""Sample-quality metrics."""

from __future__ import annotations

import torch

__all__ = ["sliced_wasserstein"]


def sliced_wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    n_projections: int = 256,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced Wasserstein-2 distance between two point clouds (Bonneel et al. 2015).

    SW2(x, y) = sqrt( E_theta W2^2(theta^T x, theta^T y) ), theta uniform on the sphere,
    estimated with ``n_projections`` directions; each 1-D W2 compares quantiles. Unequal
    sample sizes are compared at the smaller set's quantile levels (i + 1/2)/n.
    """
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    y = y.reshape(y.shape[0], -1).to(torch.float64)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: {x.shape[1]} vs {y.shape[1]}")
    if min(len(x), len(y)) < 2:
        raise ValueError("need at least two samples on each side")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("samples contain NaN/Inf")
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    n = min(len(px), len(py))
    px, py = _quantiles(px, n), _quantiles(py, n)
    return float(((px - py) ** 2).mean().sqrt())


def _quantiles(sorted_proj: torch.Tensor, n: int) -> torch.Tensor:
    """Linearly interpolated quantiles of sorted columns at levels (i + 1/2)/n."""
    m = len(sorted_proj)
    if m == n:
        return sorted_proj
    pos = (torch.arange(n, dtype=torch.float64) + 0.5) / n * m - 0.5
    lo = pos.floor().clamp(0, m - 1).long()
    hi = (lo + 1).clamp(max=m - 1)
    frac = (pos - lo).clamp(0, 1)[:, None]
    return sorted_proj[lo] * (1 - frac) + sorted_proj[hi] * frac
