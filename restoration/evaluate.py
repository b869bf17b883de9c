"""Restoration benchmark: ``python -m diffsci.restoration.evaluate``.

Five parts, each a Markdown table on stdout and JSON written atomically to ``--out``:

``oracle`` (the MCGdiff protocol, ``restoration.oracle``): for d in {8, 80, 800} and
d_y in {1, 2, 4}, ``--seeds`` random problems; every posterior sampler with the exact
mixture denoiser under VP draws ``--samples`` samples; sliced Wasserstein (100
projections) to as many exact posterior samples; mean and standard error over seeds.
SMC methods run groups of K particles, each group resampled to K equally weighted
draws, so that every method spends the same denoiser evaluations per returned sample.

``particles``: MCGdiff and AFDPS at d = 8 as the particles per group K grow, with the
total number of particles (and so of denoiser evaluations) fixed.

``images``: the held-out 64x64 crops (``restoration.data.heldout_images``) under the
four tasks of ``restoration.tasks``; PSNR and SSIM (skimage.metrics, data range 2) and
seconds per image for every diffusion method with the committed prior
(``restoration.prior.load_prior``) and the classical baselines
(``restoration.classical``).

``boundary``: BCDM (``restoration.bcdm``) on SR x4: the x_T found on training patches
with each of ``--boundary-methods`` in its deterministic limit, against fresh random x_T
and x_T = 0, one restoration per image (:func:`boundary_benchmark`).

``denoise``: the prior as a denoiser (:func:`denoise_benchmark`): PSNR of its x0
estimate on the crops of ``--split`` under Gaussian noise of each std in ``--sigmas``,
the most direct measure of how well a prior has learned the images.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from diffsci.core import VP, sliced_wasserstein
from diffsci.core.utils import atomic_write_text, check_positive_int

from .classical import CLASSICAL
from .operators import Inpainting
from .oracle import mcgdiff_problem
from .posterior import POSTERIOR_SAMPLERS, posterior_sample

__all__ = [
    "ORACLE_METHODS",
    "boundary_benchmark",
    "denoise_benchmark",
    "denoise_markdown",
    "IMAGE_METHODS",
    "image_options",
    "psnr_limit",
    "oracle_benchmark",
    "paired_markdown",
    "image_benchmark",
    "main",
]

_F64 = torch.float64
DENOISE_SIGMAS = (0.1, 0.2, 0.4)  # the denoise part's noise stds, in [-1, 1] image units
# the image sets: data.heldout_images, data.validation_images, data.photo_test_images
SPLITS = ("test", "validation", "photos")

# method -> (particles per group K (None: independent samples), options); every method
# gets the same number of time steps, and the table reports the evaluations per sample.
ORACLE_METHODS: dict[str, tuple[int | None, dict[str, Any]]] = {
    "dps": (None, {}),
    "ddrm": (None, {}),
    "pigdm": (None, {}),
    "reddiff": (None, {}),
    "mcgdiff": (64, {}),
    "afdps": (64, {}),
}

_DIFFUSION = ("ddrm", "pigdm", "dps", "reddiff", "mcgdiff", "afdps")
# On images DPS uses the paper's Algorithm 1 (a DDPM step, then x -= zeta' grad ||y - A
# x0_hat||); zeta' is a step in x per sampler step, so the paper's 0.3 - 1 (1000 steps)
# does not carry over to 50 steps. zeta' = 3 was the best of {1, 3, 10} on each task (and
# of 30 on sr4), first 3 crops, 2 samples each, 50 steps (see benchmarks/RESULTS.md); the
# Gaussian-likelihood rule diverges at sigma_y = 0.05.
# PiGDM takes its paper's (and official code's) alpha_t^2-damped guidance on images, with
# scale 3: the best of {1, 3, 10, 30} on the validation crops (2 samples, 50 steps, eta
# = 1, mean-of-2 PSNR sr4 19.82 / 20.39 / 20.09 / 5.55, box 20.02 / 21.13 / 6.07 / 5.41;
# the Tweedie weight: sr4 20.11, box 16.58).
# The coarse-to-fine cascade runs DPS with these same settings at both levels.
IMAGE_OPTIONS: dict[str, dict[str, Any]] = {
    "dps": {"gaussian": False, "scale": 3.0},
    "pigdm": {"weight": "paper", "scale": 3.0},
}
IMAGE_OPTIONS["cascade"] = {"method": "dps", **IMAGE_OPTIONS["dps"]}
# per-task departures, chosen on the validation crops (data.validation_images, 8 samples,
# 50 steps; benchmarks/RESULTS.md): DPS on sr4 with zeta' = 10 (20.61 dB against 19.62 at 3)
TASK_OPTIONS: dict[tuple[str, str], dict[str, Any]] = {("sr4", "dps"): {"scale": 10.0}}


def image_options(task: str, method: str) -> dict[str, Any]:
    """The benchmark's options of ``method`` on ``task`` (also the CLI's)."""
    return {**IMAGE_OPTIONS.get(method, {}), **TASK_OPTIONS.get((task, method), {})}


# task -> the diffusion methods run on it (cow only inpaints; the cascade needs whole
# 2x2 blocks observed, so it runs on the box hole only), and its classical baselines
IMAGE_METHODS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sr4": (_DIFFUSION, ("bicubic", "tv")),
    "inpaint-box": ((*_DIFFUSION, "cow", "cascade"), ("biharmonic", "tv")),
    "inpaint-random": (_DIFFUSION, ("biharmonic", "tv")),
    "deblur": (_DIFFUSION, ("wiener", "richardson_lucy", "tv")),
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _run_oracle(method: str, K: int | None, opts: dict, P, n: int, steps: int, seed: int):
    p = VP()
    d = P.A.x_dim
    x1 = p.prior((n, d), generator=_gen(seed + 1), dtype=_F64)
    G = 1 if K is None else n // K
    y = P.y.expand(G, -1).contiguous()
    post = posterior_sample(
        method, P.prior.denoiser(p), p, P.A, y, x1, steps, _gen(seed + 2), **opts
    )
    if post.log_weights is not None:
        post = post.resample(generator=_gen(seed + 3))
    return post.x, post.evals / n


def oracle_benchmark(
    dims=(8, 80, 800),
    dys=(1, 2, 4),
    seeds: int = 10,
    samples: int = 512,
    steps: int = 100,
    methods: dict[str, tuple[int | None, dict]] | None = None,
) -> dict[str, Any]:
    """SW to the exact posterior per (d, d_y, method): mean, standard error, evals."""
    methods = {m: v for m, v in (methods or ORACLE_METHODS).items() if m in POSTERIOR_SAMPLERS}
    rows = []
    for d in dims:
        for dy in dys:
            per: dict[str, list[float]] = {m: [] for m in ["floor", *methods]}
            evals: dict[str, float] = {}
            secs: dict[str, float] = {}
            for s in range(seeds):
                P = mcgdiff_problem(d, dy, 1000 * d + 10 * dy + s)
                exact = P.posterior.sample(samples, _gen(s))
                sw = lambda x: float(sliced_wasserstein(x, exact, 100, _gen(0)))
                per["floor"].append(sw(P.posterior.sample(samples, _gen(s + 500))))
                for m, (K, opts) in methods.items():
                    tic = time.perf_counter()
                    try:
                        x, ev = _run_oracle(m, K, opts, P, samples, steps, s)
                        ok = bool(torch.isfinite(x).all())
                    except FloatingPointError:  # a diverged run is recorded, not fatal
                        ok = False
                    secs[m] = secs.get(m, 0.0) + time.perf_counter() - tic
                    per[m].append(sw(x) if ok else math.inf)
                    evals[m] = ev if ok else evals.get(m, 0.0)
            for m, v in per.items():
                t = torch.tensor(v, dtype=_F64)
                diverged = int((~torch.isfinite(t)).sum())
                t = t[torch.isfinite(t)] if diverged < len(t) else t
                rows.append(
                    {
                        "d": d,
                        "d_y": dy,
                        "method": m,
                        "sw_mean": float(t.mean()),
                        "sw_se": float(t.std() / math.sqrt(len(t))) if len(t) > 1 else 0.0,
                        "evals_per_sample": evals.get(m, 0.0),
                        "seconds_per_problem": secs.get(m, 0.0) / seeds,
                        "particles": methods[m][0] if m in methods else None,
                        "diverged": diverged,
                        "sw": v,  # per seed (inf: diverged), for paired comparisons
                    }
                )
            print(f"  oracle d={d} d_y={dy} done", flush=True)
    return {"seeds": seeds, "samples": samples, "steps": steps, "rows": rows}


def _cell(rows: list[dict[str, Any]], d: int, dy: int, method: str) -> dict[str, Any]:
    """The oracle row of ``method`` at (d, d_y)."""
    return next(r for r in rows if (r["d"], r["d_y"], r["method"]) == (d, dy, method))


def oracle_markdown(res: dict[str, Any]) -> str:
    rows = res["rows"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    head = "| d | d_y | " + " | ".join(methods) + " |"
    lines = [head, "|" + "---|" * (len(methods) + 2)]
    for d, dy in dict.fromkeys((r["d"], r["d_y"]) for r in rows):
        cells = []
        for m in methods:
            r = _cell(rows, d, dy, m)
            cell = f"{r['sw_mean']:.2f} ± {r['sw_se']:.2f}"
            if r.get("diverged"):
                cell += f" ({r['diverged']} diverged)"
            cells.append(cell)
        lines.append(f"| {d} | {dy} | " + " | ".join(cells) + " |")
    ev = {r["method"]: r["evals_per_sample"] for r in rows if r["method"] != "floor"}
    lines.append("")
    lines.append(
        "Denoiser evaluations per returned sample: "
        + ", ".join(f"{m} {v:.0f}" for m, v in ev.items())
        + f". SW2 with 100 projections, {res['samples']} samples, mean ± s.e. over "
        f"{res['seeds']} seeds (diverged runs, NaN or Inf, are left out of the mean and "
        "counted); `floor` = two independent exact posterior sets."
    )
    return "\n".join(lines)


def paired_markdown(res: dict[str, Any], a: str = "afdps", b: str = "mcgdiff") -> str:
    """SW(a) - SW(b) per (d, d_y), paired by seed (the same problem and exact samples):
    mean ± standard error of the difference and on how many seeds a is at or below b.
    Pairing removes the problem-to-problem spread that dominates each method's ± alone."""
    lines = [
        f"| d | d_y | {a} - {b} (paired) | {a} <= {b} |",
        "|---|---|---|---|",
    ]
    rows = res["rows"]
    for d, dy in dict.fromkeys((r["d"], r["d_y"]) for r in rows):
        sw = lambda m: torch.tensor(_cell(rows, d, dy, m)["sw"], dtype=_F64)
        diff = sw(a) - sw(b)
        diff = diff[torch.isfinite(diff)]
        se = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
        lines.append(
            f"| {d} | {dy} | {float(diff.mean()):+.2f} ± {se:.2f} | "
            f"{int((diff <= 0).sum())} of {len(diff)} |"
        )
    return "\n".join(lines)


