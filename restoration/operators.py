"""Measurement operators for linear inverse problems y = A x + sigma_y * n, n ~ N(0, I).

Every operator acts on a batch: ``x`` has shape (B, *x_shape) and ``y`` has shape
(B, *y_shape), where the per-sample shapes are fixed at construction, so images
(C, H, W), series (L, C) and volumes (C, H, W, D) all work. Besides ``forward`` and
``adjoint``, each operator here exposes a real singular value decomposition in the
functional form of DDRM (Kawar et al. 2022, "Denoising Diffusion Restoration Models",
Sec. 4 and App. "H_functions"): A = U diag(s) V^T with

- ``Vt(x)``: (B, *x_shape) -> (B, d), the coordinates of x in the orthonormal basis V;
- ``V(z)``: the inverse, (B, k <= d) -> (B, *x_shape) (missing trailing entries are 0);
- ``Ut(y)``: (B, *y_shape) -> (B, m), ``U(z)``: (B, k <= m) -> (B, *y_shape);
- ``singulars``: the r = ``rank`` stored singular values, sorted descending, matching
  the first r entries of ``Vt`` and ``Ut``,

so that ``A(x) == U(singulars * Vt(x)[:, :rank])`` for every x. Operators with a
Kronecker (super-resolution) or circulant (blur) structure never form their
d x d matrices: they apply small per-axis factors or FFTs per slice of the leading
dimensions. Buffers are built in float64 and cast to the input's dtype and device
(cached) when applied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from diffsci.core.utils import check_positive_int

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


# --- shared checks ------------------------------------------------------------------------


def _check_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """A per-sample shape as a tuple of positive ints (ValueError otherwise)."""
    if isinstance(shape, int) or not isinstance(shape, Sequence) or len(shape) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {shape!r}")
    return tuple(check_positive_int(f"{name}[{i}]", int(s)) for i, s in enumerate(shape))


def _check_sigma_y(sigma_y: float) -> float:
    """Measurement noise std as a float: finite and >= 0."""
    try:
        value = float(sigma_y)
    except (TypeError, ValueError):
        raise ValueError(f"sigma_y must be a real number >= 0, got {sigma_y!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"sigma_y must be finite and >= 0, got {sigma_y!r}")
    return value


def _complement(index: torch.Tensor, n: int) -> torch.Tensor:
    """The indices of range(n) not in ``index``, ascending."""
    keep = torch.ones(n, dtype=torch.bool)
    keep[index] = False
    return keep.nonzero().flatten()


class _Spectrum:
    """Bookkeeping of an SVD that is known per slice of the leading dimensions.

    An operator gives, per slice (there are ``slices`` of them), an orthonormal change of
    coordinates of x (n per slice) and of y (m per slice), and k triples
    (s_i, core_x[i], core_y[i]): A maps x-coordinate core_x[i] to s_i times
    y-coordinate core_y[i]; x-coordinates outside core_x are the null space. The triples
    are sorted by s descending (stable) and laid out as (rank index, slice), so the global
    singular values come out sorted; the null-space coordinates follow.
    """

    def __init__(
        self,
        s: torch.Tensor,
        core_x: torch.Tensor,
        n: int,
        core_y: torch.Tensor,
        m: int,
        slices: int = 1,
    ) -> None:
        order = torch.sort(s, descending=True, stable=True).indices
        self.s = s[order].to(torch.float64)
        self.x_core, self.x_rest = core_x[order], _complement(core_x, n)
        self.y_core, self.y_rest = core_y[order], _complement(core_y, m)
        self.n, self.m, self.L = n, m, slices
        self.singulars = self.s.repeat_interleave(slices)

    def _pack(self, C: torch.Tensor, core: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
        core, rest = core.to(C.device), rest.to(C.device)
        head = C.index_select(2, core).transpose(1, 2).reshape(C.shape[0], -1)
        tail = C.index_select(2, rest).reshape(C.shape[0], -1)
        return torch.cat([head, tail], dim=1)

    def _unpack(
        self, z: torch.Tensor, core: torch.Tensor, rest: torch.Tensor, n: int
    ) -> torch.Tensor:
        B, k, L = z.shape[0], core.numel(), self.L
        z = torch.nn.functional.pad(z, (0, L * n - z.shape[1]))
        core, rest = core.to(z.device), rest.to(z.device)
        C = z.new_zeros(B, L, n)
        C = C.index_copy(2, core, z[:, : k * L].reshape(B, k, L).transpose(1, 2))
        return C.index_copy(2, rest, z[:, k * L :].reshape(B, L, n - k))

    def pack_x(self, C: torch.Tensor) -> torch.Tensor:
        return self._pack(C, self.x_core, self.x_rest)

    def unpack_x(self, z: torch.Tensor) -> torch.Tensor:
        return self._unpack(z, self.x_core, self.x_rest, self.n)

    def pack_y(self, G: torch.Tensor) -> torch.Tensor:
        return self._pack(G, self.y_core, self.y_rest)

    def unpack_y(self, z: torch.Tensor) -> torch.Tensor:
        return self._unpack(z, self.y_core, self.y_rest, self.m)


# --- the base class -----------------------------------------------------------------------


class _Transpose:
    """``A.T``: calling it applies the adjoint A^T; ``A.T.T`` is A again."""

    def __init__(self, op: LinearOperator) -> None:
        self.op = op

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(y)

    @property
    def T(self) -> LinearOperator:
        return self.op

    def __repr__(self) -> str:
        return f"{self.op!r}.T"


class LinearOperator:
    """A linear measurement y = A x + sigma_y * n on batches of per-sample shape x_shape.

    Subclasses implement ``_forward`` and ``_adjoint`` on checked inputs, and, for the SVD,
    set ``self._spectrum`` and implement ``_coef_x`` / ``_signal`` (x <-> per-slice
    orthonormal coordinates, shape (B, L, n)) and ``_coef_y`` / ``_measurement``
    (y <-> (B, L, m)). The public SVD maps, ``pinv`` and ``measure`` are built here once.
    """

    def __init__(
        self, x_shape: Sequence[int], y_shape: Sequence[int], sigma_y: float = 0.0
    ) -> None:
        self.x_shape = _check_shape("x_shape", x_shape)
        self.y_shape = _check_shape("y_shape", y_shape)
        self.sigma_y = _check_sigma_y(sigma_y)
        self._spectrum: _Spectrum | None = None
        self._cache: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}

    # sizes
    @property
    def x_dim(self) -> int:
        """d = prod(x_shape), the number of unknowns per sample."""
        return math.prod(self.x_shape)

    @property
    def y_dim(self) -> int:
        """m = prod(y_shape), the number of measurements per sample."""
        return math.prod(self.y_shape)

    def _buffer(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The float64 (or complex128) buffer ``self.<name>`` cast to ``like``'s dtype and
        device; complex buffers go to the complex dtype of the same precision. Cached."""
        buf = getattr(self, name)
        dtype = like.dtype
        if buf.is_complex() and not dtype.is_complex:
            dtype = dtype.to_complex()
        key = (name, dtype, like.device)
        if key not in self._cache:
            self._cache[key] = buf.to(device=like.device, dtype=dtype)
        return self._cache[key]

    # checks
    def _check_batch(self, name: str, t: torch.Tensor, shape: tuple[int, ...], what: str) -> None:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a real floating-point tensor, got dtype {t.dtype}")
        if t.ndim != len(shape) + 1 or tuple(t.shape[1:]) != shape:
            raise ValueError(
                f"{type(self).__name__}: {name} must have shape (B, {', '.join(map(str, shape))}) "
                f"({what}), got {tuple(t.shape)}"
            )

    def check_signal(self, x: torch.Tensor) -> None:
        """ValueError unless x has shape (B, *x_shape) and a real floating dtype."""
        self._check_batch("x", x, self.x_shape, "batch, then the operator's x_shape")

    def check_measurement(self, y: torch.Tensor) -> None:
        """ValueError unless y has shape (B, *y_shape) and a real floating dtype."""
        self._check_batch("y", y, self.y_shape, "batch, then the operator's y_shape")

    # the operator
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = A x (noiseless), shape (B, *y_shape)."""
        self.check_signal(x)
        return self._forward(x)

    __call__ = forward

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^T y, shape (B, *x_shape): <A x, y> = <x, A^T y>."""
        self.check_measurement(y)
        return self._adjoint(y)

    @property
    def T(self) -> _Transpose:
        """The adjoint as a callable: ``A.T(y) == A.adjoint(y)``."""
        return _Transpose(self)

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A noisy measurement y = A x + sigma_y * n, n ~ N(0, I) drawn from ``generator``."""
        y = self.forward(x)
        if self.sigma_y == 0:
            return y
        n = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
        return y + self.sigma_y * n

    def matrix(self) -> torch.Tensor:
        """The dense (m, d) float64 matrix of A (columns A e_j); for small operators, tests
        and the Gaussian-mixture oracle (``GaussianMixture.posterior(A.matrix(), ...)``)."""
        eye = torch.eye(self.x_dim, dtype=torch.float64).reshape(self.x_dim, *self.x_shape)
        return self.forward(eye).reshape(self.x_dim, self.y_dim).T

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # the SVD A = U diag(s) V^T (DDRM's H_functions)
    @property
    def has_svd(self) -> bool:
        """Whether V, Vt, U, Ut, singulars and pinv are available."""
        return self._spectrum is not None

    def _svd(self) -> _Spectrum:
        if self._spectrum is None:
            raise ValueError(
                f"{type(self).__name__} has no SVD (V, Vt, U, Ut, singulars, pinv need one); "
                "use a gradient method that only needs forward and adjoint"
            )
        return self._spectrum

    @property
    def singulars(self) -> torch.Tensor:
        """The rank singular values of A, float64, sorted descending (some may be ~0)."""
        return self._svd().singulars

    @property
    def rank(self) -> int:
        """The number of stored singular values (the leading entries of Vt and Ut)."""
        return self._svd().singulars.numel()

    def _check_coords(self, name: str, z: torch.Tensor, total: int) -> None:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] > total:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{name} takes coordinates of shape (B, k <= {total}), got {shape}")

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        """V^T x: the (B, d) coordinates of x in the right singular basis."""
        spec = self._svd()
        self.check_signal(x)
        return spec.pack_x(self._coef_x(x))

    def V(self, z: torch.Tensor) -> torch.Tensor:
        """V z for (B, k <= d) coordinates (zero-padded), shape (B, *x_shape)."""
        spec = self._svd()
        self._check_coords("V", z, self.x_dim)
        return self._signal(spec.unpack_x(z))

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        """U^T y: the (B, m) coordinates of y in the left singular basis."""
        spec = self._svd()
        self.check_measurement(y)
        return spec.pack_y(self._coef_y(y))

    def U(self, z: torch.Tensor) -> torch.Tensor:
        """U z for (B, k <= m) coordinates (zero-padded), shape (B, *y_shape)."""
        spec = self._svd()
        self._check_coords("U", z, self.y_dim)
        return self._measurement(spec.unpack_y(z))

    @property
    def noise_rcond(self) -> float | None:
        """The relative pseudo-inverse cutoff at the noise level, sigma_y / max(s): the
        directions where A's gain is below the noise std (their component of y is more
        noise than signal for a unit-scale x) are dropped. None when sigma_y = 0."""
        return self.sigma_y / float(self.singulars.max()) if self.sigma_y > 0 else None

    def pinv(self, y: torch.Tensor, rcond: float | None = None) -> torch.Tensor:
        """Pseudo-inverse A^+ y = V diag(1/s) U^T y over singular values s > rcond * max(s).

        The default ``rcond`` is numpy's lstsq one, max(m, d) * eps(dtype of y). For
        ill-conditioned operators (Gaussian blur) on noisy data pass a larger cutoff,
        e.g. 1e-3: a truncated-SVD inverse, not a Wiener filter.
        """
        spec = self._svd()
        s = spec.singulars.to(device=y.device, dtype=y.dtype)
        if rcond is None:
            rcond = max(self.x_dim, self.y_dim) * torch.finfo(y.dtype).eps
        keep = s > rcond * s.max()
        z = self.Ut(y)[:, : s.numel()]
        return self.V(torch.where(keep, z / torch.where(keep, s, 1.0), 0.0))

    def _coef_x(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _signal(self, C: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _coef_y(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _measurement(self, G: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(x_shape={self.x_shape}, y_shape={self.y_shape}, "
            f"sigma_y={self.sigma_y})"
        )


# --- denoising ----------------------------------------------------------------------------


class Identity(LinearOperator):
    """A = I: y = x + sigma_y * n (denoising; DDRM Sec. 4.1). SVD: U = V = I, s = 1."""

    def __init__(self, x_shape: Sequence[int], sigma_y: float = 0.0) -> None:
        super().__init__(x_shape, x_shape, sigma_y)
        d = self.x_dim
        self._spectrum = _Spectrum(torch.ones(d), torch.arange(d), d, torch.arange(d), d)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    def _coef_x(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 1, -1)

    def _signal(self, C: torch.Tensor) -> torch.Tensor:
        return C.reshape(C.shape[0], *self.x_shape)

    _coef_y = _coef_x
    _measurement = _signal


class Denoising(Identity):
    """Denoising, y = x + sigma_y * n: the identity operator under its task's name."""


