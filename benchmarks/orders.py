"""Empirical convergence orders of the basic ODE samplers on the exact Gaussian mixture.

Error = per-sample median distance to ``GaussianMixture.reference_solve`` (DOP853,
tolerance 1e-10); order = -slope of log(error) vs log(NFE). Prints a Markdown table.

    python benchmarks/orders.py
"""

from __future__ import annotations

import numpy as np
import torch

from diffsci.core import EDM, VP, GaussianMixture, Interpolant, sample

NFES = (32, 64, 128, 256)


def main() -> None:
    torch.set_num_threads(2)
    gmm = GaussianMixture.random(4, 2, generator=torch.Generator().manual_seed(7), scale=(0.3, 0.6))
    print("| process | solver | " + " | ".join(f"err @ NFE {n}" for n in NFES) + " | order |")
    print("|---|---|" + "---|" * (len(NFES) + 1))
    for process in (VP(), EDM(), Interpolant()):
        x1 = process.prior((64, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        ref = gmm.reference_solve(process, x1)
        D = gmm.denoiser(process)
        for solver in ("euler", "heun", "ddim"):
            errs = [
                float((sample(D, process, x1, solver, nfe=n) - ref).norm(dim=1).median())
                for n in NFES
            ]
            order = -np.polyfit(np.log(NFES), np.log(errs), 1)[0]
            cells = " | ".join(f"{e:.2e}" for e in errs)
            print(f"| {type(process).__name__} | {solver} | {cells} | {order:.2f} |")


if __name__ == "__main__":
    main()