def particles_benchmark(
    d: int = 8,
    dys=(1, 2, 4),
    Ks=(8, 32, 128, 512),
    seeds: int = 10,
    samples: int = 512,
    steps: int = 100,
    methods=("mcgdiff", "afdps"),
) -> dict[str, Any]:
    """SW of the SMC samplers as particles per group grow, at a fixed total of ``samples``
    particles (groups x K), i.e. at a fixed budget of denoiser evaluations."""
    rows = []
    for dy in dys:
        for m in methods:
            for K in Ks:
                v = []
                for s in range(seeds):
                    P = mcgdiff_problem(d, dy, 1000 * d + 10 * dy + s)
                    exact = P.posterior.sample(samples, _gen(s))
                    x, _ = _run_oracle(m, K, {}, P, samples, steps, s)
                    v.append(float(sliced_wasserstein(x, exact, 100, _gen(0))))
                t = torch.tensor(v, dtype=_F64)
                rows.append(
                    {
                        "d": d,
                        "d_y": dy,
                        "method": m,
                        "K": K,
                        "sw_mean": float(t.mean()),
                        "sw_se": float(t.std() / math.sqrt(len(t))),
                    }
                )
        print(f"  particles d_y={dy} done", flush=True)
    return {"seeds": seeds, "samples": samples, "steps": steps, "rows": rows}