# --- inpainting ---------------------------------------------------------------------------


class Inpainting(LinearOperator):
    """Inpainting: y = x[mask], the observed entries as a flat (B, n_obs) vector.

    ``mask`` is a bool tensor of the per-sample shape x_shape, True where x is observed.
    A is a row selection of the identity, so A A^T = I: the SVD has s = 1 (n_obs times),
    U = I and V a permutation (observed entries first), as in DDRM's Inpainting.
    """

    def __init__(self, mask: torch.Tensor, sigma_y: float = 0.0) -> None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            what = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a bool tensor (True = observed), got {what}")
        observed = mask.detach().cpu().flatten().nonzero().flatten()
        if observed.numel() == 0:
            raise ValueError("mask observes no entry (all False): nothing is measured")
        super().__init__(tuple(mask.shape), (observed.numel(),), sigma_y)
        self.mask = mask.detach().cpu().clone()
        self.observed = observed
        n_obs = observed.numel()
        self._spectrum = _Spectrum(
            torch.ones(n_obs), observed, self.x_dim, torch.arange(n_obs), n_obs
        )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).index_select(1, self.observed.to(x.device))

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        out = y.new_zeros(y.shape[0], self.x_dim)
        out = out.index_copy(1, self.observed.to(y.device), y)
        return out.reshape(y.shape[0], *self.x_shape)

    def fill(self, y: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        """An image of shape (B, *x_shape) with y at the observed entries, ``value`` elsewhere."""
        x = self.adjoint(y)
        return torch.where(self.mask.to(x.device), x, torch.as_tensor(value, dtype=x.dtype))

    def _coef_x(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 1, -1)

    def _signal(self, C: torch.Tensor) -> torch.Tensor:
        return C.reshape(C.shape[0], *self.x_shape)

    def _coef_y(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(y.shape[0], 1, -1)

    def _measurement(self, G: torch.Tensor) -> torch.Tensor:
        return G.reshape(G.shape[0], -1)


def box_mask(
    x_shape: Sequence[int], box: tuple[int, int, int, int] | tuple[slice, slice]
) -> torch.Tensor:
    """A bool mask of shape x_shape, True (observed) everywhere except a box over the last
    two dimensions, which is missing (the hole, as in DDRM's and DPS's box inpainting).

    ``box`` is either (top, left, height, width) in pixels of the last two dimensions, or
    two slices (rows, cols) of them; the hole spans every leading dimension (channels).
    """
    x_shape = _check_shape("x_shape", x_shape)
    if len(x_shape) < 2:
        raise ValueError(f"box_mask needs an x_shape with >= 2 dims, got {x_shape}")
    H, W = x_shape[-2:]
    if len(box) == 2 and all(isinstance(b, slice) for b in box):
        rows, cols = box
    elif len(box) == 4 and all(isinstance(b, int) and not isinstance(b, bool) for b in box):
        top, left, height, width = box
        if top < 0 or left < 0 or height < 1 or width < 1 or top + height > H or left + width > W:
            raise ValueError(
                f"box (top, left, height, width) = {tuple(box)} does not fit in a {H} x {W} image"
            )
        rows, cols = slice(top, top + height), slice(left, left + width)
    else:
        raise ValueError(f"box must be (top, left, height, width) ints or two slices, got {box!r}")
    mask = torch.ones(x_shape, dtype=torch.bool)
    mask[..., rows, cols] = False
    return mask


def random_mask(
    x_shape: Sequence[int],
    fraction_observed: float,
    generator: torch.Generator | None = None,
    shared_dims: Sequence[int] = (),
) -> torch.Tensor:
    """A bool mask of shape x_shape with exactly round(fraction_observed * n) observed
    entries drawn uniformly without replacement (DDRM / DPS random inpainting).

    ``shared_dims`` are dimensions of x_shape along which the mask is constant; with
    ``shared_dims=(0,)`` on (C, H, W) a pixel is observed in all channels or none, and n
    counts pixels.
    """
    x_shape = _check_shape("x_shape", x_shape)
    if not 0 < float(fraction_observed) <= 1:
        raise ValueError(f"fraction_observed must be in (0, 1], got {fraction_observed!r}")
    shared = {int(d) % len(x_shape) for d in shared_dims}
    draw_shape = tuple(1 if i in shared else s for i, s in enumerate(x_shape))
    n = math.prod(draw_shape)
    n_obs = max(1, round(float(fraction_observed) * n))
    flat = torch.zeros(n, dtype=torch.bool)
    flat[torch.randperm(n, generator=generator)[:n_obs]] = True
    return flat.reshape(draw_shape).expand(x_shape).clone()


# --- separable operators over the last two dims (super-resolution) ------------------------


def _keys_cubic(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys (1981) cubic convolution kernel, eq. (15), with a = -0.5 (PIL's antialias one)."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def bicubic_matrix(n: int, factor: int) -> torch.Tensor:
    """The (n // factor, n) float64 1-D antialiased bicubic downsampling matrix.

    Row i is Keys' kernel (a = -0.5) stretched by ``factor`` (support 2 * factor) around
    the input position center = factor * (i + 0.5), sampled at pixel centres, truncated at
    the borders and renormalised to sum 1: the weights of PIL's and PyTorch's
    ``interpolate(mode="bicubic", antialias=True, align_corners=False)``.
    """
    n, factor = check_positive_int("n", n), check_positive_int("factor", factor)
    if n % factor:
        raise ValueError(f"length {n} is not divisible by the factor {factor}")
    scale, out = float(factor), n // factor
    support = 2.0 * scale
    A = torch.zeros(out, n, dtype=torch.float64)
    for i in range(out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)  # int() truncates toward 0, as in C++
        hi = min(int(center + support + 0.5), n)
        j = torch.arange(lo, hi, dtype=torch.float64)
        w = _keys_cubic((j - center + 0.5) / scale)
        A[i, lo:hi] = w / w.sum()
    return A


def _householder_basis(f: int) -> torch.Tensor:
    """An f x f orthogonal float64 matrix whose first column is the constant 1/sqrt(f):
    the Householder reflection that maps e_1 to 1/sqrt(f) (DDRM's block basis for
    average pooling)."""
    e1 = torch.zeros(f, dtype=torch.float64)
    e1[0] = 1.0
    w = e1 - torch.full((f,), f**-0.5, dtype=torch.float64)
    if float(w @ w) < 1e-30:  # f = 1
        return torch.eye(f, dtype=torch.float64)
    return torch.eye(f, dtype=torch.float64) - 2 * torch.outer(w, w) / (w @ w)


def _avgpool_svd(n: int, f: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D mean over blocks of f, in closed form: A = kron(I, 1^T / f) = U diag(s) V^T with
    U = I, s = 1/sqrt(f), V's first n/f columns e_i (x) 1/sqrt(f), then e_i (x) q_j for
    the other columns q_j of the Householder block basis. Returns (A, U, s, V)."""
    h = n // f
    Q = _householder_basis(f)
    eye = torch.eye(h, dtype=torch.float64)
    A = torch.kron(eye, torch.full((1, f), 1.0 / f, dtype=torch.float64))
    V = torch.cat([torch.kron(eye, Q[:, :1]), torch.kron(eye, Q[:, 1:])], dim=1)
    return A, eye, torch.full((h,), f**-0.5, dtype=torch.float64), V


class SuperResolution(LinearOperator):
    """Downsampling by ``factor`` over the last two dims: y = A_h X A_w^T per slice.

    ``kind="avgpool"``: the mean over factor x factor blocks (DDRM's SuperResolution);
    ``kind="bicubic"``: antialiased bicubic, A_h and A_w from ``bicubic_matrix`` (PyTorch's
    ``interpolate(..., mode="bicubic", antialias=True)``, borders included).

    SVD: A = kron(A_h, A_w) (Van Loan 2000, "The ubiquitous Kronecker product",
    Sec. 2: the SVD of a Kronecker product is the product of the SVDs), with
    A_h = U_h S_h V_h^T and A_w = U_w S_w V_w^T: coordinates C = V_h^T X V_w, singular
    values s_ij = (S_h)_i (S_w)_j sorted descending over (i, j). For avgpool the factors are
    in closed form (s = 1/factor, the block basis a Householder matrix with a constant
    first vector); for bicubic, torch.linalg.svd in float64 at construction.
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        factor: int,
        kind: str = "avgpool",
        sigma_y: float = 0.0,
    ) -> None:
        x_shape = _check_shape("x_shape", x_shape)
        factor = check_positive_int("factor", factor)
        if len(x_shape) < 2:
            raise ValueError(f"SuperResolution acts on the last two dims; x_shape is {x_shape}")
        H, W = x_shape[-2:]
        if H % factor or W % factor:
            raise ValueError(f"the last two dims {H} x {W} are not divisible by factor {factor}")
        if kind not in ("avgpool", "bicubic"):
            raise ValueError(f"unknown kind {kind!r}; expected 'avgpool' or 'bicubic'")
        super().__init__(x_shape, (*x_shape[:-2], H // factor, W // factor), sigma_y)
        self.factor, self.kind = factor, kind
        if kind == "avgpool":
            self.Ah, self.Uh, Sh, self.Vh = _avgpool_svd(H, factor)
            self.Aw, self.Uw, Sw, self.Vw = _avgpool_svd(W, factor)
        else:
            self.Ah, self.Aw = bicubic_matrix(H, factor), bicubic_matrix(W, factor)
            self.Uh, Sh, Vht = torch.linalg.svd(self.Ah, full_matrices=True)
            self.Uw, Sw, Vwt = torch.linalg.svd(self.Aw, full_matrices=True)
            self.Vh, self.Vw = Vht.T.contiguous(), Vwt.T.contiguous()
        h, w = H // factor, W // factor
        i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        self._spectrum = _Spectrum(
            torch.outer(Sh, Sw).flatten(),
            (i * W + j).flatten(),
            H * W,
            torch.arange(h * w),
            h * w,
            slices=math.prod(x_shape[:-2]),
        )

    def _sandwich(self, X: torch.Tensor, left: str, right: str, transpose: bool) -> torch.Tensor:
        """left @ X @ right^T (or left^T @ X @ right) over the last two dims."""
        L, R = self._buffer(left, X), self._buffer(right, X)
        return (L.T @ X @ R) if transpose else (L @ X @ R.T)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._sandwich(x, "Ah", "Aw", transpose=False)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._sandwich(y, "Ah", "Aw", transpose=True)

    def _coef_x(self, x: torch.Tensor) -> torch.Tensor:
        C = self._sandwich(x, "Vh", "Vw", transpose=True)
        return C.reshape(x.shape[0], self._spectrum.L, -1)

    def _signal(self, C: torch.Tensor) -> torch.Tensor:
        C = C.reshape(C.shape[0], *self.x_shape)
        return self._sandwich(C, "Vh", "Vw", transpose=False)

    def _coef_y(self, y: torch.Tensor) -> torch.Tensor:
        G = self._sandwich(y, "Uh", "Uw", transpose=True)
        return G.reshape(y.shape[0], self._spectrum.L, -1)

    def _measurement(self, G: torch.Tensor) -> torch.Tensor:
        G = G.reshape(G.shape[0], *self.y_shape)
        return self._sandwich(G, "Uh", "Uw", transpose=False)


# --- circular blur ------------------------------------------------------------------------


def gaussian_kernel(size: int, std: float) -> torch.Tensor:
    """A (size, size) float64 isotropic Gaussian kernel exp(-r^2 / (2 std^2)), centred at
    ((size - 1) / 2, (size - 1) / 2) and normalised to sum 1 (DPS / DDRM deblurring)."""
    size = check_positive_int("size", size)
    if not (math.isfinite(float(std)) and float(std) > 0):
        raise ValueError(f"std must be finite and > 0, got {std!r}")
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * float(std) ** 2))
    k = torch.outer(g, g)
    return k / k.sum()


def motion_kernel(size: int, angle_deg: float, length: float) -> torch.Tensor:
    """A (size, size) float64 linear motion-blur kernel: a segment of ``length`` pixels
    through the centre at ``angle_deg`` (counter-clockwise from the +column axis),
    rasterised by bilinear splatting of 16 samples per pixel and normalised to sum 1.
    Deterministic; ``length = 0`` gives the identity (a delta at the centre)."""
    size = check_positive_int("size", size)
    length = float(length)
    if not (math.isfinite(length) and 0 <= length <= size - 1):
        raise ValueError(f"length must be in [0, size - 1] = [0, {size - 1}], got {length!r}")
    theta = math.radians(float(angle_deg))
    c = (size - 1) / 2
    t = torch.linspace(-length / 2, length / 2, max(2, math.ceil(16 * length) + 1))
    t = t.to(torch.float64)
    rows, cols = c - t * math.sin(theta), c + t * math.cos(theta)
    k = torch.zeros(size, size, dtype=torch.float64)
    r0, c0 = rows.floor().clamp(0, size - 1), cols.floor().clamp(0, size - 1)
    fr, fc = rows - r0, cols - c0
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            r = (r0 + dr).clamp(max=size - 1).long()
            cc = (c0 + dc).clamp(max=size - 1).long()
            k.index_put_((r, cc), wr * wc, accumulate=True)
    return k / k.sum()


class Blur(LinearOperator):
    """Circular convolution y = k * x over the last two dims (periodic boundary), by FFT.

    y[n] = sum_a k[a] x[n - a + c] with the kernel origin c = (kh // 2, kw // 2), i.e.
    ``scipy.ndimage.convolve(x, k, mode="wrap")`` for odd kernels. A is circulant, so
    F A F^H = diag(K) with K = fft2(kernel zero-padded and rolled to the origin), the
    transfer function exposed as ``fourier`` (Gonzalez & Woods, convolution theorem).

    Real SVD: write K = |K| e^{i phi}. On the real Fourier basis (for each conjugate pair
    {k, -k} the orthonormal pair sqrt(2) Re f_k, -sqrt(2) Im f_k; for self-conjugate k the
    real f_k), A scales by |K_k| and rotates each pair by phi_k. So V = real Fourier basis,
    s = |K| (each pair twice), U = V rotated by phi; real x gives real coordinates. The
    singular values are sorted descending; pinv truncates them below ``rcond``.
    """

    def __init__(self, x_shape: Sequence[int], kernel: torch.Tensor, sigma_y: float = 0.0) -> None:
        x_shape = _check_shape("x_shape", x_shape)
        if len(x_shape) < 2:
            raise ValueError(f"Blur acts on the last two dims; x_shape is {x_shape}")
        kernel = torch.as_tensor(kernel)
        if kernel.ndim != 2 or kernel.is_complex() or not torch.isfinite(kernel).all():
            raise ValueError(
                f"kernel must be a finite real 2-D tensor, got shape {tuple(kernel.shape)}"
            )
        H, W = x_shape[-2:]
        kh, kw = kernel.shape
        if kh > H or kw > W:
            raise ValueError(f"kernel {kh} x {kw} is larger than the image {H} x {W}")
        super().__init__(x_shape, x_shape, sigma_y)
        self.kernel = kernel.detach().to(torch.float64).cpu().clone()
        padded = torch.zeros(H, W, dtype=torch.float64)
        padded[:kh, :kw] = self.kernel
        padded = torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
        self.fourier = torch.fft.fft2(padded)  # K, complex128 (H, W)
        self._fourier_r = torch.fft.rfft2(padded)  # its half-spectrum for rfft2
        # real Fourier coordinates: self-conjugate frequencies, then pair representatives
        k = torch.arange(H * W)
        partner = ((-(k // W)) % H) * W + (-(k % W)) % W
        self._self_conj, self._reps = k[partner == k], k[partner > k]
        self._partners = partner[self._reps]
        absK = self.fourier.abs().flatten()
        phase = torch.where(absK > 0, self.fourier.flatten() / absK, 1.0 + 0j)
        self._phase = phase.reshape(H, W)
        s = torch.cat([absK[self._self_conj], absK[self._reps], absK[self._reps]])
        n = H * W
        self._spectrum = _Spectrum(
            s, torch.arange(n), n, torch.arange(n), n, slices=math.prod(x_shape[:-2])
        )

    def _filter(self, x: torch.Tensor, conjugate: bool) -> torch.Tensor:
        K = self._buffer("_fourier_r", x)
        X = torch.fft.rfft2(x)
        return torch.fft.irfft2(X * (K.conj() if conjugate else K), s=x.shape[-2:])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._filter(x, conjugate=False)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._filter(y, conjugate=True)

    def _to_real(self, c: torch.Tensor) -> torch.Tensor:
        """Complex ortho-FFT coefficients (B, L, H*W) of a real signal -> real coordinates."""
        s, r = self._self_conj.to(c.device), self._reps.to(c.device)
        cr = c.index_select(2, r)
        return torch.cat(
            [c.index_select(2, s).real, math.sqrt(2) * cr.real, math.sqrt(2) * cr.imag], 2
        )

    def _from_real(self, C: torch.Tensor) -> torch.Tensor:
        """Real coordinates (B, L, H*W) -> the Hermitian complex coefficients."""
        n_s, n_p = self._self_conj.numel(), self._reps.numel()
        a, cos, sin = C.split([n_s, n_p, n_p], dim=2)
        pair = torch.complex(cos, sin) / math.sqrt(2)
        c = torch.zeros(C.shape, dtype=C.dtype.to_complex(), device=C.device)
        c = c.index_copy(2, self._self_conj.to(C.device), torch.complex(a, torch.zeros_like(a)))
        c = c.index_copy(2, self._reps.to(C.device), pair)
        return c.index_copy(2, self._partners.to(C.device), pair.conj())

    def _coefs(self, x: torch.Tensor, rotate: bool) -> torch.Tensor:
        c = torch.fft.fft2(x, norm="ortho")
        if rotate:  # U^T: undo the phase e^{i phi} of K
            c = c * self._buffer("_phase", x).conj()
        return self._to_real(c.reshape(x.shape[0], self._spectrum.L, -1))

    def _image(self, C: torch.Tensor, rotate: bool) -> torch.Tensor:
        c = self._from_real(C).reshape(C.shape[0], *self.x_shape)
        if rotate:
            c = c * self._buffer("_phase", C)
        return torch.fft.ifft2(c, norm="ortho").real

    def _coef_x(self, x: torch.Tensor) -> torch.Tensor:
        return self._coefs(x, rotate=False)

    def _signal(self, C: torch.Tensor) -> torch.Tensor:
        return self._image(C, rotate=False)

    def _coef_y(self, y: torch.Tensor) -> torch.Tensor:
        return self._coefs(y, rotate=True)

    def _measurement(self, G: torch.Tensor) -> torch.Tensor:
        return self._image(G, rotate=True)


# --- dense matrices -----------------------------------------------------------------------


class Dense(LinearOperator):
    """y = M vec(x) for a (d_y, d) matrix M; x has per-sample shape x_shape (default (d,))
    and is flattened in row-major order. The full SVD M = U diag(s) V^T is computed once
    in float64 (torch.linalg.svd); rank = min(d_y, d)."""

    def __init__(
        self,
        matrix: torch.Tensor,
        x_shape: Sequence[int] | None = None,
        sigma_y: float = 0.0,
    ) -> None:
        M = torch.as_tensor(matrix)
        if M.ndim != 2 or M.is_complex() or not torch.isfinite(M).all():
            raise ValueError(f"matrix must be a finite real 2-D tensor, got shape {tuple(M.shape)}")
        d_y, d = M.shape
        x_shape = (d,) if x_shape is None else _check_shape("x_shape", x_shape)
        if math.prod(x_shape) != d:
            raise ValueError(
                f"x_shape {x_shape} has {math.prod(x_shape)} entries, matrix has {d} columns"
            )
        super().__init__(x_shape, (d_y,), sigma_y)
        self.M = M.detach().to(torch.float64).cpu().clone()
        self.Um, s, Vmt = torch.linalg.svd(self.M, full_matrices=True)
        self.Vm = Vmt.T.contiguous()
        r = s.numel()
        self._spectrum = _Spectrum(s, torch.arange(r), d, torch.arange(r), d_y)

    @classmethod
    def random_mcgdiff(
        cls,
        d: int,
        d_y: int,
        generator: torch.Generator | None = None,
        x_shape: Sequence[int] | None = None,
    ) -> Dense:
        """The random linear problem of MCGdiff (Cardoso et al. 2024, "Monte Carlo guided
        diffusion for Bayesian linear inverse problems", Sec. 4.1): the singular vectors
        of a standard Gaussian (d_y, d) matrix, singular values replaced by U(0, 1) draws
        sorted descending, and sigma_y = U(0, 1) * the largest singular value."""
        d, d_y = check_positive_int("d", d), check_positive_int("d_y", d_y)
        G = torch.randn(d_y, d, generator=generator, dtype=torch.float64)
        U, _, Vt = torch.linalg.svd(G, full_matrices=False)
        s = torch.sort(
            torch.rand(min(d, d_y), generator=generator, dtype=torch.float64), descending=True
        ).values
        sigma_y = float(torch.rand((), generator=generator, dtype=torch.float64)) * float(s[0])
        return cls((U * s) @ Vt, x_shape=x_shape, sigma_y=sigma_y)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1) @ self._buffer("M", x).T

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (y @ self._buffer("M", y)).reshape(y.shape[0], *self.x_shape)

    def _coef_x(self, x: torch.Tensor) -> torch.Tensor:
        return (x.reshape(x.shape[0], -1) @ self._buffer("Vm", x))[:, None]

    def _signal(self, C: torch.Tensor) -> torch.Tensor:
        return (C[:, 0] @ self._buffer("Vm", C).T).reshape(C.shape[0], *self.x_shape)

    def _coef_y(self, y: torch.Tensor) -> torch.Tensor:
        return (y @ self._buffer("Um", y))[:, None]

    def _measurement(self, G: torch.Tensor) -> torch.Tensor:
        return G[:, 0] @ self._buffer("Um", G).T
