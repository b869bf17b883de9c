"""A supervised reference for SR x4 and box inpainting: how far a network trained by
regression on the prior's own training images gets on the held-out crops.

The diffusion methods are scored on the mean of their samples, an estimate of the
posterior mean E[x | y] under the learned prior. A network trained to minimise
E ||f(y) - x||^2 on the same images estimates that same posterior mean directly,
under the training images' distribution, without a generative model or a sampler in
between. Its PSNR is therefore a reference for what the training data supports: if the
diffusion posterior mean is far below it, the prior or the sampler leaves PSNR on the
table; if it is close, a better sampler cannot close a gap to a target above it.

The regressor is the prior's own network (``restoration.prior.PRIOR_NET``, 1.02 M
parameters, its time input fixed at 0) predicting the residual over a start,
x_hat = s(y) + f(s(y)), where s is the pseudo-inverse A^+ y (``--start pinv``) or, for
inpainting, the biharmonic fill (``--start biharmonic``: the network then only has to
correct the best classical baseline). It trains on random patches of
``data.TRAINING_SETS[--training-set]`` with fresh measurement noise every batch (Adam,
cosine learning-rate decay, gradient clipping at 1), then runs on the 64x64 crops
(fully convolutional) with the benchmark's measurement noise (``evaluate._gen(0)``), on
the validation and test splits and, when it trained on the skimage set, the photos one.

The patch size defaults to 32 for SR x4 (the prior's) and to 64 for box inpainting: the
box task's hole is half the image side, so only 64x64 patches show the network the
32x32 hole it is tested on. The batch defaults to 64 * (32 / patch)^2 pixels' worth.

    python benchmarks/restoration_regression.py --steps 1000 --training-set skimage \\
        --out benchmarks/restoration/regression_sr4_skimage.json
    python benchmarks/restoration_regression.py --task inpaint-box --start biharmonic \\
        --steps 3000 --out benchmarks/restoration/regression_box_skimage.json
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from diffsci.core.nets import UNet
from diffsci.core.utils import atomic_write_text, check_positive_int
from diffsci.restoration.classical import biharmonic
from diffsci.restoration.data import TRAINING_SETS, training_patches
from diffsci.restoration.evaluate import SPLITS, _gen, _held_out_from, _image_row, _split_images
from diffsci.restoration.prior import PATCH_SIZE, PRIOR_NET
from diffsci.restoration.tasks import make_operator

#: The starts s(y) the network corrects.
STARTS = {"pinv": lambda A, y: A.pinv(y), "biharmonic": biharmonic}
TASKS = ("sr4", "inpaint-box")


def regress(net: UNet, A, y: torch.Tensor, start: str = "pinv") -> torch.Tensor:
    """x_hat = s(y) + f(s(y)): the network corrects the start s (``STARTS[start]``)."""
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}; available: {tuple(STARTS)}")
    x0 = STARTS[start](A, y)
    return x0 + net(x0, torch.zeros(()))


def train_regressor(
    task: str,
    steps: int,
    training_set: str,
    batch: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    patch: int = PATCH_SIZE,
    start: str = "pinv",
) -> tuple[UNet, list[float]]:
    check_positive_int("train_regressor: steps", steps)
    check_positive_int("train_regressor: batch", batch)
    check_positive_int("train_regressor: patch", patch)
    torch.manual_seed(seed)
    net = UNet(**PRIOR_NET)
    A = make_operator(task, (1, patch, patch))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps))
    )
    g = torch.Generator().manual_seed(seed + 1)
    losses = []
    for k in range(steps):
        x = training_patches(batch, patch, g, training_set)
        loss = (regress(net, A, A.measure(x, g), start) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if (k + 1) % 100 == 0:
            print(f"step {k + 1}: mse {sum(losses[-100:]) / 100:.5f}", flush=True)
    return net.eval(), losses


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="sr4", choices=TASKS)
    ap.add_argument("--start", default="pinv", choices=tuple(STARTS))
    ap.add_argument("--patch", type=int, default=None, help="32 for sr4, 64 for inpaint-box")
    ap.add_argument("--batch", type=int, default=None, help="64 * (32 / patch)^2")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--training-set", default="skimage", choices=tuple(TRAINING_SETS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="regression.json")
    args = ap.parse_args(argv)
    if args.start == "biharmonic" and args.task != "inpaint-box":
        ap.error("--start biharmonic is an inpainting start")
    patch = args.patch or (64 if args.task == "inpaint-box" else PATCH_SIZE)
    batch = args.batch or max(1, 64 * PATCH_SIZE**2 // patch**2)
    torch.set_num_threads(args.threads)
    tic = time.perf_counter()
    net, losses = train_regressor(
        args.task, args.steps, args.training_set, batch=batch, patch=patch, start=args.start
    )
    out = {"task": args.task, "steps": args.steps, "training_set": args.training_set}
    out |= {"start": args.start, "patch": patch, "batch": batch}
    out["train_seconds"] = time.perf_counter() - tic
    out["final_mse"] = sum(losses[-100:]) / min(100, len(losses))
    for split in filter(lambda s: _held_out_from(s, args.training_set), SPLITS):
        x = _split_images(split)
        A = make_operator(args.task, x.shape[1:])
        y = A.measure(x, _gen(0))
        with torch.no_grad():
            xh = regress(net, A, y, args.start)
            x_start = STARTS[args.start](A, y)
        row = _image_row(args.task, "regression", "supervised", x, xh, 0.0, A)
        base = _image_row(args.task, args.start, "start", x, x_start, 0.0, A)
        out[split] = {k: v for k, v in row.items() if k.startswith(("psnr", "ssim"))}
        out[split]["start"] = {k: v for k, v in base.items() if k.startswith(("psnr", "ssim"))}
        hole = f" hole {row['psnr_unobserved']:.2f}" if "psnr_unobserved" in row else ""
        print(
            f"{split}: PSNR {row['psnr']:.2f} SSIM {row['ssim']:.3f}{hole} "
            f"(start {base['psnr']:.2f})",
            flush=True,
        )
    atomic_write_text(args.out, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