def particles_markdown(res: dict[str, Any]) -> str:
    Ks = list(dict.fromkeys(r["K"] for r in res["rows"]))
    lines = [
        "| d_y | method | " + " | ".join(f"K = {K}" for K in Ks) + " |",
        "|" + "---|" * (len(Ks) + 2),
    ]
    for dy, m in dict.fromkeys((r["d_y"], r["method"]) for r in res["rows"]):
        cells = [
            f"{r['sw_mean']:.2f} ± {r['sw_se']:.2f}"
            for r in res["rows"]
            if (r["d_y"], r["method"]) == (dy, m)
        ]
        lines.append(f"| {dy} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _per_image_psnr_ssim(x: torch.Tensor, xh: torch.Tensor) -> tuple[list, list]:
    """skimage's PSNR and SSIM of each image (data range 2, estimates clamped to [-1, 1])."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = x.double().numpy()
    b = xh.double().clamp(-1, 1).numpy()
    ps = [float(peak_signal_noise_ratio(u, v, data_range=2.0)) for u, v in zip(a, b)]
    ss = [float(structural_similarity(u, v, data_range=2.0, channel_axis=0)) for u, v in zip(a, b)]
    return ps, ss


def _psnr_ssim(x: torch.Tensor, xh: torch.Tensor) -> tuple[float, float]:
    """The mean over images of PSNR and SSIM."""
    ps, ss = _per_image_psnr_ssim(x, xh)
    return sum(ps) / len(ps), sum(ss) / len(ss)


def _split_images(split: str) -> torch.Tensor:
    """The 64x64 float32 crops of an image split: "test" (``data.heldout_images``),
    "validation" (``data.validation_images``) or "photos" (``data.photo_test_images``)."""
    from .data import heldout_images, photo_test_images, validation_images

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    crops = {"test": heldout_images, "validation": validation_images, "photos": photo_test_images}
    return crops[split](64).float()


def _held_out_from(split: str, training_set: str | None) -> bool:
    """Whether a model trained on ``data.TRAINING_SETS[training_set]`` never saw the
    images of ``split``. Only the photos split can be seen (the "photos" set holds it);
    a model that records no set, or an unknown one, is not shown to have missed it."""
    from .data import PHOTOS, TRAINING_SETS

    if split != "photos":
        return True
    return training_set in TRAINING_SETS and not set(TRAINING_SETS[training_set]) & set(PHOTOS)


def _prior_denoiser(
    prior: str | None, split: str = "test"
) -> tuple[Any, Callable[..., torch.Tensor]]:
    """(process, D) of the image prior (``prior`` path, default the committed one); D runs
    the float32 network and returns the caller's dtype. On the "photos" split, a prior
    whose checkpoint does not show that it never trained on those photographs is
    refused."""
    from .prior import load_prior, prior_training_set

    if split == "photos" and not _held_out_from(split, ts := prior_training_set(prior)):
        raise ValueError(
            f"the photos split tests only priors that never trained on data.PHOTOS; "
            f"the prior {prior or 'committed'!r} records training set {ts!r}"
        )
    den = load_prior(prior)
    return den.process, lambda xt, t, cond=None: den(xt.float(), t).to(xt.dtype)


def image_benchmark(
    tasks=None,
    images: int | None = None,
    steps: int = 50,
    K: int = 4,
    seed: int = 0,
    prior: str | None = None,
    methods=None,
    split: str = "test",
    options: dict[str, dict[str, Any]] | None = None,
    crop: int | None = None,
) -> dict[str, Any]:
    """PSNR / SSIM / seconds per image of the diffusion methods and classical baselines.

    Each diffusion method runs K samples (or particles) per image and is scored on their
    (weighted) mean, the MMSE estimate that PSNR rewards. ``methods`` (default all) keeps
    only the named methods, diffusion or classical, of each task. ``split`` is "test"
    (the held-out crops), "validation" (``data.validation_images``, where settings are
    chosen) or "photos" (``data.photo_test_images``, a second test set); ``options`` overrides :func:`image_options` per method. ``crop`` keeps only
    the central crop x crop square of each 64x64 crop, at the same pixel scale; the
    task's operator scales with it (a 16x16 box hole at crop 32, the prior's training
    patch size)."""
    from .tasks import make_operator

    known = {m for d, c in IMAGE_METHODS.values() for m in (*d, *c)}
    if methods is not None:
        unknown = sorted(set(methods) - known)
        if unknown:
            raise ValueError(f"unknown image methods {unknown}; available: {sorted(known)}")
    keep = lambda m: methods is None or m in methods
    options = options or {}
    torch.manual_seed(seed)
    x = _split_images(split)
    if images is not None:
        x = x[:images]
    if crop is not None:
        if not 1 <= crop <= x.shape[-1]:
            raise ValueError(f"crop must be in [1, {x.shape[-1]}], got {crop}")
        o = (x.shape[-1] - crop) // 2
        x = x[..., o : o + crop, o : o + crop].contiguous()
    p, D = _prior_denoiser(prior, split)
    rows = []
    for task in tasks or IMAGE_METHODS:
        A = make_operator(task, x.shape[1:])
        y = A.measure(x, _gen(seed))
        diff, classical = IMAGE_METHODS[task]
        for m in filter(keep, classical):
            tic = time.perf_counter()
            xh = CLASSICAL[m](A, y)
            sec = (time.perf_counter() - tic) / len(x)
            rows.append(_image_row(task, m, "classical", x, xh, sec, A))
        for m in filter(keep, diff):
            if m not in POSTERIOR_SAMPLERS:
                continue
            shape = (len(x) * K, *x.shape[1:])
            x1 = p.prior(shape, generator=_gen(seed + 1), dtype=torch.float32)
            tic = time.perf_counter()
            try:
                opts = {**image_options(task, m), **options.get(m, {})}
                post = posterior_sample(m, D, p, A, y, x1, steps, _gen(seed + 2), **opts)
                est = post.mean()
            except FloatingPointError:  # diverged: recorded as such
                post, est = None, torch.full_like(x, float("nan"))
            sec = (time.perf_counter() - tic) / len(x)
            row = _image_row(task, m, "diffusion", x, est, sec, A)
            if post is not None and post.log_weights is None and K > 1:
                row["psnr_limit"] = psnr_limit(x, post.x, K)
            rows.append(row)
        print(f"  images {task} done", flush=True)
    size = x.shape[-1]
    return {"images": len(x), "size": size, "split": split, "steps": steps, "K": K, "rows": rows}


def boundary_benchmark(
    method: str = "ddrm",
    task: str = "sr4",
    references: int = 16,
    candidates: int = 32,
    fresh: int = 16,
    steps: int = 20,
    seed: int = 0,
    prior: str | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """BCDM's shared boundary condition against random ones (``restoration.bcdm``).

    The search restores ``references`` 64x64 training patches (``data.training_patches``:
    crops of the prior's own training images, never of the validation or test ones) from
    each of ``candidates`` x_T with ``method`` in its deterministic limit (eta = 0,
    ``steps`` steps) and keeps the x_T of the best mean PSNR. On the ``split`` crops
    it then reports the PSNR of one restoration per image from: the chosen x_T; x_T = 0;
    and ``fresh`` new random x_T (each shared by all images, as the chosen one is): their
    mean and standard deviation over draws, and how many of them the chosen x_T beats."""
    from .bcdm import sample_with_boundary, search_boundary
    from .data import training_patches
    from .tasks import make_operator

    fresh = check_positive_int("fresh", fresh)
    x = _split_images(split)
    p, D = _prior_denoiser(prior, split)
    A = make_operator(task, x.shape[1:])
    y = A.measure(x, _gen(seed))
    xs = training_patches(references, 64, _gen(seed + 10))
    ys = A.measure(xs, _gen(seed + 11))
    opts = image_options(task, method)
    tic = time.perf_counter()
    found = search_boundary(
        D, p, A, ys, xs, steps, candidates, _gen(seed + 12), method, data_range=2.0, **opts
    )
    search_sec = time.perf_counter() - tic

    def score(x_T: torch.Tensor) -> float:
        post = sample_with_boundary(D, p, A, y, x_T, steps, method, seed + 13, **opts)
        return _psnr_ssim(x, post.x)[0]

    tic = time.perf_counter()
    chosen = score(found.x_T)
    sec = (time.perf_counter() - tic) / len(x)
    zero = score(torch.zeros_like(found.x_T))
    draws = p.prior((fresh, *A.x_shape), generator=_gen(seed + 14), dtype=torch.float32)
    rand = torch.tensor([score(draws[i : i + 1]) for i in range(fresh)], dtype=_F64)
    print(f"  boundary {method} {task} done", flush=True)
    return {
        "method": method,
        "task": task,
        "split": split,
        "images": len(x),
        "references": references,
        "candidates": candidates,
        "steps": steps,
        "search_evals": found.evals,
        "search_sec": search_sec,
        "reference_psnr_chosen": float(found.values[found.index]),
        "reference_psnr_candidates_mean": float(found.values.mean()),
        "psnr_chosen": chosen,
        "psnr_zero": zero,
        "psnr_random_mean": float(rand.mean()),
        "psnr_random_std": float(rand.std()) if fresh > 1 else 0.0,
        "psnr_random": rand.tolist(),
        "chosen_beats": int((rand < chosen).sum()),
        "sec_per_image": sec,
    }


def denoise_benchmark(
    sigmas=DENOISE_SIGMAS, prior: str | None = None, split: str = "test", seed: int = 0
) -> dict[str, Any]:
    """The prior's x0 estimate on noisy crops: for each noise std s (in [-1, 1] image
    units), x_t = alpha_t (x + s eps) at the time t where sigma_t / alpha_t = s (log-SNR
    -2 log s), and D(x_t, t) is scored by PSNR against x, next to the noisy x + s eps."""
    sigmas = [float(s) for s in sigmas]
    if not sigmas or min(sigmas) <= 0:
        raise ValueError(f"denoise_benchmark needs noise stds > 0, got {sigmas}")
    x = _split_images(split)
    p, D = _prior_denoiser(prior, split)
    rows = []
    for s in sigmas:
        noisy = x + s * torch.randn(x.shape, generator=_gen(seed))
        t = p.t_of_log_snr(torch.tensor(-2.0 * math.log(s)))
        with torch.no_grad():
            x0 = D(p.alpha(t) * noisy, t.expand(len(x)))
        rows.append(
            {"sigma": s, "psnr_noisy": _psnr_ssim(x, noisy)[0], "psnr": _psnr_ssim(x, x0)[0]}
        )
    return {"split": split, "images": len(x), "prior": prior or "committed", "rows": rows}


def denoise_markdown(res: dict[str, Any]) -> str:
    lines = ["| noise std | noisy PSNR (dB) | prior's x0 PSNR (dB) |", "|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['sigma']:g} | {r['psnr_noisy']:.2f} | {r['psnr']:.2f} |")
    return "\n".join(lines)


def boundary_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| task | method | steps | reference: chosen / mean of candidates | chosen x_T "
        "| random x_T (mean ± sd) | chosen beats | x_T = 0 | s / image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['method']} | {r['steps']} | "
            f"{r['reference_psnr_chosen']:.2f} / {r['reference_psnr_candidates_mean']:.2f} | "
            f"{r['psnr_chosen']:.2f} | {r['psnr_random_mean']:.2f} ± "
            f"{r['psnr_random_std']:.2f} | {r['chosen_beats']} of {len(r['psnr_random'])} | "
            f"{r['psnr_zero']:.2f} | {r['sec_per_image']:.2f} |"
        )
    return "\n".join(lines)


def psnr_limit(x: torch.Tensor, samples: torch.Tensor, K: int) -> float:
    """The mean PSNR that the average of infinitely many samples would reach, estimated
    from K equally weighted samples per image (K consecutive rows of ``samples``).

    For i.i.d. draws with mean m, E||mean_K - x||^2 = ||m - x||^2 + tr(Cov) / K, and the
    unbiased per-pixel sample variance estimates tr(Cov) / d; so ||m - x||^2 is
    estimated by mse_K - mean(var) / K per image (floored at 1e-8). It says how much
    more samples could still gain over the table's mean of K."""
    if K < 2:
        raise ValueError(f"psnr_limit needs K >= 2 samples per image, got {K}")
    want = (len(x) * K, *x.shape[1:])
    if tuple(samples.shape) != want:
        raise ValueError(
            f"psnr_limit: samples have shape {tuple(samples.shape)}, expected {want} "
            f"(K = {K} rows for each of the {len(x)} images)"
        )
    xs = samples.reshape(len(x), K, *x.shape[1:]).double().clamp(-1, 1)
    mse_K = (xs.mean(1) - x.double()).square().flatten(1).mean(1)
    var = xs.var(1).flatten(1).mean(1)
    mse = (mse_K - var / K).clamp(min=1e-8)
    return float(_db(mse).mean())


