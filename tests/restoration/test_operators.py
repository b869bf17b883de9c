"""Measurement operators: every identity is re-derived a second way (dense matrices and
torch.linalg, PyTorch's pooling and interpolation, rolled sums, scipy's convolution)."""

from __future__ import annotations

import math

import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from diffsci.restoration import operators as ops
from diffsci.restoration.operators import (
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

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed), dtype=F64)


# name -> builder; per-sample shapes cover images (C, H, W), volumes (C, H, W, D) and
# series (L, C)
OPERATORS = {
    "identity-image": lambda: Identity((3, 4, 5), sigma_y=0.1),
    "denoising-volume": lambda: Denoising((2, 4, 3, 5)),
    "denoising-series": lambda: Denoising((6, 3)),
    "inpaint-random": lambda: Inpainting(random_mask((3, 8, 8), 0.3, gen(0), shared_dims=(0,))),
    "inpaint-box": lambda: Inpainting(box_mask((2, 8, 8), (2, 2, 3, 4))),
    "inpaint-volume": lambda: Inpainting(random_mask((2, 4, 4, 3), 0.5, gen(1))),
    "inpaint-series": lambda: Inpainting(box_mask((10, 2), (3, 0, 4, 2))),
    "sr-avgpool": lambda: SuperResolution((3, 8, 12), 2),
    "sr-avgpool-volume": lambda: SuperResolution((2, 3, 6, 9), 3),
    "sr-bicubic": lambda: SuperResolution((2, 12, 8), 4, kind="bicubic"),
    "sr-bicubic-2d": lambda: SuperResolution((9, 12), 3, kind="bicubic"),
    "blur-gaussian": lambda: Blur((2, 8, 9), gaussian_kernel(5, 1.0)),
    "blur-motion": lambda: Blur((8, 8), motion_kernel(7, 30.0, 5.0)),
    "blur-random": lambda: Blur((2, 7, 6), randn((4, 3), 2)),
    "dense-wide": lambda: Dense(randn((5, 12), 3), x_shape=(3, 4)),
    "dense-tall": lambda: Dense(randn((15, 12), 4), x_shape=(3, 4)),
    "dense-volume": lambda: Dense(randn((7, 24), 5), x_shape=(2, 3, 2, 2)),
    "dense-series": lambda: Dense(randn((6, 15), 6), x_shape=(5, 3)),
    "dense-mcgdiff": lambda: Dense.random_mcgdiff(20, 5, gen(7)),
}


@pytest.fixture(params=sorted(OPERATORS), scope="module")
def op(request) -> LinearOperator:
    return OPERATORS[request.param]()


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def test_adjoint_identity(op):
    """<A x, y> = <x, A^T y> per sample, in float64."""
    x, y = randn((4, *op.x_shape), 10), randn((4, *op.y_shape), 11)
    lhs, rhs = inner(op(x), y), inner(x, op.T(y))
    scale = op(x).flatten(1).norm(dim=1) * y.flatten(1).norm(dim=1)
    assert ((lhs - rhs).abs() <= 1e-10 * scale).all()
    torch.testing.assert_close(op.T(y), op.adjoint(y), rtol=0, atol=0)
    assert op.T.T is op
    assert op(x).shape == (4, *op.y_shape) and op.T(y).shape == (4, *op.x_shape)


def test_matrix_adjoint_is_transpose(op):
    """A^T e_i (the adjoint on the basis of y) is row i of the forward matrix."""
    eye = torch.eye(op.y_dim, dtype=F64).reshape(op.y_dim, *op.y_shape)
    rows = op.adjoint(eye).reshape(op.y_dim, op.x_dim)
    torch.testing.assert_close(rows, op.matrix(), rtol=0, atol=1e-12)


def test_svd_reconstructs_forward(op):
    """A x = U(s * Vt(x)[:rank]) for random x."""
    x = randn((3, *op.x_shape), 12)
    z = op.Vt(x)
    assert z.shape == (3, op.x_dim) and op.singulars.shape == (op.rank,)
    torch.testing.assert_close(op.U(op.singulars * z[:, : op.rank]), op(x), rtol=0, atol=1e-12)


