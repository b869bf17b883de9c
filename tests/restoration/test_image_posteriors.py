"""DPS and RED-Diff on images: the update rules re-derived by hand (no network), and one
held-out crop with the committed prior, where both used to fail (DPS under-guided: PSNR
14 dB with a residual ten times the noise; RED-Diff on deblurring started from a
pseudo-inverse with values up to ~1e5 and ended at 4.5 - 5 dB)."""

import pytest
import torch

from diffsci.core import VP
from diffsci.core.schedules import time_grid
from diffsci.restoration import Blur, gaussian_kernel, mcgdiff_problem
from diffsci.restoration.data import heldout_images
from diffsci.restoration.evaluate import boundary_benchmark, boundary_markdown, image_benchmark
from diffsci.restoration.posterior import dps, pigdm
from diffsci.restoration.prior import load_prior
from diffsci.restoration.reddiff import reddiff
from diffsci.restoration.tasks import SIGMA_Y, make_operator

f64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR on [-1, 1] images (data range 2), of the batch as one signal."""
    mse = float((x.clamp(-1, 1) - ref).square().mean())
    return 10 * torch.log10(torch.tensor(4.0 / mse)).item()


def rms_residual(A, y, x) -> float:
    """The largest per-image rms of y - A x (sigma_y for the truth, on average)."""
    return float((y - A(x)).flatten(1).norm(dim=1).max()) / A.y_dim**0.5


def test_dps_paper_rule_is_a_ddpm_step_then_a_gradient_step():
    """gaussian=False is Chung et al. 2023, Algorithm 1: x'_s ~ q(x_s | x_t, x0_hat) (Ho et
    al. 2020, eq. 6-7, written out here), then x_s = x'_s - zeta grad_{x_t} ||y - A x0_hat||
    per row. Re-derived by autograd over three steps, same noise draws."""
    P = mcgdiff_problem(8, 2, 0)
    p = VP()
    D = P.prior.denoiser(p)
    zeta, steps = 0.7, 3
    Y = P.y.expand(4, -1)
    x = x1 = p.prior((4, 8), generator=gen(3), dtype=f64)
    g = gen(5)
    ts = time_grid(p, steps, "uniform")
    for i in range(steps):
        t, s = ts[i], ts[i + 1]
        xg = x.detach().requires_grad_(True)
        x0 = D(xg, t.expand(4))
        (grad,) = torch.autograd.grad((Y - P.A(x0)).norm(dim=1).sum(), xg)
        a_t, s_t, a_s, s_s = p.alpha(t), p.sigma(t), p.alpha(s), p.sigma(s)
        a_ts = a_t / a_s
        var_ts = s_t**2 - a_ts**2 * s_s**2  # the variance of q(x_t | x_s)
        mean = a_s * var_ts / s_t**2 * x0.detach() + a_ts * s_s**2 / s_t**2 * x
        std = (var_ts * s_s**2 / s_t**2).sqrt()
        x = mean + std * torch.randn(x.shape, generator=g, dtype=f64) - zeta * grad
    r = dps(D, p, P.A, P.y, x1, steps, gen(5), gaussian=False, scale=zeta)
    assert r.evals == 4 * steps
    assert torch.allclose(r.x, x, atol=1e-10, rtol=1e-8)
    with pytest.raises(ValueError, match="solver must be 'ddpm'"):
        dps(D, p, P.A, P.y, x1, steps, gaussian=False, solver="ddim")


def test_reddiff_starts_at_the_noise_level_pseudo_inverse():
    """For a Gaussian blur (min |K| ~ 1e-8 on 16x16) mu0 is the truncated inverse, written
    here in Fourier: Y / K where |K| > sigma_y, else 0. (The full A^+ y reaches ~1e2 - 1e5,
    which Adam at lr 0.1 never walks back: RED-Diff ended at 4.5 dB on deblurring.)"""
    A = Blur((1, 16, 16), gaussian_kernel(9, 2.0), sigma_y=SIGMA_Y)
    x = torch.rand(2, 1, 16, 16, generator=gen(0), dtype=f64) * 2 - 1
    y = A.measure(x, gen(1))
    K = A.fourier
    keep = K.abs() > SIGMA_Y
    want = torch.fft.ifft2(torch.where(keep, torch.fft.fft2(y) / K, 0)).real
    D = lambda xt, t, cond=None: torch.zeros_like(xt)
    p = VP()
    x1 = p.prior((2, 1, 16, 16), generator=gen(2), dtype=f64)
    mu0 = reddiff(D, p, A, y, x1, 1, gen(3), lr=1e-12).x
    assert torch.allclose(mu0, want, atol=1e-8)
    assert float(A.pinv(y).abs().max()) > 100 > 1.5 > float(mu0.abs().max())


@pytest.fixture(scope="module")
def crop():
    """The committed prior and the first held-out crop (float32, as the benchmark)."""
    den = load_prior()
    D = lambda xt, t, cond=None: den(xt.float(), t).to(xt.dtype)
    x = heldout_images(64).float()[:1]
    x1 = den.process.prior((1, *x.shape[1:]), generator=gen(1), dtype=torch.float32)
    return D, den.process, x, x1


def test_dps_on_an_image_fits_the_measurement(crop):
    """Random inpainting (half the pixels, sigma_y 0.05), the benchmark's rule zeta' = 3, 50
    steps, one sample. Measured on held-out crops 0 / 1 / 2 (the prior trained on the
    "debian_jigzo" set): PSNR 29.6 / 29.2 / 30.8 dB against 12.6 / 14.2 / 12.4 for the
    zero-filled pseudo-inverse, rms residual 0.044 / 0.044 / 0.047 (sigma_y = 0.05).
    Before the fix (zeta entered as a score weight, a step in x of zeta alpha_s / alpha_t
    sigma_{t|s}^2, far below the paper's zeta): 16.5 dB on crop 0 with zeta = 3 (the benchmark's 14.1 dB with zeta = 1). Bounds
    (crop 0): PSNR above the pseudo-inverse + 12 dB, residual below 1.5 sigma_y."""
    D, p, x, x1 = crop
    A = make_operator("inpaint-random", x.shape[1:])
    y = A.measure(x, gen(0))
    r = dps(D, p, A, y, x1, 50, gen(2), gaussian=False, scale=3.0)
    assert psnr(r.x, x) > psnr(A.pinv(y), x) + 12
    assert rms_residual(A, y, r.x) < 1.5 * SIGMA_Y


def test_reddiff_on_a_blurred_image_fits_the_data(crop):
    """Deblurring (9x9 Gaussian, std 2, sigma_y 0.05), official defaults, 20 steps.
    Measured on held-out crops 0 / 1 / 2 ("debian_jigzo" prior): PSNR 23.4 / 23.2 / 25.6
    dB, rms residual 0.061 / 0.057 / 0.060, max |mu| 1.13 / 0.98 / 1.09. With the untruncated
    A^+ y as mu0: 4.5 dB, residual 0.112, max |mu| 1.5e5. Bounds (crop 0): PSNR > 21, residual < 1.6 sigma_y,
    max |mu| < 1.5."""
    D, p, x, x1 = crop
    A = make_operator("deblur", x.shape[1:])
    y = A.measure(x, gen(0))
    r = reddiff(D, p, A, y, x1, 20, gen(2))
    assert psnr(r.x, x) > 21
    assert rms_residual(A, y, r.x) < 1.6 * SIGMA_Y
    assert float(r.x.abs().max()) < 1.5


def test_image_benchmark_selects_methods():
    res = image_benchmark(["sr4"], images=1, methods=["bicubic"])
    assert [(r["task"], r["method"]) for r in res["rows"]] == [("sr4", "bicubic")]
    with pytest.raises(ValueError, match="unknown image methods"):
        image_benchmark(["sr4"], images=1, methods=["dsp"])


def test_psnr_limit_recovers_the_bias_of_iid_samples():
    """Samples x + 0.1 + 0.3 n: the mean of infinitely many has mse 0.01 (26.02 dB);
    the mean of K = 32 has 0.01 + 0.09 / 32 (24.94 dB). The estimate from the 32 samples
    must find the limit, not the finite-K value. Its own noise, from the 4096 pixels per
    image: the cross term 0.2 mean(noise of the mean) has std 0.2 * 0.053 / 64 = 1.7e-4,
    1.7% of the mse or 0.07 dB per image (measured: 26.11 dB; 26.01 - 26.11 over the
    seeds 0 - 3; bound 0.2 dB)."""
    from diffsci.restoration.evaluate import psnr_limit

    x = torch.zeros(4, 1, 64, 64)
    K = 32
    s = 0.1 + 0.3 * torch.randn(4 * K, 1, 64, 64, generator=gen(0))
    limit = psnr_limit(x, s, K)
    assert abs(limit - 10 * torch.log10(torch.tensor(4 / 0.01)).item()) < 0.2, limit
    assert limit > psnr(s.reshape(4, K, 1, 64, 64).mean(1), x) + 0.8
    with pytest.raises(ValueError, match="K >= 2"):
        psnr_limit(x, s[:4], 1)
    with pytest.raises(ValueError, match="expected"):  # K rows for every image
        psnr_limit(x, s[:-1], K)


def test_image_benchmark_splits_and_hole_psnr():
    val = image_benchmark(["inpaint-box"], images=1, methods=["biharmonic"], split="validation")
    test = image_benchmark(["inpaint-box"], images=1, methods=["biharmonic"])
    (rv,), (rt,) = val["rows"], test["rows"]
    assert val["split"] == "validation" and rv["psnr"] != rt["psnr"]
    # the hole is where the error lives: its PSNR is far below the whole image's
    assert rv["psnr_unobserved"] < rv["psnr"] - 3
    # biharmonic keeps y where it is observed: PSNR of noise std 0.05, 10 log10(4 / 0.0025)
    assert abs(rv["psnr_observed"] - 32.04) < 0.3
    with pytest.raises(ValueError, match="split"):
        image_benchmark(["sr4"], images=1, methods=["bicubic"], split="train")


def test_pigdm_paper_weight_is_the_tweedie_shift_times_alpha_squared():
    """One step returns the guided x0 at the first time of the grid, so the paper's
    weight at scale 1 equals the Tweedie weight at scale alpha_t^2 there, exactly."""
    P = mcgdiff_problem(8, 2, 0)
    p = VP()
    D = P.prior.denoiser(p)
    x1 = p.prior((16, 8), generator=gen(3), dtype=f64)
    a2 = float(p.alpha(time_grid(p, 1, "uniform")[0]) ** 2)
    paper = pigdm(D, p, P.A, P.y, x1, 1, weight="paper")
    tweedie = pigdm(D, p, P.A, P.y, x1, 1, scale=a2)
    assert torch.allclose(paper.x, tweedie.x, atol=1e-12)
    assert not torch.allclose(paper.x, pigdm(D, p, P.A, P.y, x1, 1).x, atol=1e-3)
    with pytest.raises(ValueError, match="weight"):
        pigdm(D, p, P.A, P.y, x1, 1, weight="alpha")


@pytest.mark.parametrize("task", ["inpaint-box", "sr4", "deblur"])
def test_pigdm_project_lands_on_the_measurement(task):
    """project=True ends on x0 + A^+ (y - A x0), A^+ cut at the noise level: with
    inpainting the observed entries are y (the official code's paste) and with SR x4
    (every s = 0.25 > sigma_y) A x = y, both to rounding; with the blur only the kept singular
    directions are fitted, so its residual stays larger but smaller than unprojected."""
    x = heldout_images(32)[:2].double()
    A = make_operator(task, x.shape[1:])
    y = A.measure(x, gen(0))
    p = VP("cosine")
    D = lambda xt, t, cond=None: 0.5 * xt  # a crude shrinking denoiser: no fit on its own
    x1 = p.prior(x.shape, generator=gen(1), dtype=f64)
    plain = pigdm(D, p, A, y, x1, 3, gen(2), weight="paper")
    proj = pigdm(D, p, A, y, x1, 3, gen(2), weight="paper", project=True)
    if task == "deblur":
        assert rms_residual(A, y, proj.x) < 0.5 * rms_residual(A, y, plain.x)
    else:
        assert rms_residual(A, y, proj.x) < 1e-10 < rms_residual(A, y, plain.x)


def test_pigdm_paper_weight_inpaints_an_image(crop):
    """Box inpainting, 50 steps, one sample, eta = 1, the benchmark's weight "paper" and
    scale 3. Measured on held-out crops 0 / 1 / 2: PSNR 21.5 / 22.1 / 25.3 dB against the
    zero-filled pseudo-inverse's 15.2 / 15.8 / 14.9; rms residual 0.040 - 0.046 (sigma_y =
    0.05). With the Tweedie weight crop 0 ends at 14.6 dB, below the pseudo-inverse. Bounds
    (crop 0): PSNR above the pseudo-inverse + 5 dB, residual below 1.5 sigma_y."""
    D, p, x, x1 = crop
    A = make_operator("inpaint-box", x.shape[1:])
    y = A.measure(x, gen(0))
    r = pigdm(D, p, A, y, x1, 50, gen(2), weight="paper", scale=3.0)
    assert psnr(r.x, x) > psnr(A.pinv(y), x) + 5
    assert rms_residual(A, y, r.x) < 1.5 * SIGMA_Y


def test_boundary_benchmark_reports_the_search_and_the_draws():
    """A tiny BCDM run (2 reference patches, 2 candidates, 3 fresh draws, 3 steps) on the
    validation crops: the budget is counted, the chosen x_T is the best on the references,
    and the table renders."""
    r = boundary_benchmark("ddrm", references=2, candidates=2, fresh=3, steps=3, split="validation")
    assert r["search_evals"] == 2 * 2 * 3 and r["images"] == 4 and len(r["psnr_random"]) == 3
    assert r["reference_psnr_chosen"] >= r["reference_psnr_candidates_mean"]
    assert 0 <= r["chosen_beats"] <= 3 and 5 < r["psnr_chosen"] < 40
    assert "| sr4 | ddrm | 3 |" in boundary_markdown([r])
    with pytest.raises(ValueError, match="split"):
        boundary_benchmark("ddrm", split="train")
    with pytest.raises(ValueError, match="fresh"):
        boundary_benchmark("ddrm", fresh=0)
