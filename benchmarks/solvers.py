"""diffsci's samplers beside diffusers' schedulers on exact Gaussian mixtures.

Every method starts from the same noise x1 at t_max of the discrete 1000-step
linear-beta VP schedule (beta 1e-4 .. 0.02, DDPM's) and is driven by the exact
denoiser of a Gaussian mixture (diffusers' schedulers through
``diffsci.core.interop.run_diffusers_scheduler``, which hands them epsilon at exactly
the noise level they ask for). Errors, per method and NFE:

- RMSE: sqrt(mean((x - x_ref)^2)) to the exact probability-flow ODE solution
  (``GaussianMixture.reference_solve``, DOP853 at 1e-10) at the method's own end point:
  t_min (sigma_VE = 0.01) for diffsci and for diffusers with final_sigmas_type
  "sigma_min"; sigma = 0 for the diffusers set-ups that end there (Heun, Karras and
  Lu-lambda grids, where "sigma_min" would repeat the last sigma and waste a step);
- SW2: sliced Wasserstein-2 to exact samples of the marginal at that end point.

diffsci rows show each solver at its best schedule among logsnr (l), karras (k),
quadratic (q) and uniform (u), chosen per NFE by RMSE; "searched" rows (s) use a grid
from ``core.search.search_schedule`` fitted on a separate batch of noise (other seeds)
and scored here on the common x1. diffusers rows are its schedulers' documented set-ups.
"best" rows take the minimum over the rows above (diffusers' over its set-ups).

Overhead: microseconds per step with a zero model (d = 1024), ours beside diffusers',
same process, same run.

    python benchmarks/solvers.py --json out.json   # everything (about 40 min on 2 cores)
    python benchmarks/solvers.py --dims 2 --quick   # a smoke run
    python benchmarks/solvers.py --render out.json  # the tables again, from the numbers
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch

from diffsci.core import EDM, GaussianMixture, sample, sliced_wasserstein, solvers
from diffsci.core.interop import run_diffusers_scheduler, scheduler_times, vp_of_scheduler
from diffsci.core.search import search_schedule
from diffsci.core.utils import atomic_write, atomic_write_text

KW = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
NFES = (5, 8, 10, 15, 20, 50)
SCHEDULES = {"logsnr": "l", "karras": "k", "quadratic": "q", "uniform": "u"}
# (dimension, components, samples, full covariances, seed)
PROBLEMS = {2: (8, 2000, True, 0), 64: (16, 500, True, 1), 1024: (25, 200, False, 2)}
# searched grids (core.search, "warp", uniform start) for these, at NFE <= 20, on a
# separate batch of noise (SEARCH_N samples, other seeds) with its own exact solve
SEARCH = [("unipc", {}), ("unipc", {"order": 3}), ("dpm++3m", {})]
SEARCH_N = {2: 2000, 64: 1000, 1024: 200}
SEARCH_EVALS = {2: 60, 64: 60, 1024: 40}
# solver variants beyond each registered solver's defaults
EXTRA = [
    ("dpm++3m", {"variant": "reference"}),
    ("dpm++3m", {"warmup": "singlestep"}),
    ("unipc", {"order": 3}),
    ("unipc", {"order": 3, "variant": "bh1"}),
    ("deis", {"order": 2}),
]


def diffusers_setups():
    """(label, constructor) of diffusers' schedulers, each with its documented options."""
    import diffusers as df

    sm = dict(final_sigmas_type="sigma_min")
    return [
        (
            "DDIM",
            lambda: df.DDIMScheduler(
                **KW, timestep_spacing="trailing", set_alpha_to_one=False, clip_sample=False
            ),
        ),
        ("Euler", lambda: df.EulerDiscreteScheduler(**KW, timestep_spacing="trailing", **sm)),
        ("Euler karras", lambda: df.EulerDiscreteScheduler(**KW, use_karras_sigmas=True)),
        ("Heun", lambda: df.HeunDiscreteScheduler(**KW)),
        ("DPM++ 2M", lambda: df.DPMSolverMultistepScheduler(**KW, solver_order=2, **sm)),
        ("DPM++ 3M", lambda: df.DPMSolverMultistepScheduler(**KW, solver_order=3, **sm)),
        (
            "DPM 2M",
            lambda: df.DPMSolverMultistepScheduler(
                **KW, solver_order=2, algorithm_type="dpmsolver", **sm
            ),
        ),
        (
            "DPM 3M",
            lambda: df.DPMSolverMultistepScheduler(
                **KW, solver_order=3, algorithm_type="dpmsolver", **sm
            ),
        ),
        (
            "DPM++ 2M karras",
            lambda: df.DPMSolverMultistepScheduler(**KW, solver_order=2, use_karras_sigmas=True),
        ),
        (
            "DPM++ 3M karras",
            lambda: df.DPMSolverMultistepScheduler(**KW, solver_order=3, use_karras_sigmas=True),
        ),
        (
            "DPM++ 3M lu",
            lambda: df.DPMSolverMultistepScheduler(**KW, solver_order=3, use_lu_lambdas=True),
        ),
        ("DPM++ 2S", lambda: df.DPMSolverSinglestepScheduler(**KW, solver_order=2, **sm)),
        ("DPM++ 3S", lambda: df.DPMSolverSinglestepScheduler(**KW, solver_order=3, **sm)),
        ("DEIS 2", lambda: df.DEISMultistepScheduler(**KW, solver_order=2)),
        ("DEIS 3", lambda: df.DEISMultistepScheduler(**KW, solver_order=3)),
        ("UniPC 2 bh2", lambda: df.UniPCMultistepScheduler(**KW, solver_order=2, **sm)),
        ("UniPC 3 bh2", lambda: df.UniPCMultistepScheduler(**KW, solver_order=3, **sm)),
        (
            "UniPC 3 bh1",
            lambda: df.UniPCMultistepScheduler(**KW, solver_order=3, solver_type="bh1", **sm),
        ),
        (
            "UniPC 3 karras",
            lambda: df.UniPCMultistepScheduler(**KW, solver_order=3, use_karras_sigmas=True),
        ),
    ]


