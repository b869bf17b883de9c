"""Small tensor helpers shared by the whole core (k-diffusion's `append_dims` idea)."""

from __future__ import annotations

from typing import Any

import torch


def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dimensions to ``x`` until it has ``ndim`` dims.

    A per-sample coefficient of shape (B,) then broadcasts against a batch of any
    rank: series (B, L, C), point clouds (B, N, 3), images or volumes.
    """
    if x.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor of rank {x.ndim} to rank {ndim}")
    return x[(...,) + (None,) * (ndim - x.ndim)]


def as_time(t: float | torch.Tensor) -> torch.Tensor:
    """Return ``t`` as a float64 tensor (times and schedules are kept in float64)."""
    if isinstance(t, torch.Tensor):
        return t.to(torch.float64)
    return torch.as_tensor(t, dtype=torch.float64)


def coef(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a float64 coefficient (scalar or per-sample (B,)) against ``x``."""
    return append_dims(c, x.ndim).to(device=x.device, dtype=x.dtype)


def batch_time(t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A float64 time of shape (B,) for the batch ``x``, from a scalar or a (B,) tensor."""
    t = as_time(t).to(x.device)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"time has shape {tuple(t.shape)}, expected () or ({x.shape[0]},)")
    return t


def derivative(fn, t: torch.Tensor) -> torch.Tensor:
    """Exact elementwise derivative d fn(t) / dt by autograd, in float64."""
    t = as_time(t).detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = fn(t)
        if not y.requires_grad:  # fn does not depend on t
            return torch.zeros_like(t, requires_grad=False)
        (g,) = torch.autograd.grad(y.sum(), t)
    return g.detach()


def atomic_write(path, write) -> None:
    """Write a file atomically: ``write(tmp_path)``, fsync, then rename over ``path``.

    A crash mid-write leaves the old file (or none), never a truncated one.
    """
    import os
    import tempfile

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the mode a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    """``atomic_write`` of a text file (closed before it is synced and renamed)."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def check_positive_int(name: str, value: Any) -> int:
    """``value`` if it is an int >= 1 (not a bool), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def lincomb(*terms: tuple[float, torch.Tensor]) -> torch.Tensor:
    """sum_i c_i x_i for float coefficients, built in one output buffer.

    Samplers write each update as one linear combination of the state and the stored
    predictions: one pass over memory per term, with no temporaries (this is most of a
    sampler's cost per step at large batch).
    """
    (c0, x0), rest = terms[0], terms[1:]
    out = torch.mul(x0, float(c0))
    for c, x in rest:
        out.add_(x, alpha=float(c))
    return out


def all_finite(x: torch.Tensor) -> bool:
    """True when x holds no NaN/Inf: usually one reduction pass (a sum is NaN/Inf if any
    term is); only when the sum is not finite, which huge finite values can also cause
    by overflow, are the elements checked one by one."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())
