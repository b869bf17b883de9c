"""Reward guidance and posterior sampling against exact targets (issue 4).

1. Discrete oracle (``MarkovChainOracle.random(3, 4)``, exact denoiser, 8 masked steps):
   reward r = number of 0 tokens, alpha = 0.5; TV and KL(empirical || target) of 4000
   samples to the exact tilted law p(x) exp(r/alpha)/Z, mean reward, denoiser calls per
   sample. Methods: plain sampling, best-of-N with importance resampling (SIR), SVDD-PM
   (argmax and sampled value), SMC.
2. 2-D Gaussian mixture, VP, 40 DDPM steps, reward 1[x_0 > 2.8] (no gradient), alpha 0.1:
   mean reward and mean exact log-density of 400 samples. Methods: plain, best-of-N
   (argmax), SVDD-PM, SVDD-MC (value regressed on 1000 rollouts), SMC.
3. DPS (Gaussian rule) against the exact posterior of a linear measurement: SW2.

    python benchmarks/guidance.py        # about 2 min on 2 cores
"""

from __future__ import annotations

import time

import torch

from diffsci.core import (
    VP,
    GaussianMixture,
    MarkovChainOracle,
    MaskedDiffusion,
    sample,
    sample_masked,
    sliced_wasserstein,
)
from diffsci.core.guidance import dps
from diffsci.core.svdd import (
    best_of_n,
    fit_value_mc,
    smc_continuous,
    smc_masked,
    svdd_continuous,
    svdd_masked,
)

f64 = torch.float64
gen = lambda seed: torch.Generator().manual_seed(seed)


def discrete_table() -> str:
    N, steps, alpha = 4000, 8, 0.5
    oracle = MarkovChainOracle.random(3, 4, generator=gen(0))
    proc, D = MaskedDiffusion(3), oracle.denoiser()
    reward = lambda x: (x == 0).sum(1).to(f64)
    seqs, target = oracle.tilted(reward, alpha)
    powers = 3 ** torch.arange(3, -1, -1)

    def scores(x):
        emp = torch.bincount((x * powers).sum(1), minlength=len(target)).to(f64) / len(x)
        tv = 0.5 * float((emp - target).abs().sum())
        kl = float((emp[emp > 0] * (emp[emp > 0] / target[emp > 0]).log()).sum())
        return tv, kl, float(reward(x).mean())

    rows = [("plain sampling", sample_masked(D, proc, (N, 4), steps, gen(1)), N * steps)]
    for M in (4, 16):
        rows.append(
            (
                f"best-of-{M} (SIR)",
                *best_of_n(D, proc, (N * M, 4), reward, M, steps, alpha, gen(20)),
            )
        )
        for value in ("argmax", "sample"):
            rows.append(
                (
                    f"SVDD-PM {value}, M = {M}",
                    *svdd_masked(D, proc, (N, 4), reward, M, alpha, steps, gen(10), value),
                )
            )
        rows.append(
            (f"SMC, K = {M}", *smc_masked(D, proc, (N, 4), reward, M, alpha, steps, gen(3)))
        )
    exact_reward = float((target * reward(seqs)).sum())
    lines = [
        f"| method | TV to target | KL(emp \\|\\| target) | mean reward (target {exact_reward:.3f}) | calls / sample |",
        "|---|---|---|---|---|",
    ]
    for name, x, calls in rows:
        tv, kl, r = scores(x)
        lines.append(f"| {name} | {tv:.3f} | {kl:.3f} | {r:.3f} | {calls / N:.0f} |")
    return "\n".join(lines)