class Problem:
    """One mixture, its noise, and exact references at both possible end points."""

    def __init__(self, d: int, process) -> None:
        K, n, full, seed = PROBLEMS[d]
        g = torch.Generator().manual_seed(seed)
        self.d, self.process = d, process
        self.gmm = GaussianMixture.random(K, d, generator=g, full=full)
        self.x1 = process.prior(
            (n, d), generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64
        )
        self.D = self.gmm.denoiser(process)
        tic = time.perf_counter()
        self.ref = {"t_min": self.gmm.reference_solve(process, self.x1)}
        # continue the exact flow from sigma_VE(t_min) to sigma = 1e-7 in EDM variables
        a, s = float(process.alpha(process.t_min)), float(process.sigma(process.t_min))
        edm = EDM(sigma_min=1e-7, sigma_max=s / a)
        self.ref["zero"] = self.gmm.reference_solve(edm, self.ref["t_min"] / a)
        self.ref_seconds = time.perf_counter() - tic
        x0 = self.gmm.sample(n, torch.Generator().manual_seed(200 + seed))
        z = torch.randn(
            x0.shape, generator=torch.Generator().manual_seed(300 + seed), dtype=x0.dtype
        )
        self.exact = {"t_min": a * x0 + s * z, "zero": x0}
        sw = lambda x, y: sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(0))
        self.sw = lambda x, end: float(sw(x, self.exact[end]))
        self.floor = {end: float(sw(self.ref[end], self.exact[end])) for end in self.ref}

    def errors(self, x: torch.Tensor, end: str) -> tuple[float, float]:
        rmse = float((x.double() - self.ref[end]).pow(2).mean().sqrt())
        return rmse, self.sw(x.double(), end)


