"""Rule D of the tenth restoration pass (benchmarks/RESULTS.md): two ways of averaging
PiGDM's SR x4 samples other than over draws of one prior in one orientation.

- ``mix``: the K samples of each image are split between two priors (the committed one
  and ``--second-prior``), row k using prior k mod 2, each trajectory on one prior
  throughout: posterior samples of the equal mixture of the two priors, with the
  component weights taken as equal (a deep ensemble of priors).
- ``dih``: sample k solves the problem in the (k mod 8)-th symmetry of the square (y
  transformed, the sample transformed back). The avgpool SR operator commutes with the
  eight symmetries, so for a prior that has them these are still posterior samples.

Both keep the benchmark's settings (PiGDM, paper weight, scale 3, K = 8, 100 steps, the
seeds of ``evaluate.image_benchmark``), so the rows compare with the committed rows of
``evaluate --part images --tasks sr4 --methods pigdm --image-steps 100``:

    python benchmarks/restoration_sr_averaging.py --scheme mix --split validation \\
        --second-prior prior_jigzo_b64_10k.pt --out benchmarks/restoration/validation_k8_sr4_mix.json
    python benchmarks/restoration_sr_averaging.py --scheme dih --split photos \\
        --out benchmarks/restoration/photos_k8_sr4_dih.json

The second prior of rule D is the ninth pass's candidate A, trained by
``python -m diffsci.restoration.prior --steps 10000 --training-set debian_jigzo
--transpose --accelerator cuda`` (not committed).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from diffsci.core.utils import atomic_write_text
from diffsci.restoration.evaluate import (
    _gen,
    _image_row,
    _prior_denoiser,
    _split_images,
    image_options,
    psnr_limit,
)
from diffsci.restoration.posterior import posterior_sample
from diffsci.restoration.tasks import make_operator


def symmetry(z: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """The k-th (0..7) symmetry of the square on the last two dims: a transpose when
    k >= 4, then a flip of the columns (bit 0) and of the rows (bit 1); ``inverse``
    undoes it."""
    ops = [("T", k >= 4), ("c", k & 1), ("r", k & 2)]
    for op, on in reversed(ops) if inverse else ops:
        if on:
            z = z.transpose(-1, -2) if op == "T" else z.flip(-1 if op == "c" else -2)
    return z


def mixture_denoiser(dens, K: int):
    """Row i of a batch goes to dens[(i mod K) mod len(dens)] (K rows per image)."""

    def D(xt, t, cond=None):
        k = torch.arange(xt.shape[0]) % K % len(dens)
        out = torch.empty_like(xt)
        for m, den in enumerate(dens):
            idx = (k == m).nonzero().flatten()
            tm = t[idx] if torch.is_tensor(t) and t.ndim else t
            out[idx] = den(xt[idx], tm)
        return out

    return D


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scheme", choices=("mix", "dih"), required=True)
    ap.add_argument("--split", choices=("validation", "photos", "test"), required=True)
    ap.add_argument("--second-prior", default=None, help="checkpoint of the second prior (mix)")
    ap.add_argument("--particles", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.scheme == "mix" and args.second_prior is None:
        ap.error("--scheme mix needs --second-prior")
    torch.set_num_threads(args.threads)
    x = _split_images(args.split)
    G, K = len(x), args.particles
    p, D = _prior_denoiser(None, args.split)
    if args.scheme == "mix":
        D = mixture_denoiser([D, _prior_denoiser(args.second_prior, args.split)[1]], K)
    A = make_operator("sr4", x.shape[1:])
    y = A.measure(x, _gen(0))
    x1 = p.prior((G * K, *x.shape[1:]), generator=_gen(1), dtype=torch.float32)
    opts = image_options("sr4", "pigdm")
    tic = time.perf_counter()
    if args.scheme == "dih":  # one measurement per row, in that row's symmetry
        yr = torch.stack([symmetry(y[g], k % 8) for g in range(G) for k in range(K)])
        post = posterior_sample("pigdm", D, p, A, yr, x1, args.steps, _gen(2), **opts)
        xs = torch.stack(
            [symmetry(post.x[g * K + k], k % 8, inverse=True) for g in range(G) for k in range(K)]
        )
    else:
        xs = posterior_sample("pigdm", D, p, A, y, x1, args.steps, _gen(2), **opts).x
    sec = (time.perf_counter() - tic) / G
    row = _image_row(
        "sr4",
        f"pigdm-{args.scheme}",
        "diffusion",
        x,
        xs.reshape(G, K, *x.shape[1:]).mean(1),
        sec,
        A,
    )
    row["psnr_limit"] = psnr_limit(x, xs, K)
    res = {**vars(args), "images": G, "rows": [row]}
    atomic_write_text(args.out, json.dumps(res, indent=1))
    print(
        f"{args.scheme} {args.split}: PSNR {row['psnr']:.3f}, K -> inf {row['psnr_limit']:.3f}, "
        f"{sec:.1f} s / image"
    )


if __name__ == "__main__":
    main()
