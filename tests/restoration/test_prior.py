"""The committed image prior denoises held-out photographs better than any Gaussian filter.

The truth is re-derived a second way: the best fixed linear smoother of the noisy image
(a Gaussian filter whose width is chosen, per noise level, to maximise the PSNR on the
test images themselves, an oracle choice) and the noisy image itself. A prior that has
learned image structure (edges, textures) beats both on images it never saw.

Measured with the committed checkpoint on the 12 held-out 64x64 crops (camera,
astronaut, coffee), noise std s/a in [-1, 1] units, PSNR over a range of 2:

    noise std   noisy input   best Gaussian filter   prior D(x_t, t)
    0.05        32.2 dB       33.0 dB                36.9 dB
    0.1         26.3 dB       29.1 dB                32.8 dB
    0.2         20.5 dB       25.9 dB                29.0 dB
    0.4         15.0 dB       22.9 dB                25.5 dB

(the checkpoint trained on the "debian_jigzo" set; the "debian_lomiri" prior before it
measured 37.1 / 33.0 / 29.1 / 25.6 dB, the "debian" prior 36.9 / 32.8 / 28.9 / 25.4 dB,
the earlier skimage-only prior 36.1 / 32.0 / 28.1 / 24.6 dB)

The assertions (noise 0.1 and 0.2) keep margins of about half the measured gain.
"""

import math

import pytest
import torch

pytest.importorskip("skimage")

from diffsci.core import UNet  # noqa: E402
from diffsci.restoration.data import heldout_images  # noqa: E402
from diffsci.restoration.prior import load_prior  # noqa: E402

WIDTHS = (0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR over the whole batch for images in [-1, 1] (peak-to-peak range 2)."""
    mse = float(((x.clamp(-1, 1) - ref) ** 2).mean())
    return 10 * math.log10(4.0 / mse)


def gaussian_filter(y: torch.Tensor, width: float) -> torch.Tensor:
    """Separable Gaussian blur of std ``width`` pixels, reflect padding."""
    r = math.ceil(3 * width)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=y.dtype) / width) ** 2)
    k = k / k.sum()
    y = torch.nn.functional.pad(y, (r, r, r, r), mode="reflect")
    y = torch.nn.functional.conv2d(y, k.reshape(1, 1, 1, -1))
    return torch.nn.functional.conv2d(y, k.reshape(1, 1, -1, 1))


def denoising_psnrs(prior, x0: torch.Tensor, noise_std: float) -> tuple[float, float, float]:
    """(noisy, best Gaussian filter, prior) PSNRs at x_t = alpha x0 + sigma eps with
    sigma / alpha = noise_std."""
    process = prior.process
    t = process.t_of_log_snr(torch.tensor(-2.0 * math.log(noise_std), dtype=torch.float64))
    a, s = float(process.alpha(t)), float(process.sigma(t))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    xt = a * x0 + s * eps
    y = xt / a  # the noisy image in data units: x0 + noise_std * eps
    best_blur = max(psnr(gaussian_filter(y, w), x0) for w in WIDTHS)
    with torch.no_grad():
        d = prior(xt, t.expand(len(x0)))
    return psnr(y, x0), best_blur, psnr(d, x0)


@pytest.fixture(scope="module")
def prior():
    return load_prior()


def test_committed_prior_is_the_documented_model(prior):
    assert isinstance(prior.net, UNet) and prior.prediction == "v"
    assert sum(p.numel() for p in prior.net.parameters()) < 1_250_000
    x = torch.zeros(2, 1, 64, 64)
    with torch.no_grad():
        assert prior(x, torch.tensor([0.5, 0.5], dtype=torch.float64)).shape == x.shape


@pytest.mark.parametrize("noise_std,margin", [(0.1, 1.5), (0.2, 1.0)])
def test_prior_denoises_heldout_images_better_than_any_gaussian_filter(prior, noise_std, margin):
    x0 = heldout_images(64)
    noisy, blur, learned = denoising_psnrs(prior, x0, noise_std)
    assert learned > noisy + margin, (noisy, blur, learned)
    assert learned > blur + margin, (noisy, blur, learned)


def test_denoise_benchmark_scores_the_committed_prior():
    from diffsci.restoration.evaluate import denoise_benchmark, denoise_markdown

    # measured (per-image mean PSNR, test crops): noisy 26.3 / 20.5, prior 33.0 / 29.2 dB
    res = denoise_benchmark((0.1, 0.2))
    lo, hi = res["rows"]
    assert res["images"] == 12 and lo["sigma"] == 0.1
    assert lo["psnr"] > lo["psnr_noisy"] + 3 and hi["psnr"] > hi["psnr_noisy"] + 4
    assert lo["psnr"] > hi["psnr"]  # less noise, a better estimate
    assert denoise_markdown(res).count("\n") == 3
    with pytest.raises(ValueError, match="noise stds > 0"):
        denoise_benchmark((0.0,))


def test_the_photos_split_refuses_a_prior_that_trained_on_its_photographs(tmp_path):
    from diffsci.restoration.evaluate import _held_out_from, _prior_denoiser
    from diffsci.restoration.prior import export_slim, prior_training_set, train_prior

    assert _held_out_from("photos", "skimage") and _held_out_from("test", None)
    assert _held_out_from("photos", "debian")  # the Debian sets leave PHOTOS out
    assert _held_out_from("photos", "debian_lomiri") and _held_out_from("photos", "debian_jigzo")
    assert not any(_held_out_from("photos", ts) for ts in ("photos", None, "unknown"))

    full, out = tmp_path / "full.ckpt", tmp_path / "p.pt"
    train_prior(out, 1, 2, checkpoint_every=1, train_checkpoint=full, progress=False)
    assert prior_training_set(out) == "skimage" and prior_training_set(None) == "debian_jigzo"
    _prior_denoiser(str(out), "photos")  # never saw data.PHOTOS: accepted
    for name in ("photos", None):  # trained on them, or no record: refused
        export_slim(full, out, name)
        assert prior_training_set(out) == name
        with pytest.raises(ValueError, match="never trained on data.PHOTOS"):
            _prior_denoiser(str(out), "photos")