def _db(mse):
    """PSNR of an mse on [-1, 1] images (data range 2), floored at mse 1e-12."""
    if isinstance(mse, torch.Tensor):
        return 10 * torch.log10(4.0 / mse.clamp(min=1e-12))
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def _image_row(task, method, kind, x, xh, sec, A=None) -> dict[str, Any]:
    row: dict[str, Any] = {"task": task, "method": method, "kind": kind, "sec": sec}
    if not bool(torch.isfinite(xh).all()):
        return {**row, "psnr": math.nan, "ssim": math.nan}
    ps, ss = _per_image_psnr_ssim(x, xh)
    row["psnr"], row["ssim"] = sum(ps) / len(ps), sum(ss) / len(ss)
    row["psnr_per_image"] = ps  # in the split's order, for reading which images decide
    if isinstance(A, Inpainting):  # PSNR over the pixels A does / does not observe, pooled
        err = (xh.double().clamp(-1, 1) - x.double()).square()
        seen = A.mask.expand_as(x)
        row["psnr_observed"] = _db(float(err[seen].mean()))
        row["psnr_unobserved"] = _db(float(err[~seen].mean()))
    return row


def image_markdown(res: dict[str, Any]) -> str:
    # K -> inf: psnr_limit; unobserved: the PSNR inside an inpainting hole
    lines = [
        "| task | method | kind | PSNR (dB) | K -> inf | unobserved | SSIM | s / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    f = lambda r, k: f"{r[k]:.2f}" if k in r else "-"
    for r in res["rows"]:
        lines.append(
            f"| {r['task']} | {r['method']} | {r['kind']} | {r['psnr']:.2f} | "
            f"{f(r, 'psnr_limit')} | {f(r, 'psnr_unobserved')} | {r['ssim']:.3f} | "
            f"{r['sec']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m diffsci.restoration.evaluate")
    ap.add_argument(
        "--part",
        choices=("oracle", "particles", "images", "boundary", "denoise", "all"),
        default="all",
    )
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--dims", type=int, nargs="+", default=[8, 80, 800])
    ap.add_argument(
        "--oracle-methods", nargs="+", default=None, help="oracle samplers (default: all)"
    )
    ap.add_argument("--images", type=int, default=None, help="first N held-out crops")
    ap.add_argument("--crop", type=int, default=None, help="score the central N x N of each crop")
    ap.add_argument("--image-steps", type=int, default=50)
    ap.add_argument("--particles", type=int, default=4, help="samples per image")
    ap.add_argument("--prior", default=None, help="prior checkpoint (default: committed)")
    ap.add_argument(
        "--methods", nargs="+", default=None, help="image methods to run (default: all)"
    )
    ap.add_argument("--tasks", nargs="+", default=None, help="image tasks (default: all)")
    ap.add_argument(
        "--split",
        choices=SPLITS,
        default="test",
        help="image set: the held-out test crops, the validation crops or the photos crops "
        "(a second test set for priors that never trained on data.PHOTOS)",
    )
    ap.add_argument(
        "--options",
        default=None,
        help='JSON overrides of the per-method options, e.g. \'{"ddrm": {"eta": 0.5}}\'',
    )
    ap.add_argument(
        "--boundary-methods",
        nargs="+",
        default=["ddrm", "pigdm"],
        help="deterministic samplers of the boundary part (BCDM, sr4)",
    )
    ap.add_argument("--candidates", type=int, default=32, help="boundary part: x_T searched")
    ap.add_argument(
        "--sigmas", type=float, nargs="+", default=list(DENOISE_SIGMAS), help="denoise part"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="restoration_results.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {}
    if args.part in ("oracle", "all"):
        methods = None
        if args.oracle_methods is not None:
            unknown = sorted(set(args.oracle_methods) - set(ORACLE_METHODS))
            if unknown:
                ap.error(f"unknown oracle methods {unknown}; available: {sorted(ORACLE_METHODS)}")
            methods = {m: ORACLE_METHODS[m] for m in args.oracle_methods}
        out["oracle"] = oracle_benchmark(
            args.dims, (1, 2, 4), args.seeds, args.samples, args.steps, methods
        )
        print(oracle_markdown(out["oracle"]) + "\n")
        if {"afdps", "mcgdiff"} <= {r["method"] for r in out["oracle"]["rows"]}:
            print(paired_markdown(out["oracle"]) + "\n")
    if args.part in ("particles", "all"):
        out["particles"] = particles_benchmark(
            seeds=args.seeds, samples=args.samples, steps=args.steps
        )
        print(particles_markdown(out["particles"]) + "\n")
    if args.part in ("images", "all"):
        out["images"] = image_benchmark(
            args.tasks,
            images=args.images,
            steps=args.image_steps,
            K=args.particles,
            prior=args.prior,
            methods=args.methods,
            split=args.split,
            options=json.loads(args.options) if args.options else None,
            crop=args.crop,
        )
        print(image_markdown(out["images"]) + "\n")
    if args.part in ("boundary", "all"):
        out["boundary"] = [
            boundary_benchmark(m, candidates=args.candidates, prior=args.prior, split=args.split)
            for m in args.boundary_methods
        ]
        print(boundary_markdown(out["boundary"]) + "\n")
    if args.part in ("denoise", "all"):
        out["denoise"] = denoise_benchmark(args.sigmas, prior=args.prior, split=args.split)
        print(denoise_markdown(out["denoise"]) + "\n")
    atomic_write_text(args.out, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