def run_diffsci(P: Problem, nfes, schedules) -> dict:
    """{label: {nfe: (rmse, sw2, schedule letter)}} over every deterministic solver."""
    specs = solvers()
    runs = [(n, {}) for n, s in specs.items() if not s.stochastic and not s.adaptive]
    runs += [(n, o) for n, o in EXTRA if n in specs]
    out = {}
    for name, opts in runs:
        label = name + "".join(f" {k}={v}" for k, v in opts.items())
        row = {}
        for nfe in nfes:
            best = None
            for sched in schedules:
                try:
                    x = sample(P.D, P.process, P.x1, name, nfe=nfe, schedule=sched, **opts)
                except (ValueError, FloatingPointError) as e:  # recorded, not hidden
                    print(f"  {label} nfe={nfe} {sched}: {e}", file=sys.stderr)
                    continue
                rmse, sw = P.errors(x, "t_min")
                if best is None or rmse < best[0]:
                    best = (rmse, sw, SCHEDULES[sched])
            row[nfe] = best
        out[label] = row
        print(f"  diffsci {label}: done", file=sys.stderr)
    return out


def run_searched(P: Problem, nfes) -> dict:
    """Searched grids: fitted on fresh noise, then scored on the problem's own x1."""
    seed = PROBLEMS[P.d][3]
    xs = P.process.prior(
        (SEARCH_N[P.d], P.d),
        generator=torch.Generator().manual_seed(900 + seed),
        dtype=torch.float64,
    )
    target = P.gmm.reference_solve(P.process, xs, rtol=1e-8, atol=1e-8)
    out = {}
    for name, opts in SEARCH:
        label = "searched " + name + "".join(f" {k}={v}" for k, v in opts.items())
        row = {}
        for nfe in (n for n in nfes if n <= 20):
            r = search_schedule(
                P.D, P.process, xs, name, nfe, target=target, max_evals=SEARCH_EVALS[P.d], **opts
            )
            x = sample(P.D, P.process, P.x1, name, nfe=nfe, schedule=r.grid, **opts)
            rmse, sw = P.errors(x, "t_min")
            row[nfe] = (rmse, sw, "s")
        out[label] = row
        print(f"  diffsci {label}: done", file=sys.stderr)
    return out


def run_diffusers(P: Problem, nfes) -> dict:
    out = {}
    for label, make in diffusers_setups():
        row = {}
        for nfe in nfes:
            sch = make()
            heun = "Heun" in type(sch).__name__
            n = (nfe + 1) // 2 if heun else nfe  # Heun: 2n - 1 evaluations
            try:
                x, calls = run_diffusers_scheduler(sch, P.D, P.x1.float(), n)
            except Exception as e:  # a scheduler failing at this NFE is recorded
                print(f"  {label} nfe={nfe}: {type(e).__name__}: {e}", file=sys.stderr)
                row[nfe] = None
                continue
            sig = getattr(sch, "sigmas", None)
            end = "zero" if sig is not None and float(sig[-1]) == 0.0 else "t_min"
            if end == "t_min" and sig is not None:
                t_end = float(scheduler_times(sch)[-1])
                assert abs(t_end - P.process.t_min) < 1e-6, (label, t_end)
            rmse, sw = P.errors(x, end)
            row[nfe] = (rmse, sw, "0" if end == "zero" else "", calls)
        out[label] = row
        print(f"  diffusers {label}: done", file=sys.stderr)
    return out


def fmt(cell) -> str:
    if cell is None:
        return "—"
    rmse, sw, tag = cell[0], cell[1], cell[2]
    return f"{rmse:.1e} / {sw:.3f}" + (f" {tag}" if tag else "")


