"""Empirical convergence orders of the basic ODE samplers on the exact Gaussian mixture.

Error = per-sample median distance to ``GaussianMixture.reference_solve`` (DOP853,
tolerance 1e-10); order = -slope of log(error) vs log(NFE). Prints a Markdown table.

    python benchmarks/orders.py
"""

from __future__ import annotations

import numpy as np
import torch

from diffsci.core import EDM, VP, GaussianMixture, Interpolant, sample

NFES = (30, 60, 120, 240)  # multiples of 3 and 2: singlestep budgets split evenly
SOLVERS = [  # (solver, options, expected order)
    ("euler", {}, 1),
    ("ddim", {}, 1),
    ("heun", {}, 2),
    ("dpm-solver-2", {}, 2),
    ("dpm-solver-3", {}, 3),
    ("dpm++2s", {}, 2),
    ("dpm++3s", {}, 3),
    ("dpm++2m", {}, 2),
    ("dpm++3m", {}, 3),
    ("dpm++3m", {"variant": "reference"}, 2),
    ("dpm-solver-3m", {}, 3),
    ("deis", {}, 3),
    ("deis", {"variable": "lambda"}, 3),
    ("unipc", {}, 3),
    ("unipc", {"order": 3, "lower_order_final": False}, 4),
    ("plms", {}, 2),
    ("ghvb", {}, 2),
    ("hb-dpm++", {}, 1),
]


def main() -> None:
    torch.set_num_threads(1)
    gmm = GaussianMixture.random(4, 2, generator=torch.Generator().manual_seed(7), scale=(0.3, 0.6))
    print(
        "| process | solver | "
        + " | ".join(f"err @ NFE {n}" for n in NFES)
        + " | order | expected |"
    )
    print("|---|---|" + "---|" * (len(NFES) + 2))
    for process in (VP(), EDM(), Interpolant()):
        x1 = process.prior((64, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        ref = gmm.reference_solve(process, x1)
        D = gmm.denoiser(process)
        for solver, opts, expected in SOLVERS:
            errs = [
                float((sample(D, process, x1, solver, nfe=n, **opts) - ref).norm(dim=1).median())
                for n in NFES
            ]
            order = -np.polyfit(np.log(NFES), np.log(errs), 1)[0]
            cells = " | ".join(f"{e:.2e}" for e in errs)
            label = solver + "".join(f" {k}={v}" for k, v in opts.items())
            print(f"| {type(process).__name__} | {label} | {cells} | {order:.2f} | {expected} |")


if __name__ == "__main__":
    main()