class _BoundedValue(torch.nn.Module):
    """sigmoid(MLP(x, t)): an indicator's value lies in [0, 1] (an unbounded value model
    extrapolates above 1 off the data and drags samples there)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, 64),
            torch.nn.SiLU(),
            torch.nn.Linear(64, 64),
            torch.nn.SiLU(),
            torch.nn.Linear(64, 1),
        )

    def forward(self, x, t):
        return torch.sigmoid(self.net(torch.cat([x, t[:, None].to(x.dtype)], 1)))[:, 0]


def continuous_table() -> str:
    B, steps, alpha = 400, 40, 0.1
    gmm = GaussianMixture.random(4, 2, generator=gen(7), scale=(0.2, 0.5))
    p = VP()
    D = gmm.denoiser(p)
    reward = lambda x: (x[:, 0] > 2.8).to(f64)
    x1 = p.prior((B, 2), generator=gen(1), dtype=f64)
    torch.manual_seed(0)
    value = _BoundedValue().double()
    value, fit_calls, _ = fit_value_mc(
        value, D, p, p.prior((1000, 2), gen(11), f64), reward, steps, gen(12)
    )
    rows = [
        (
            "plain DDPM",
            sample(D, p, x1, "ddpm", nfe=steps, schedule="uniform", generator=gen(2)),
            B * steps,
        )
    ]
    for M in (4, 16):
        rows.append(
            (f"best-of-{M}", *best_of_n(D, p, p.prior((M * B, 2), gen(3), f64), reward, M, steps))
        )
        rows.append(
            (f"SVDD-PM, M = {M}", *svdd_continuous(D, p, x1, reward, M, alpha, steps, gen(2)))
        )
        rows.append(
            (
                f"SVDD-MC, M = {M}",
                *svdd_continuous(D, p, x1, reward, M, alpha, steps, gen(2), value_model=value),
            )
        )
        rows.append(
            (
                f"SMC, K = {M}",
                *smc_continuous(
                    D, p, p.prior((B, 2), gen(4), f64), reward, M, alpha, steps, gen(5)
                ),
            )
        )
    data = gmm.sample(20000, gen(30))
    lines = [
        f"Data: mean reward {float(reward(data).mean()):.3f}, mean log p {float(gmm.log_prob(data).mean()):.2f} "
        f"(given r = 1: {float(gmm.log_prob(data[reward(data) > 0]).mean()):.2f}). SVDD-MC's value model "
        f"cost {fit_calls / 1000:.0f} calls per rollout (1000 rollouts), not counted below.",
        "",
        "| method | mean reward | mean exact log p | calls / sample |",
        "|---|---|---|---|",
    ]
    for name, x, calls in rows:
        lines.append(
            f"| {name} | {float(reward(x).mean()):.3f} | {float(gmm.log_prob(x).mean()):.2f} | {calls / len(x):.0f} |"
        )
    return "\n".join(lines)


def dps_table() -> str:
    g = GaussianMixture.random(6, 2, generator=gen(3))
    p, N = VP(), 2000
    A = torch.tensor([[1.0, 0.0]], dtype=f64)
    y = g.sample(1, gen(9)) @ A.T + 0.1 * torch.randn(1, 1, generator=gen(4), dtype=f64)
    post = g.posterior(A, y[0], 0.1)
    exact = post.sample(N, gen(2))
    sw = lambda x: float(sliced_wasserstein(x, exact, generator=gen(0)))
    x1 = p.prior((N, 2), generator=gen(1), dtype=f64)
    op, Y = (lambda x: x @ A.T), y.expand(N, 1)
    lines = [
        f"Floor (two exact posterior sets): {sw(post.sample(N, gen(7))):.3f}; prior samples: {sw(g.sample(N, gen(2))):.3f}.",
        "",
        "| DPS rule | sampler | NFE | SW2 to exact posterior |",
        "|---|---|---|---|",
    ]
    for rule, kw in (
        ("Gaussian, noise_std 0.1", dict(noise_std=0.1)),
        ("zeta / norm(res), zeta 1", {}),
    ):
        for solver, nfe in (
            ("euler_maruyama", 100),
            ("euler_maruyama", 500),
            ("ddpm", 200),
            ("ddim", 200),
        ):
            x = sample(dps(g.denoiser(p), p, op, Y, **kw), p, x1, solver, nfe=nfe, generator=gen(0))
            lines.append(f"| {rule} | {solver} | {nfe} | {sw(x):.3f} |")
    return "\n".join(lines)


def main() -> None:
    tic = time.perf_counter()
    torch.set_num_threads(1)
    print("### Discrete oracle: reward-tilted sampling\n\n" + discrete_table() + "\n")
    print("### 2-D mixture, indicator reward\n\n" + continuous_table() + "\n")
    print("### DPS against the exact posterior\n\n" + dps_table() + "\n")
    print(f"_{time.perf_counter() - tic:.0f} s wall_")


if __name__ == "__main__":
    main()