def table(d: int, floor: dict, ours: dict, searched: dict, theirs: dict, nfes) -> str:
    K, n, _, _ = PROBLEMS[d]
    lines = [
        f"### d = {d} ({K} components, {n} samples; SW2 floor of the exact flow: "
        f"{floor['t_min']:.3f} at t_min, {floor['zero']:.3f} at 0)",
        "",
        "Cells: RMSE to the exact ODE solution / SW2 to exact samples. diffsci: best schedule "
        "(l logsnr, k karras, q quadratic, u uniform; s searched on other noise). "
        "diffusers: 0 = ends at sigma 0; "
        "Heun spends 2n-1 evaluations, (nfe) gives its count where it differs.",
        "",
        "| method | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
        "|---|" + "---|" * len(nfes),
    ]
    for label, row in ours.items():
        lines.append(f"| {label} | " + " | ".join(fmt(row.get(n)) for n in nfes) + " |")
    for label, row in theirs.items():
        cells = []
        for n in nfes:
            c = row.get(n)
            s = fmt(c)
            if c is not None and c[3] != n:
                s += f" ({c[3]})"
            cells.append(s)
        lines.append(f"| diffusers {label} | " + " | ".join(cells) + " |")
    for label, row in searched.items():
        lines.append(f"| {label} | " + " | ".join(fmt(row.get(n)) for n in nfes) + " |")
    best = lambda rows, n: min(
        ((r[n][0], lab) for lab, r in rows.items() if r.get(n) is not None), default=(math.inf, "—")
    )
    b_fixed = [best(ours, n) for n in nfes]
    b_all = [best({**ours, **searched}, n) for n in nfes]
    b_theirs = [best(theirs, n) for n in nfes]
    rows = [("best diffsci, fixed schedules", b_fixed)]
    if searched:
        rows.append(("best diffsci, incl. searched", b_all))
    rows.append(("best diffusers", b_theirs))
    for title, b in rows:
        lines.append(f"| **{title}** | " + " | ".join(f"{e:.1e} {lab}" for e, lab in b) + " |")
    ratios = [("ratio fixed / diffusers", b_fixed)]
    if searched:
        ratios.append(("ratio incl. searched / diffusers", b_all))
    for title, b in ratios:
        cells = " | ".join(f"{x[0] / y[0]:.2f}" for x, y in zip(b, b_theirs))
        lines.append(f"| **{title}** | {cells} |")
    return "\n".join(lines)