def test_svd_bases_are_orthonormal(op):
    """V and U as explicit matrices (images of the coordinate basis) are orthogonal, and
    Vt / Ut are their transposes."""
    d, m = op.x_dim, op.y_dim
    V = op.V(torch.eye(d, dtype=F64)).reshape(d, d).T  # column j = V e_j
    U = op.U(torch.eye(m, dtype=F64)).reshape(m, m).T
    torch.testing.assert_close(V.T @ V, torch.eye(d, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(U.T @ U, torch.eye(m, dtype=F64), rtol=0, atol=1e-12)
    x, y = randn((2, *op.x_shape), 13), randn((2, *op.y_shape), 14)
    torch.testing.assert_close(op.Vt(x), x.reshape(2, d) @ V, rtol=0, atol=1e-12)
    torch.testing.assert_close(op.Ut(y), y.reshape(2, m) @ U, rtol=0, atol=1e-12)


def test_singulars_match_dense_svd(op):
    """The singular values equal torch.linalg.svdvals of the dense matrix, sorted."""
    s = op.singulars
    assert s.dtype == F64 and (s >= 0).all() and (s[:-1] >= s[1:]).all()
    assert op.rank == min(op.x_dim, op.y_dim)
    torch.testing.assert_close(s, torch.linalg.svdvals(op.matrix()), rtol=0, atol=1e-12)


def test_pinv_matches_dense_pinv(op):
    """A A^+ (A x) = A x, and A^+ y equals torch.linalg.pinv of the matrix (same cutoff)."""
    x, y = randn((3, *op.x_shape), 15), randn((3, *op.y_shape), 16)
    Ax = op(x)
    torch.testing.assert_close(op(op.pinv(Ax, rcond=1e-9)), Ax, rtol=0, atol=1e-8)
    P = torch.linalg.pinv(op.matrix(), rtol=1e-9)
    want = (y.reshape(3, -1) @ P.T).reshape(3, *op.x_shape)
    torch.testing.assert_close(op.pinv(y, rcond=1e-9), want, rtol=1e-9, atol=1e-9)


def test_float32_and_measure(op):
    """float32 inputs give float32 outputs close to float64; measure draws from the
    generator (same seed, same y) and adds sigma_y * N(0, I)."""
    x = randn((2, *op.x_shape), 17)
    y32 = op(x.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), op(x), rtol=1e-5, atol=1e-5)
    y1, y2 = op.measure(x, gen(3)), op.measure(x, gen(3))
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    noise = torch.randn(y1.shape, generator=gen(3), dtype=F64)
    torch.testing.assert_close(y1, op(x) + op.sigma_y * noise, rtol=0, atol=1e-14)


# --- operator-specific truths -------------------------------------------------------------


def test_inpainting_selects_masked_entries():
    mask = random_mask((3, 5, 6), 0.4, gen(20))
    A = Inpainting(mask)
    x = randn((2, 3, 5, 6), 21)
    torch.testing.assert_close(A(x), x[:, mask], rtol=0, atol=0)  # boolean indexing
    filled = A.fill(A(x), value=-7.0)
    assert (filled[:, mask] == x[:, mask]).all() and (filled[:, ~mask] == -7.0).all()
    assert torch.equal(A.singulars, torch.ones(int(mask.sum()), dtype=F64))


def test_random_mask_counts_seeds_and_shared_dims():
    m = random_mask((3, 10, 10), 0.25, gen(0))
    assert m.dtype == torch.bool and int(m.sum()) == 75
    assert torch.equal(m, random_mask((3, 10, 10), 0.25, gen(0)))
    assert not torch.equal(m, random_mask((3, 10, 10), 0.25, gen(1)))
    shared = random_mask((3, 10, 10), 0.25, gen(0), shared_dims=(0,))
    assert int(shared[0].sum()) == 25 and (shared == shared[:1]).all()


def test_box_mask_ints_and_slices_agree():
    a = box_mask((2, 6, 7), (1, 2, 3, 4))
    b = box_mask((2, 6, 7), (slice(1, 4), slice(2, 6)))
    assert torch.equal(a, b)
    assert int((~a).sum()) == 2 * 3 * 4 and not a[:, 1:4, 2:6].any()


def test_avgpool_matches_torch_and_singulars():
    x = randn((2, 3, 12, 18), 30)
    for f in (1, 2, 3, 6):
        A = SuperResolution((3, 12, 18), f)
        torch.testing.assert_close(A(x), F.avg_pool2d(x, f), rtol=0, atol=1e-14)
        assert torch.allclose(A.singulars, torch.full((A.rank,), 1.0 / f, dtype=F64))
    vol = randn((2, 2, 3, 6, 9), 31)  # (B, C, H, W, D): pools the last two dims
    A = SuperResolution((2, 3, 6, 9), 3)
    want = F.avg_pool2d(vol.reshape(2, 6, 6, 9), 3).reshape(2, 2, 3, 2, 3)
    torch.testing.assert_close(A(vol), want, rtol=0, atol=1e-14)


@pytest.mark.parametrize("factor, H, W", [(2, 16, 12), (3, 24, 9), (4, 16, 20)])
def test_bicubic_matches_torch_interpolate_everywhere(factor, H, W):
    """Borders included: the matrix truncates and renormalises the stretched Keys kernel
    exactly as PyTorch's antialiased bicubic does (measured max difference ~1e-15)."""
    x = randn((2, 3, H, W), 32)
    A = SuperResolution((3, H, W), factor, kind="bicubic")
    want = F.interpolate(x, size=(H // factor, W // factor), mode="bicubic", antialias=True)
    torch.testing.assert_close(A(x), want, rtol=0, atol=1e-13)
    want32 = F.interpolate(
        x.float(), size=(H // factor, W // factor), mode="bicubic", antialias=True
    )
    torch.testing.assert_close(A(x.float()), want32, rtol=1e-5, atol=1e-5)


def test_bicubic_matrix_rows():
    A = bicubic_matrix(12, 3)
    torch.testing.assert_close(A.sum(1), torch.ones(4, dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(bicubic_matrix(5, 1), torch.eye(5, dtype=F64), rtol=0, atol=1e-15)
    # interior row: the Keys kernel stretched by 3 sampled at pixel centres, weights sum 3
    t = (torch.arange(12, dtype=F64) + 0.5 - 3 * 1.5) / 3
    k = torch.where(t.abs() < 1, 1.5 * t.abs() ** 3 - 2.5 * t**2 + 1, 0.0)
    k = k + torch.where(
        (t.abs() >= 1) & (t.abs() < 2), -0.5 * (t.abs() - 1) * (t.abs() - 2) ** 2, 0.0
    )
    torch.testing.assert_close(A[1], k / k.sum(), rtol=0, atol=1e-15)


def rolled_convolution(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y[n] = sum_a k[a] x[n - a + c], as a sum of rolled copies (periodic boundary)."""
    ch, cw = k.shape[0] // 2, k.shape[1] // 2
    y = torch.zeros_like(x)
    for a in range(k.shape[0]):
        for b in range(k.shape[1]):
            y = y + k[a, b] * torch.roll(x, shifts=(a - ch, b - cw), dims=(-2, -1))
    return y


@pytest.mark.parametrize("kshape", [(3, 3), (4, 3), (5, 2), (1, 1)])
def test_blur_matches_rolled_sum(kshape):
    k = randn(kshape, 40)
    x = randn((2, 3, 9, 8), 41)
    A = Blur((3, 9, 8), k)
    torch.testing.assert_close(A(x), rolled_convolution(x, k), rtol=0, atol=1e-12)
    if kshape[0] % 2 and kshape[1] % 2:  # scipy's origin is the centre for odd kernels
        want = scipy.ndimage.convolve(x.numpy(), k.numpy()[None, None], mode="wrap")
        torch.testing.assert_close(A(x), torch.from_numpy(want), rtol=0, atol=1e-12)


def test_blur_fourier_and_pinv_cutoff():
    k = gaussian_kernel(7, 2.0)
    A = Blur((16, 16), k)
    padded = torch.zeros(16, 16, dtype=F64)
    padded[:7, :7] = k
    K = torch.fft.fft2(torch.roll(padded, (-3, -3), (0, 1)))
    torch.testing.assert_close(A.fourier, K)
    s = torch.sort(K.abs().flatten(), descending=True).values
    torch.testing.assert_close(A.singulars, s, rtol=0, atol=1e-14)
    # a truncated inverse: dropping s <= 1e-3 leaves A A^+ y equal to y's well-measured part
    y = randn((1, 16, 16), 42)
    keep = (K.abs() > 1e-3).to(F64)
    want = torch.fft.ifft2(torch.fft.fft2(y) * keep).real
    torch.testing.assert_close(A(A.pinv(y, rcond=1e-3)), want, rtol=0, atol=1e-10)


def test_kernels():
    g = gaussian_kernel(5, 1.5)
    assert g.shape == (5, 5) and math.isclose(float(g.sum()), 1.0)
    torch.testing.assert_close(g, g.T)
    torch.testing.assert_close(g, g.flip(0))
    m = motion_kernel(9, 0.0, 6.0)  # horizontal: one row, centred, symmetric
    assert (
        math.isclose(float(m.sum()), 1.0) and (m[4] > 0).sum() == 7 and m[[3, 5]].abs().max() == 0
    )
    torch.testing.assert_close(m, m.flip(1))
    torch.testing.assert_close(motion_kernel(9, 90.0, 6.0), m.T, rtol=0, atol=1e-12)
    delta = torch.zeros(5, 5, dtype=F64)
    delta[2, 2] = 1
    torch.testing.assert_close(motion_kernel(5, 17.0, 0.0), delta)


def test_dense_svd_reconstructs_matrix():
    M = randn((6, 10), 50)
    A = Dense(M)
    r = A.rank
    torch.testing.assert_close((A.Um[:, :r] * A.singulars) @ A.Vm[:, :r].T, M, rtol=0, atol=1e-12)
    torch.testing.assert_close(A.matrix(), M, rtol=0, atol=0)


def test_random_mcgdiff_protocol():
    A = Dense.random_mcgdiff(30, 8, gen(5))
    B = Dense.random_mcgdiff(30, 8, gen(5))
    torch.testing.assert_close(A.M, B.M, rtol=0, atol=0)
    assert A.sigma_y == B.sigma_y
    s = torch.linalg.svdvals(A.M)
    assert s.numel() == 8 and ((s > 0) & (s < 1)).all()
    assert 0 < A.sigma_y < float(s[0])
    C = Dense.random_mcgdiff(30, 8, gen(6))
    assert not torch.allclose(C.singulars, A.singulars)


# --- errors ------------------------------------------------------------------------------


def test_measurement_and_signal_shape_errors():
    A = SuperResolution((3, 8, 8), 2)
    with pytest.raises(ValueError, match=r"y must have shape \(B, 3, 4, 4\).*got \(2, 3, 8, 8\)"):
        A.check_measurement(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="y must have shape"):
        A.adjoint(torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="x must have shape"):
        A(torch.zeros(3, 8, 8))  # batch dimension missing
    with pytest.raises(ValueError, match="floating"):
        A(torch.zeros(2, 3, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="k <= 192"):
        A.V(torch.zeros(2, 200))


def test_sigma_y_errors():
    for bad in (-0.1, float("nan"), float("inf"), "a"):
        with pytest.raises(ValueError, match="sigma_y"):
            Identity((3,), sigma_y=bad)
    with pytest.raises(ValueError, match="sigma_y"):
        Dense(torch.eye(3), sigma_y=-1.0)


def test_mask_errors():
    with pytest.raises(ValueError, match="bool"):
        Inpainting(torch.ones(3, 4))
    with pytest.raises(ValueError, match="no entry"):
        Inpainting(torch.zeros(3, 4, dtype=torch.bool))
    A = Inpainting(torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, 4\).*got \(2, 4, 3\)"):
        A(torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="does not fit"):
        box_mask((8, 8), (6, 0, 4, 2))
    with pytest.raises(ValueError, match="fraction_observed"):
        random_mask((8, 8), 0.0, gen(0))


def test_super_resolution_and_blur_errors():
    with pytest.raises(ValueError, match="not divisible by factor 3"):
        SuperResolution((3, 8, 9), 3)
    with pytest.raises(ValueError, match="unknown kind 'nearest'"):
        SuperResolution((3, 8, 8), 2, kind="nearest")
    with pytest.raises(ValueError, match="factor must be a positive integer"):
        SuperResolution((3, 8, 8), 0)
    with pytest.raises(ValueError, match="larger than the image"):
        Blur((4, 4), torch.ones(5, 5))
    with pytest.raises(ValueError, match="x_shape"):
        Dense(torch.eye(6), x_shape=(2, 2))


def test_pinv_without_svd_is_a_clear_error():
    class Scale(LinearOperator):
        def __init__(self) -> None:
            super().__init__((3,), (3,))

        def _forward(self, x):
            return 2 * x

        _adjoint = _forward

    A = Scale()
    assert not A.has_svd and torch.equal(A(torch.ones(1, 3)), 2 * torch.ones(1, 3))
    with pytest.raises(ValueError, match="Scale has no SVD"):
        A.pinv(torch.ones(1, 3))


def test_public_names():
    import diffsci.restoration as restoration

    for name in ops.__all__:
        assert getattr(restoration, name) is getattr(ops, name)
