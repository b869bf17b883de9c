"""The image prior of the restoration package: a small UNet denoiser for 64x64 grayscale.

Model: ``Denoiser(UNet(channels=(32, 64, 96)), VP("cosine"), prediction="v")`` (1.02 M
parameters), trained with the v-loss (weighting ``"v"``: the squared error of
v = alpha eps - sigma x0, i.e. the x0 error weighted by SNR + 1). v-prediction with
the cosine schedule (Salimans & Ho 2022, Sec. 4 and Appendix D; Nichol & Dhariwal
2021, eq. 17) keeps the regression target at unit scale at every noise level, so one
learning rate fits all of them and training converges in few steps; the eps target
with eps weighting gives no signal near t = 1, where the sampler starts. Training runs
on 32x32 patches of the training images of :mod:`diffsci.restoration.data`; the network
is fully convolutional and is used on 64x64 images.

The committed checkpoint was trained on ``data.TRAINING_SETS["debian_jigzo"]`` (the
14 skimage images and 68 photographs from seven Debian packages), with patches in all
eight symmetries of the square (``--transpose``), 2500 steps at batch 256 on an NVIDIA
H200 (``--accelerator cuda``; 182 s, mean v-loss 0.100 over the last 100 steps).
Reproduce it with

    apt-get install mate-backgrounds palapeli-data opencv-doc plasma-workspace-wallpapers \
        lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 jigzo-data
    python -m diffsci.restoration.prior --steps 2500 --batch-size 256 \
        --training-set debian_jigzo --transpose --accelerator cuda --threads 2 \
        --out restoration/checkpoints/prior.pt

(``--accelerator cpu`` makes the same draws of patches, times and noise on the CPU, at
2.5 s per step on two cores here, 1 h 45 min; the weights differ from the GPU run's by
float rounding accumulated over training: two runs of the eighth pass's recipe, on
the CPU and the GPU, scored 0.05 dB apart on the adoption mean.)

It replaced, each time by a rule fixed before the candidate was measured (a higher mean
PSNR on the validation and photos-split crops, SR x4 with PiGDM and box inpainting with
DPS; benchmarks/RESULTS.md, "sixth pass" to "ninth pass"), first a prior trained 3000
steps on the skimage images alone (``--training-set skimage``, the default), then one
trained 5000 steps on ``"debian"`` (43 photographs from four of the packages), then one
trained 10000 steps at batch 64 on ``"debian_lomiri"`` (57 photographs) on the CPU.
``--training-set photos`` (the skimage images and ``data.PHOTOS``) denoises better than
the skimage prior but restored no better ("fourth pass").

It trains with core's :func:`~diffsci.core.training.train` (Fabric, EMA, atomic
checkpoints, exact resume from ``--train-checkpoint``) and then writes a slim copy
(EMA weights, config, loss curve; no optimizer state) to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from diffsci.core.nets import UNet
from diffsci.core.parameterization import Denoiser
from diffsci.core.processes import VP
from diffsci.core.training import (
    FORMAT,
    TrainConfig,
    TrainResult,
    load_checkpoint,
    load_denoiser,
    save_checkpoint,
    train,
)
from diffsci.core.utils import atomic_write

from .data import TRAINING_SETS, training_patches

__all__ = [
    "PRIOR_NET",
    "build_prior",
    "prior_train_config",
    "train_prior",
    "export_slim",
    "load_prior",
    "prior_training_set",
    "sample_figure",
]

#: The network of the prior (kwargs of :class:`~diffsci.core.nets.UNet`).
PRIOR_NET: dict[str, Any] = dict(
    in_channels=1, channels=(32, 64, 96), num_res_blocks=1, emb_dim=128, groups=8
)
PATCH_SIZE = 32
REPRODUCE = (
    "apt-get install mate-backgrounds palapeli-data opencv-doc plasma-workspace-wallpapers "
    "lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 jigzo-data && "
    "python -m diffsci.restoration.prior --steps 2500 --batch-size 256 "
    "--training-set debian_jigzo --transpose --accelerator cuda --threads 2 "
    "--out restoration/checkpoints/prior.pt"
)
DEFAULT_TRAIN_CHECKPOINT = os.path.join(tempfile.gettempdir(), "diffsci-prior-train.ckpt")


def build_prior(seed: int = 0) -> Denoiser:
    """The untrained prior: UNet(**PRIOR_NET), VP cosine process, v-prediction."""
    torch.manual_seed(seed)  # network initialisation
    return Denoiser(UNet(**PRIOR_NET), VP("cosine"), prediction="v")


def prior_train_config(
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    checkpoint_every: int = 200,
) -> TrainConfig:
    """The training hyper-parameters: Adam with a cosine learning-rate decay, gradient
    clipping at 1 and an EMA of horizon ~200 steps (decay 0.995, short enough for a
    run of a few thousand steps)."""
    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        ema_decay=0.995,
        grad_clip=1.0,
        weighting="v",
        time_sampling="uniform",
        seed=seed,
        checkpoint_every=checkpoint_every,
        lr_schedule="cosine",
    )


def train_prior(
    out_path: str | os.PathLike,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    checkpoint_every: int = 200,
    train_checkpoint: str | os.PathLike = DEFAULT_TRAIN_CHECKPOINT,
    resume: bool = True,
    progress: bool = True,
    training_set: str = "skimage",
    transpose: bool = False,
    accelerator: str = "cpu",
) -> TrainResult:
    """Train the prior on random 32x32 patches of ``data.TRAINING_SETS[training_set]``
    and write the slim checkpoint.

    The full training state (weights, EMA, optimizer, generator) goes to
    ``train_checkpoint`` every ``checkpoint_every`` steps, and a run resumes from it
    exactly; at the end :func:`export_slim` writes ``out_path``. ``transpose=True``
    transposes half the patches too (``data.training_patches``: all eight symmetries
    of the square, where the default flips give four). ``accelerator`` ("cpu", "cuda",
    "auto": Lightning Fabric's names) is where the network trains; the patches, times
    and noise are drawn on the CPU from the same generator on every accelerator.
    """
    training_patches(1, PATCH_SIZE, None, training_set)  # a bad set fails before training
    den = build_prior(seed)
    cfg = prior_train_config(steps, batch_size, lr, seed, checkpoint_every)
    data = lambda n, g: training_patches(n, PATCH_SIZE, g, training_set, transpose)
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator=accelerator, devices=1)
    result = train(
        den, data, cfg, train_checkpoint, resume=resume, progress=progress, fabric=fabric
    )
    export_slim(train_checkpoint, out_path, training_set, transpose)
    return result


def export_slim(
    train_checkpoint: str | os.PathLike,
    out_path: str | os.PathLike,
    training_set: str | None = None,
    transpose: bool = False,
) -> None:
    """Write the EMA weights, config, step, loss curve and training config of a full
    training checkpoint to ``out_path`` (atomically): a file ``load_denoiser`` reads.
    ``training_set`` (the name in ``data.TRAINING_SETS``) is recorded with them, and
    ``transpose`` (the patch augmentation) where it is True."""
    state = load_checkpoint(train_checkpoint)
    slim = {
        "format": FORMAT,
        "config": state["config"],
        "ema": {k: v.clone() for k, v in state["ema"].items()},
        "step": state["step"],
        "losses": torch.tensor(state["losses"], dtype=torch.float32),
        "train_config": state["train_config"],
    }
    if training_set is not None:
        slim["training_set"] = training_set
    if transpose:
        slim["transpose"] = True
    save_checkpoint(out_path, slim)


def _read(path: str | os.PathLike | None, read: Callable[[str | os.PathLike], Any]) -> Any:
    """``read(path)``, where None is the checkpoint committed with the package
    (``diffsci/restoration/checkpoints/prior.pt``)."""
    if path is not None:
        return read(path)
    ref = importlib.resources.files("diffsci.restoration").joinpath("checkpoints/prior.pt")
    if not ref.is_file():
        raise FileNotFoundError(f"the prior checkpoint is missing; rebuild it with: {REPRODUCE}")
    with importlib.resources.as_file(ref) as p:
        return read(p)


def load_prior(path: str | os.PathLike | None = None) -> Denoiser:
    """The trained prior (EMA weights), by default the committed checkpoint, in eval mode."""
    return _read(path, lambda p: load_denoiser(p, ema=True))


def prior_training_set(path: str | os.PathLike | None = None) -> str | None:
    """The name (in ``data.TRAINING_SETS``) of the set a prior checkpoint (default the
    committed one, which records "debian_jigzo") was trained on, or None when the file
    does not record one."""
    return _read(path, lambda p: load_checkpoint(p).get("training_set"))


def sample_figure(
    denoiser: Denoiser,
    path: str | os.PathLike,
    n: int = 16,
    size: int = 64,
    solver: str = "ddpm",
    nfe: int = 100,
    seed: int = 0,
) -> torch.Tensor:
    """Draw ``n`` unconditional ``size`` x ``size`` samples and save them as a PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffsci.core.samplers import sample

    g = torch.Generator().manual_seed(seed)
    x1 = denoiser.process.prior((n, 1, size, size), generator=g)
    with torch.no_grad():
        x = sample(denoiser, denoiser.process, x1, solver=solver, nfe=nfe, generator=g)
    cols = min(n, 8)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, im in zip(axes.flat, x):
        ax.imshow(im[0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
    fig.suptitle(f"prior samples, {size}x{size}, {solver} NFE {nfe}, seed {seed}", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=80, format="png"))
    plt.close(fig)
    return x


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m diffsci.restoration.prior", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", default="restoration/checkpoints/prior.pt")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--train-checkpoint", default=DEFAULT_TRAIN_CHECKPOINT)
    parser.add_argument(
        "--training-set",
        default="skimage",
        choices=tuple(TRAINING_SETS),
        help="the images to train on (data.TRAINING_SETS; default skimage)",
    )
    parser.add_argument(
        "--transpose",
        action="store_true",
        help="also transpose half the patches (all eight symmetries of the square)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--accelerator",
        default="cpu",
        choices=("cpu", "cuda", "gpu", "mps", "auto"),
        help="where the network trains: cpu (default), cuda or auto (Lightning Fabric)",
    )
    parser.add_argument("--no-resume", action="store_true", help="start over")
    parser.add_argument(
        "--export-only",
        action="store_true",
        help="write --out from --train-checkpoint as it stands, without training",
    )
    parser.add_argument("--figure", default=None, help="also save a PNG of samples here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.export_only:
        export_slim(args.train_checkpoint, args.out, args.training_set, args.transpose)
    else:
        cfg = prior_train_config(
            args.steps, args.batch_size, args.lr, args.seed, args.checkpoint_every
        )
        print(
            f"training the prior on {args.training_set!r} (transpose={args.transpose}): "
            f"{PRIOR_NET}, {asdict(cfg)}",
            flush=True,
        )
        train_prior(
            args.out,
            args.steps,
            args.batch_size,
            args.lr,
            args.seed,
            args.checkpoint_every,
            args.train_checkpoint,
            resume=not args.no_resume,
            training_set=args.training_set,
            transpose=args.transpose,
            accelerator=args.accelerator,
        )
    state = load_checkpoint(args.out)
    losses = state["losses"]
    tail = float(losses[-100:].mean()) if len(losses) else float("nan")
    print(
        f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB) at step {state['step']}, "
        f"mean loss of the last 100 steps {tail:.4f}, {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    if args.figure:
        sample_figure(load_prior(args.out), args.figure)
        print(f"wrote {args.figure}", flush=True)


if __name__ == "__main__":
    main()
