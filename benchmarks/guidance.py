"""Reward guidance and posterior sampling against exact targets (issue 4).

1. Discrete oracle (``MarkovChainOracle.random(3, 4)``, exact denoiser, 8 masked steps):
   reward r = number of 0 tokens, alpha = 0.5; TV and KL(empirical || target) of 4000
   samples to the exact tilted law p(x) exp(r/alpha)/Z, mean reward, denoiser calls per
   sample. Methods: plain sampling, best-of-N with importance resampling (SIR), SVDD-PM
   (argmax and sampled value), SMC.
2. 2-D Gaussian mixture, VP, 40 DDPM steps, reward 1[x_0 > 2.8] (no gradient), alpha 0.1:
   mean reward and mean exact log-density of 400 samples. Methods: plain, best-of-N
   (argmax), SVDD-PM, SVDD-MC (value regressed on 1000 rollouts), SMC.
3. DPS (Gaussian rule) against the exact posterior of a linear measurement: SW2, and the
   figure benchmarks/dps.png.
4. The masked sampler with the exact denoiser against the oracle (ancestral vs
   first-hitting); PF-ODE and Ito log-likelihoods against the exact density; SuperDiff
   OR / AND against the exact mixture / product; CFG across w; concept blending on data
   with a hybrid.

    python benchmarks/guidance.py        # a few minutes on one thread
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
from diffsci.core.guidance import cfg, concept_blend, dps
from diffsci.core.likelihood import ode_log_likelihood
from diffsci.core.superdiff import ito_log_density, superdiff
from diffsci.core.svdd import (
    ValueNet,
    best_of_n,
    fit_value_mc,
    smc_continuous,
    smc_masked,
    svdd_continuous,
    svdd_masked,
)
from diffsci.core.utils import atomic_write

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

    torch.manual_seed(0)
    net = ValueNet(4, num_tokens=proc.num_tokens, bounds=(0.0, 4.0)).double()
    net, fit_calls, _ = fit_value_mc(net, D, proc, (1000, 4), reward, steps, gen(11), iters=300)
    rows = [("plain sampling", sample_masked(D, proc, (N, 4), steps, gen(1)), N * steps)]
    for M in (4, 16):
        rows.append(
            (
                f"SVDD-MC, M = {M} (value fit: {fit_calls // 1000} calls x 1000 rollouts)",
                *svdd_masked(D, proc, (N, 4), reward, M, alpha, steps, gen(10), value_model=net),
            )
        )
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


def continuous_table() -> str:
    B, steps, alpha = 400, 40, 0.1
    gmm = GaussianMixture.random(4, 2, generator=gen(7), scale=(0.2, 0.5))
    p = VP()
    D = gmm.denoiser(p)
    reward = lambda x: (x[:, 0] > 2.8).to(f64)
    x1 = p.prior((B, 2), generator=gen(1), dtype=f64)
    torch.manual_seed(0)
    value = ValueNet(2, bounds=(0.0, 1.0)).double()  # an indicator lies in [0, 1]
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


def _dps_setup(y_value: float | None = None, N: int = 2000):
    """A 6-component 2-D mixture observed through y = x_1 + 0.1 n. The default y is a draw;
    y_value = 0.1 cuts three components, so the exact posterior is multimodal."""
    g = GaussianMixture.random(6, 2, generator=gen(3))
    p = VP()
    A = torch.tensor([[1.0, 0.0]], dtype=f64)
    y = g.sample(1, gen(9)) @ A.T + 0.1 * torch.randn(1, 1, generator=gen(4), dtype=f64)
    if y_value is not None:
        y = torch.full((1, 1), y_value, dtype=f64)
    post = g.posterior(A, y[0], 0.1)
    return g, p, A, y, post, p.prior((N, 2), generator=gen(1), dtype=f64)


DPS_CASES = (("drawn y (unimodal posterior)", None), ("y = 0.1 (three-mode posterior)", 0.1))


def dps_table() -> str:
    lines = [
        "| y | DPS rule | sampler | NFE | SW2 to exact posterior |",
        "|---|---|---|---|---|",
    ]
    floors = []
    for case, y_value in DPS_CASES:
        g, p, A, y, post, x1 = _dps_setup(y_value)
        N = len(x1)
        exact = post.sample(N, gen(2))
        sw = lambda x: float(sliced_wasserstein(x, exact, generator=gen(0)))
        op, Y = (lambda x: x @ A.T), y.expand(N, 1)
        floors.append(
            f"{case}: floor (two exact posterior sets) {sw(post.sample(N, gen(7))):.3f}, "
            f"prior samples {sw(g.sample(N, gen(2))):.3f}"
        )
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
                D = dps(g.denoiser(p), p, op, Y, **kw)
                x = sample(D, p, x1, solver, nfe=nfe, generator=gen(0))
                lines.append(f"| {case} | {rule} | {solver} | {nfe} | {sw(x):.3f} |")
    return "; ".join(floors) + ".\n\n" + "\n".join(lines)


def masked_table() -> str:
    """The masked sampler with the exact denoiser against the oracle itself (V=3, L=5)."""
    N = 20000
    oracle = MarkovChainOracle.random(3, 5, gen(5), concentration=0.7)
    proc, D = MaskedDiffusion(3), oracle.denoiser()
    seqs, p = oracle.enumerate()
    powers = 3 ** torch.arange(4, -1, -1)
    tv = lambda x: (
        0.5
        * float(
            (torch.bincount((x * powers).sum(1), minlength=len(p)).to(f64) / len(x) - p).abs().sum()
        )
    )
    floor = [tv(seqs[torch.multinomial(p, N, True, generator=gen(100 + i))]) for i in range(20)]
    lines = [
        f"Monte-Carlo floor (exact draws of N = {N}): TV {sum(floor) / 20:.3f} (mean of 20).",
        "",
        "| sampler | denoiser calls | TV to the oracle |",
        "|---|---|---|",
    ]
    for steps in (1, 5, 20, 100):
        x = sample_masked(D, proc, (N, 5), steps, gen(steps))
        lines.append(f"| ancestral, {steps} steps | {steps} | {tv(x):.3f} |")
    x = sample_masked(D, proc, (N, 5), None, gen(8), sampler="first-hitting")
    lines.append(f"| first-hitting | 5 | {tv(x):.3f} |")
    return "\n".join(lines)


def likelihood_table() -> str:
    """PF-ODE (exact divergence, Hutchinson) and the Ito estimator against the exact GMM
    log-density at t_min."""
    p = VP()
    rows = []
    for d in (2, 16):
        g = GaussianMixture.random(4, d, generator=gen(0), scale=(0.2, 0.5))
        x = g.sample(200, gen(1))
        exact = g.log_prob_t(x, p.t_min, p)
        for div, probes in (("exact", 1), ("hutchinson", 1), ("hutchinson", 8)):
            tic = time.perf_counter()
            res = ode_log_likelihood(g.denoiser(p), p, x, div, probes, gen(2))
            sec = time.perf_counter() - tic
            err = res.log_prob - exact
            name = "exact divergence" if div == "exact" else f"Hutchinson, {probes} probe(s)"
            rows.append((d, f"PF-ODE, {name}", err, sec, res.evaluations))
        x1 = p.prior((200, d), gen(3), f64)
        for steps in (100, 400, 1600):
            tic = time.perf_counter()
            xs, lq = ito_log_density(g.denoiser(p), p, x1, steps, gen(4))
            sec = time.perf_counter() - tic
            rows.append(
                (
                    d,
                    f"Ito estimator, {steps} EM steps",
                    lq - g.log_prob_t(xs, p.t_min, p),
                    sec,
                    steps,
                )
            )
    lines = [
        "| d | estimator | mean error (nats) | mean abs error | ODE evaluations or EM steps | seconds (200 points) |",
        "|---|---|---|---|---|---|",
    ]
    for d, name, err, sec, nfe in rows:
        lines.append(
            f"| {d} | {name} | {float(err.mean()):+.3f} | {float(err.abs().mean()):.3f} | {nfe} | {sec:.1f} |"
        )
    return "\n".join(lines)


def _pair():
    sd = lambda a, b: torch.tensor([[a, a], [b, b]], dtype=f64) ** 2
    g1 = GaussianMixture(
        torch.tensor([0.5, 0.5]), torch.tensor([[-2.0, 0.0], [1.0, 1.0]]), sd(0.3, 0.4)
    )
    g2 = GaussianMixture(
        torch.tensor([0.5, 0.5]), torch.tensor([[1.3, 0.8], [2.0, -2.0]]), sd(0.4, 0.3)
    )
    return g1, g2


def superdiff_table() -> str:
    """OR against the exact mixture, AND against the exact normalised product (grid)."""
    g1, g2 = _pair()
    p, N = VP(), 2000
    sw = lambda a, b: float(sliced_wasserstein(a, b, generator=gen(0)))
    diag = lambda g: torch.diagonal(g.covs, dim1=-2, dim2=-1)
    mix = GaussianMixture(
        torch.cat([g1.weights, g2.weights]) / 2,
        torch.cat([g1.means, g2.means]),
        torch.cat([diag(g1), diag(g2)]),
    )
    grid = torch.linspace(-4, 4, 161, dtype=f64)
    P = torch.cartesian_prod(grid, grid)
    w = torch.softmax(g1.log_prob(P) + g2.log_prob(P), 0)
    product = lambda seed: (
        P[torch.multinomial(w, N, True, generator=gen(seed))]
        + 0.05 * (torch.rand(N, 2, generator=gen(seed + 1), dtype=f64) - 0.5)
    )
    x1 = p.prior((N, 2), generator=gen(1), dtype=f64)
    D = [g1.denoiser(p), g2.denoiser(p)]
    both = lambda x: float((g1.log_prob(x) + g2.log_prob(x)).mean())
    lines = [
        "| mode | steps | SW2 to exact mixture | SW2 to exact product | mean log p1 + log p2 |",
        "|---|---|---|---|---|",
        f"| exact mixture (floor) | - | {sw(mix.sample(N, gen(8)), mix.sample(N, gen(3))):.3f} | "
        f"{sw(mix.sample(N, gen(8)), product(5)):.3f} | {both(mix.sample(N, gen(8))):.1f} |",
        f"| exact product (floor) | - | {sw(product(9), mix.sample(N, gen(3))):.3f} | "
        f"{sw(product(9), product(5)):.3f} | {both(product(9)):.1f} |",
    ]
    for mode in ("or", "and"):
        for steps in (50, 200):
            x, _ = superdiff(D, p, x1, steps, mode, gen(2))
            lines.append(
                f"| SuperDiff {mode.upper()} | {steps} | {sw(x, mix.sample(N, gen(3))):.3f} | "
                f"{sw(x, product(5)):.3f} | {both(x):.1f} |"
            )
    return "\n".join(lines)


def _classes():
    g = GaussianMixture.random(6, 2, generator=gen(3))
    sub = lambda idx: GaussianMixture(g.weights[idx], g.means[idx], g.covs[idx])
    return g, [sub([0, 1, 2]), sub([3, 4, 5])]


def cfg_table() -> str:
    """CFG = RLG on exact denoisers: base = the unconditional mixture, target = class 1."""
    g, subs = _classes()
    p, N = VP(), 4000
    Dc = lambda x, t, cond=None: subs[cond].denoiser(p)(x, t)
    lw = torch.log(torch.stack([g.weights[:3].sum(), g.weights[3:].sum()]))
    post1 = lambda x: torch.softmax(
        torch.stack([subs[0].log_prob(x), subs[1].log_prob(x)], 1) + lw, 1
    )[:, 1]
    sw = lambda a, b: float(sliced_wasserstein(a, b, generator=gen(0)))
    target = subs[1].sample(N, gen(2))
    x1 = p.prior((N, 2), generator=gen(1), dtype=f64)
    lines = [
        f"Floor (two exact class-1 sets): {sw(subs[1].sample(N, gen(5)), target):.3f}.",
        "",
        "| w | SW2 to class 1 | mean p(class 1 \\| x) | mean exact log p(x \\| class 1) |",
        "|---|---|---|---|",
    ]
    for w in (0.0, 0.5, 1.0, 2.0, 4.0):
        D = cfg(Dc, w, uncond_denoiser=g.denoiser(p))
        x = sample(D, p, x1, "heun", nfe=61, cond=1)
        lines.append(
            f"| {w:g} | {sw(x, target):.3f} | {float(post1(x).mean()):.3f} | "
            f"{float(subs[1].log_prob(x).mean()):.2f} |"
        )
    return "\n".join(lines)


def blend_table() -> str:
    """Concept blending where a hybrid exists: four components at (+-3, +-0.4); condition A
    puts 0.85 on (-3, +0.4) (left, up), condition B 0.83 on (+3, -0.4) (right, down). The
    hybrid "left from A, down from B" (-3, -0.4) has weight 0.05 under A and 0.13 under B.
    The large x-gap is decided early in the reverse process and the small y-gap late."""
    means = torch.tensor([[-3.0, 0.4], [-3.0, -0.4], [3.0, 0.4], [3.0, -0.4]], dtype=f64)
    cov = torch.full((4, 2), 0.1**2, dtype=f64)
    A = GaussianMixture(torch.tensor([0.85, 0.05, 0.05, 0.05]), means, cov)
    B = GaussianMixture(torch.tensor([0.02, 0.13, 0.02, 0.83]), means, cov)
    p, N = VP(), 4000
    dens = [A.denoiser(p), B.denoiser(p)]
    D = lambda x, t, cond=None: dens[cond](x, t)

    def score(x0, k):  # a CLIP-like score: 100 p(condition k | x0_hat)
        lp = torch.stack([A.log_prob(x0), B.log_prob(x0)], 1)
        return 100 * torch.softmax(lp, 1)[:, k] + 1e-6

    comp = lambda x: (
        torch.bincount((x[:, None] - means[None]).square().sum(-1).argmin(1), minlength=4).double()
        / len(x)
    )
    x1 = p.prior((N, 2), generator=gen(1), dtype=f64)
    rows = [
        (f"condition {n} alone", comp(sample(D, p, x1, "ddim", nfe=50, cond=k)), "-")
        for k, n in enumerate("AB")
    ]
    for official in (False, True):
        x, used = concept_blend(D, p, x1, [0, 1], score, 50, strike=50.0, official=official)
        name = "Black-Scholes blend" + (" (official exp(-d^2/2))" if official else "")
        rows.append((name, comp(x), f"{float(used.double().mean()):.2f}"))
    lines = [
        "| sampler (50 DDIM steps) | (-3, +0.4) A | (-3, -0.4) hybrid | (+3, +0.4) | (+3, -0.4) B | share of steps on B |",
        "|---|---|---|---|---|---|",
    ]
    for name, c, share in rows:
        lines.append(f"| {name} | " + " | ".join(f"{float(v):.3f}" for v in c) + f" | {share} |")
    return "\n".join(lines)


def dps_figure(path: str = "benchmarks/dps.png") -> None:
    """Prior, exact posterior and DPS samples for both measurements of dps_table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5), sharex=True, sharey=True)
    for row, (case, y_value) in zip(axes, DPS_CASES):
        g, p, A, y, post, x1 = _dps_setup(y_value)
        op, Y = (lambda x: x @ A.T), y.expand(len(x1), 1)
        D = dps(g.denoiser(p), p, op, Y, noise_std=0.1)
        x = sample(D, p, x1, "euler_maruyama", nfe=100, generator=gen(0))
        for ax, pts, title in (
            (row[0], g.sample(len(x1), gen(2)), "prior (GMM)"),
            (row[1], post.sample(len(x1), gen(2)), f"exact posterior, {case}"),
            (row[2], x, "DPS (Gaussian rule), Euler-Maruyama 100"),
        ):
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4)
            ax.axvline(float(y), color="k", lw=0.8, ls="--")
            ax.set_title(title, fontsize=9)
    fig.suptitle("y = x_1 + 0.1 n (dashed line: the observed y); 2000 samples each")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)


def main() -> None:
    tic = time.perf_counter()
    torch.set_num_threads(1)
    print("### Discrete oracle: reward-tilted sampling\n\n" + discrete_table() + "\n")
    print("### Masked diffusion: the sampler with the exact denoiser\n\n" + masked_table() + "\n")
    print("### 2-D mixture, indicator reward\n\n" + continuous_table() + "\n")
    print("### DPS against the exact posterior\n\n" + dps_table() + "\n")
    dps_figure()
    print(
        "### Likelihood: PF-ODE and the Ito estimator against the exact density\n\n"
        + likelihood_table()
        + "\n"
    )
    print(
        "### SuperDiff OR / AND against the exact mixture and product\n\n"
        + superdiff_table()
        + "\n"
    )
    print(
        "### Classifier-free guidance (= RLG with w) on exact conditionals\n\n" + cfg_table() + "\n"
    )
    print("### Concept blending with a hybrid in the data\n\n" + blend_table() + "\n")
    print(f"_{time.perf_counter() - tic:.0f} s wall_")


if __name__ == "__main__":
    main()