def figure(record: dict, path: Path) -> None:
    """RMSE against NFE per dimension: diffsci's and diffusers' best, and named rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = {
        ("diffsci", "unipc"): ("C0", "-"),
        ("diffsci", "dpm++3m"): ("C1", "-"),
        ("diffusers", "UniPC 2 bh2"): ("C0", ":"),
        ("diffusers", "DPM++ 3M"): ("C1", ":"),
    }
    fig, axes = plt.subplots(1, len(record), figsize=(4.2 * len(record), 3.6), squeeze=False)
    for ax, (d, r) in zip(axes[0], record.items()):
        nfes = sorted({int(k) for row in r["diffsci"].values() for k in row})

        def line(rows, label, **kw):
            pts = [
                (n, min(row[str(n)][0] for row in rows.values() if row.get(str(n))))
                for n in nfes
                if any(row.get(str(n)) for row in rows.values())
            ]
            ax.plot(*zip(*pts), label=label, **kw)

        line(r["diffsci"], "diffsci best (fixed grids)", color="k", lw=2)
        if r.get("searched"):
            line(
                {**r["diffsci"], **r["searched"]}, "diffsci best (incl. searched)", color="g", lw=2
            )
        line(r["diffusers"], "diffusers best", color="r", lw=2)
        for (side, lab), (color, ls) in named.items():
            if lab in r[side]:
                line({lab: r[side][lab]}, f"{side} {lab}", color=color, ls=ls, lw=1)
        ax.set(xscale="log", yscale="log", xlabel="NFE", title=f"d = {d}")
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
    axes[0][0].set_ylabel("RMSE to the exact ODE solution")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()

    def write(tmp: str) -> None:
        fig.savefig(tmp, dpi=120, format="png")

    atomic_write(path, write)


def overhead(repeats: int = 5, steps: int = 50) -> str:
    """Per-step sampler overhead with a zero model, ours beside diffusers'."""
    import diffusers as df

    torch.set_num_threads(1)
    pairs = [
        (
            "ddim",
            {},
            lambda: df.DDIMScheduler(
                **KW, timestep_spacing="trailing", set_alpha_to_one=False, clip_sample=False
            ),
        ),
        (
            "dpm++2m",
            {},
            lambda: df.DPMSolverMultistepScheduler(**KW, final_sigmas_type="sigma_min"),
        ),
        (
            "dpm++3m",
            {},
            lambda: df.DPMSolverMultistepScheduler(
                **KW, solver_order=3, final_sigmas_type="sigma_min"
            ),
        ),
        ("unipc", {}, lambda: df.UniPCMultistepScheduler(**KW, final_sigmas_type="sigma_min")),
        ("deis", {}, lambda: df.DEISMultistepScheduler(**KW, solver_order=3)),
    ]
    zero = lambda x, t, cond=None: torch.zeros_like(x)
    lines = [
        f"Per-step overhead, zero model, d = 1024, float32, 1 thread, {steps} steps, median of {repeats}:",
        "",
        "| sampler | batch | diffsci (us/step) | diffusers (us/step) |",
        "|---|---|---|---|",
    ]
    for name, opts, make in pairs:
        if name not in solvers():
            continue
        sch = make()
        p = vp_of_scheduler(sch)
        for B in (1, 512):
            x1 = torch.randn(B, 1024, generator=torch.Generator().manual_seed(0))
            ours, theirs = [], []
            for _ in range(repeats):
                tic = time.perf_counter()
                sample(zero, p, x1, name, nfe=steps, **opts)
                ours.append((time.perf_counter() - tic) / steps * 1e6)
                tic = time.perf_counter()
                sch.set_timesteps(steps)
                x = x1
                for tau in sch.timesteps:
                    x = sch.step(
                        torch.zeros_like(x), tau, sch.scale_model_input(x, tau)
                    ).prev_sample
                theirs.append((time.perf_counter() - tic) / steps * 1e6)
            med = lambda v: sorted(v)[len(v) // 2]
            lines.append(f"| {name} | {B} | {med(ours):.0f} | {med(theirs):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 64, 1024], choices=sorted(PROBLEMS))
    ap.add_argument("--nfes", type=int, nargs="+", default=list(NFES))
    ap.add_argument("--quick", action="store_true", help="logsnr schedule only, no search")
    ap.add_argument("--overhead", choices=("yes", "no", "only"), default="yes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write all numbers here")
    ap.add_argument(
        "--render", type=Path, nargs="+", default=None, help="print the tables of --json files"
    )
    ap.add_argument("--figure", type=Path, default=None, help="with --render: RMSE-vs-NFE plot")
    args = ap.parse_args(argv)
    if args.render is not None:
        record = {}
        for path in args.render:
            record.update(json.loads(path.read_text()))
        if args.figure is not None:
            figure(record, args.figure)
        for d, r in record.items():
            key = lambda rows: {
                lab: {int(k): v for k, v in row.items()} for lab, row in rows.items()
            }
            nfes = sorted({int(k) for row in r["diffsci"].values() for k in row})
            parts = (key(r["diffsci"]), key(r.get("searched", {})), key(r["diffusers"]))
            print(table(int(d), r["floor"], *parts, nfes) + "\n")
        return
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    if args.overhead == "only":
        print(overhead())
        return
    schedules = ["logsnr"] if args.quick else list(SCHEDULES)
    process = vp_of_scheduler(diffusers_setups()[0][1]())
    record, tic = {}, time.perf_counter()
    for d in args.dims:
        P = Problem(d, process)
        print(f"d={d}: references in {P.ref_seconds:.0f} s", file=sys.stderr)
        ours = run_diffsci(P, args.nfes, schedules)
        searched = {} if args.quick else run_searched(P, args.nfes)
        theirs = run_diffusers(P, args.nfes)
        print(table(d, P.floor, ours, searched, theirs, args.nfes) + "\n", flush=True)
        record[d] = {"diffsci": ours, "searched": searched, "diffusers": theirs, "floor": P.floor}
    if args.overhead == "yes" and not args.quick:
        print(overhead() + "\n", flush=True)
    print(f"_{time.perf_counter() - tic:.0f} s wall_")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
