"""``diffsci restore``: simulate a measurement of an image and restore it.

    diffsci restore --task sr4 --method ddrm,pigdm --input photo.png --output restored.png

The input image is the truth: it is converted to grayscale in [-1, 1], resized so that
its short side is ``--size`` pixels and centre-cropped to a square, measured with the
task's operator (``restoration.tasks``; noise std 0.05), and restored by each method
with the committed image prior: the mean of ``--samples`` posterior samples (default 4),
with the benchmark's settings per task and method (``evaluate.image_options``).
``--output`` receives the first method's restoration; ``--grid`` (default: next to the
output, ``*_grid.png``) shows the measurement
(pseudo-inverse back-projection for SR and blur, the observed pixels for inpainting),
every method and the truth (the input), with PSNR in the titles.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from diffsci.core.utils import atomic_write

from .classical import CLASSICAL
from .evaluate import image_options  # the benchmark's settings per (task, method)
from .posterior import POSTERIOR_SAMPLERS, posterior_sample
from .tasks import TASKS, make_operator

__all__ = ["add_parser", "run"]

SAMPLES = 4


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore an image (super-resolution, inpainting, deblur)")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument(
        "--method",
        default="ddrm",
        help="comma-separated posterior samplers or classical baselines "
        f"(samplers: {', '.join(sorted(POSTERIOR_SAMPLERS))}; classical: "
        f"{', '.join(CLASSICAL)})",
    )
    p.add_argument("--input", required=True, help="the clean image (PNG/JPEG; the truth)")
    p.add_argument("--output", required=True, help="where to write the first restoration")
    p.add_argument("--grid", default=None, help="PNG grid (default: <output>_grid.png)")
    p.add_argument("--size", type=int, default=64, help="short side in pixels (default 64)")
    # 50: the image benchmark's setting, for which the defaults (DPS's zeta) were tuned
    p.add_argument("--steps", type=int, default=50, help="sampler steps (default 50)")
    p.add_argument(
        "--samples",
        type=int,
        default=SAMPLES,
        help=f"posterior samples averaged into the restoration (default {SAMPLES}; the "
        "mean of K samples estimates the posterior mean, which PSNR rewards)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def _load(path: str, size: int) -> torch.Tensor:
    from skimage import color, io, transform

    if not os.path.exists(path):
        raise ValueError(f"input image {path!r} does not exist")
    im = io.imread(path)
    if im.ndim == 3:
        im = color.rgb2gray(im[..., :3])
    im = im.astype(np.float64)
    if im.max() > 1.0:
        im = im / 255.0
    h, w = im.shape
    scale = size / min(h, w)
    im = transform.resize(im, (round(h * scale), round(w * scale)), anti_aliasing=True)
    h, w = im.shape
    top, left = (h - size) // 2, (w - size) // 2
    im = im[top : top + size, left : left + size]
    return torch.from_numpy(im * 2 - 1).float()[None, None]


def _save(path: str, x: torch.Tensor) -> None:
    from skimage import io

    arr = ((x[0, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    atomic_write(path, lambda tmp: io.imsave(tmp, arr, check_contrast=False))


def _psnr(x: torch.Tensor, xh: torch.Tensor) -> float:
    mse = float((x.double() - xh.double().clamp(-1, 1)).square().mean())
    return 10 * np.log10(4.0 / max(mse, 1e-12))


def run(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    for m in methods:
        if m not in POSTERIOR_SAMPLERS and m not in CLASSICAL:
            raise ValueError(
                f"unknown method {m!r}; samplers: {sorted(POSTERIOR_SAMPLERS)}, "
                f"classical: {sorted(CLASSICAL)}"
            )
    if args.size % 4:
        raise ValueError(f"--size must be a multiple of 4, got {args.size}")
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    x = _load(args.input, args.size)
    A = make_operator(args.task, x.shape[1:])
    y = A.measure(x, torch.Generator().manual_seed(args.seed))
    shown = A.fill(y, 0.0) if hasattr(A, "fill") else A.pinv(y, rcond=1e-3)
    results = []
    den = None
    for m in methods:
        tic = time.perf_counter()
        if m in CLASSICAL:
            xh = CLASSICAL[m](A, y).float()
        else:
            if den is None:
                from .prior import load_prior

                den = load_prior()
            p = den.process
            shape = (args.samples, *x.shape[1:])  # K rows for the one measurement
            x1 = p.prior(shape, generator=torch.Generator().manual_seed(args.seed + 1))
            gen = torch.Generator().manual_seed(args.seed + 2)
            post = posterior_sample(
                m, den, p, A, y, x1, args.steps, gen, **image_options(args.task, m)
            )
            xh = post.mean().float()
        sec = time.perf_counter() - tic
        results.append((m, xh))
        if not args.quiet:
            print(f"{m}: PSNR {_psnr(x, xh):.2f} dB, {sec:.1f} s")
    _save(args.output, results[0][1])
    grid = args.grid or os.path.splitext(args.output)[0] + "_grid.png"
    _grid(grid, x, shown.float(), results, args.task)
    if not args.quiet:
        print(f"wrote {args.output} and {grid}")
    return 0


def _grid(path: str, x, shown, results, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"measurement ({task})", shown)]
    panels += [(f"{m}: {_psnr(x, xh):.2f} dB", xh) for m, xh in results]
    panels.append(("truth", x))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6))
    for ax, (title, im) in zip(np.atleast_1d(axes), panels):
        ax.imshow(im[0, 0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
