"""``diffsci demo``: train a small MLP on a 2-D Gaussian mixture and compare samplers.

It trains a denoiser (VP process, v-prediction) on exact samples of a mixture,
samples with several solvers at several NFEs from the same prior draws, and reports
the sliced Wasserstein-2 distance of each to fresh exact samples of the mixture. The
Monte-Carlo floor row is the SW2 between two independent exact sample sets of the same
size: no sampler can be told apart from the truth below it.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import torch

from .analytic import GaussianMixture
from .metrics import sliced_wasserstein
from .nets import MLP
from .parameterization import Denoiser
from .processes import VP
from .samplers import sample, solvers
from .training import TrainConfig, train
from .utils import atomic_write, atomic_write_text

DEMO_SOLVERS = ("euler", "heun", "ddim", "dpm++2m", "unipc", "ddpm", "euler_maruyama", "pc")
DEMO_NFES = (6, 10, 20, 50)


def demo_mixture() -> GaussianMixture:
    """Eight anisotropic Gaussians on a ring of radius 2.5 and one at the centre."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    ring = 2.5 * torch.stack([angles.cos(), angles.sin()], dim=1)
    means = torch.cat([ring, torch.zeros(1, 2, dtype=torch.float64)])
    # each ring component is stretched along its tangent: std 0.25 x 0.08
    u = torch.stack([-angles.sin(), angles.cos()], dim=1)
    n = torch.stack([angles.cos(), angles.sin()], dim=1)
    covs = 0.25**2 * u[:, :, None] * u[:, None] + 0.08**2 * n[:, :, None] * n[:, None]
    covs = torch.cat([covs, 0.2**2 * torch.eye(2, dtype=torch.float64)[None]])
    weights = torch.cat(
        [torch.ones(8, dtype=torch.float64), torch.full((1,), 2.0, dtype=torch.float64)]
    )
    return GaussianMixture(weights, means, covs)


def markdown_table(
    results: dict[str, dict[int, float | None]], nfes: tuple[int, ...], floor: float
) -> str:
    head = "| solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
    rule = "|---|" + "---|" * len(nfes)
    rows = [head, rule]
    for name, row in results.items():
        cells = ["n/a" if row.get(n) is None else f"{row[n]:.4f}" for n in nfes]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    rows.append(
        "| exact samples (Monte-Carlo floor) | " + " | ".join(f"{floor:.4f}" for _ in nfes) + " |"
    )
    return "\n".join(rows)


def run_demo(
    out: str = "diffsci-demo",
    steps: int = 3000,
    n_samples: int = 4000,
    solver_names: tuple[str, ...] = DEMO_SOLVERS,
    nfes: tuple[int, ...] = DEMO_NFES,
    seed: int = 0,
    figure: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, sample, measure; write ``results.json``, ``demo.png`` and ``demo.pt`` to ``out``."""
    for name in solver_names:
        if name not in solvers():
            raise ValueError(f"unknown solver {name!r}; available: {sorted(solvers())}")
    torch.manual_seed(seed)  # network initialisation
    gmm = demo_mixture()
    process = VP()
    # v-prediction stays accurate at both ends of the noise range (Salimans & Ho 2022)
    den = Denoiser(MLP(dim=2, hidden=128, depth=3), process, prediction="v")
    data = lambda n, g: gmm.sample(n, g).float()
    cfg = TrainConfig(
        steps=steps, batch_size=512, lr=2e-3, ema_decay=0.995, seed=seed, lr_schedule="cosine"
    )
    t0 = time.perf_counter()
    result = train(
        den, data, cfg, checkpoint=os.path.join(out, "demo.pt"), resume=False, progress=progress
    )
    train_seconds = time.perf_counter() - t0
    model = result.ema

    g = torch.Generator().manual_seed(seed + 1)
    exact = gmm.sample(n_samples, g)
    floor = sliced_wasserstein(
        exact, gmm.sample(n_samples, g), generator=torch.Generator().manual_seed(0)
    )
    x1 = process.prior((n_samples, 2), generator=torch.Generator().manual_seed(seed + 2))
    table: dict[str, dict[int, float | None]] = {}
    samples: dict[tuple[str, int], torch.Tensor] = {}
    with torch.no_grad():
        for name in solver_names:
            table[name] = {}
            for nfe in nfes:
                try:  # an NFE this solver cannot spend exactly (e.g. pc with an odd one)
                    solvers()[name].steps(nfe)
                except ValueError:
                    table[name][nfe] = None
                    continue
                x = sample(
                    model,
                    process,
                    x1,
                    solver=name,
                    nfe=nfe,
                    schedule="logsnr",
                    generator=torch.Generator().manual_seed(seed + 3),
                    progress=progress,
                )
                samples[(name, nfe)] = x
                table[name][nfe] = sliced_wasserstein(
                    x, exact, generator=torch.Generator().manual_seed(0)
                )
    md = markdown_table(table, nfes, floor)
    summary = {
        "table_markdown": md,
        "sliced_w2": {k: {str(n): v for n, v in row.items()} for k, row in table.items()},
        "monte_carlo_floor": floor,
        "train_steps": steps,
        "train_seconds": train_seconds,
        "final_loss_mean_last_100": sum(result.losses[-100:]) / len(result.losses[-100:]),
        "n_samples": n_samples,
        "seed": seed,
        "process": process.config(),
    }
    atomic_write_text(os.path.join(out, "results.json"), json.dumps(summary, indent=2))
    if figure:
        _figure(os.path.join(out, "demo.png"), exact, samples, table, nfes, floor)
    return summary


def _figure(path, exact, samples, table, nfes, floor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    nfe_show = 10 if 10 in nfes else nfes[0]
    fig, axes = plt.subplots(2, 4, figsize=(16, 8))
    panels = [("exact samples", exact)] + [
        (f"{n}, NFE {nfe_show}", samples[(n, nfe_show)]) for n in names if (n, nfe_show) in samples
    ]
    for ax, (title, pts) in zip(axes.flat[:7], panels[:7]):
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        ax.set_title(title)
        ax.set_xlim(-4, 4)
        ax.set_ylim(-4, 4)
        ax.set_aspect("equal")
    ax = axes.flat[7]
    for n in names:
        xs = [k for k in nfes if table[n][k] is not None]
        ax.plot(xs, [table[n][k] for k in xs], marker="o", label=n)
    ax.axhline(floor, color="k", ls="--", label="Monte-Carlo floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel("sliced W2 to exact samples")
    ax.legend(fontsize=7)
    for ax in axes.flat[len(panels) : 7]:
        ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=80, format="png"))
    plt.close(fig)
