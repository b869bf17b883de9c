"""DEIS (tAB-DEIS, Zhang & Chen 2023) against diffusers, closed forms and the exact oracle."""

import numpy as np
import pytest
import torch
from oracle_cases import DIFFUSERS_KW, PROCESSES, float64_sigmas, slope, smooth_gmm

from diffsci.core import EDM, VP, GaussianMixture, sample
from diffsci.core.deis import deis_coefficients
from diffsci.core.schedules import time_grid
from diffsci.core.utils import derivative


@pytest.fixture(scope="module")
def gmm():
    return smooth_gmm()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 on diffusers' np.log
@pytest.mark.parametrize("order", [1, 2, 3])
def test_deis_matches_diffusers_logrho(order):
    """diffusers' DEIS (solver_type="logrho") = ours with variable="lambda" on the same grid.

    Its default grid ends at sigma(alphas_cumprod[0]) > 0, i.e. at t_min = 1/N (it has no
    final_sigmas_type), so ``scheduler_times`` applies as is; its lower-order final steps
    (under 15 steps) are ours. Measured relative gaps at n = 5/10/20: order 1
    1.2e-7/1.9e-7/1.7e-7, order 2 7.9e-8/9.7e-8/2.2e-7, order 3 1.4e-6/2.6e-7/4.6e-6,
    all float32 round-off: with diffusers' sigmas in float64 they drop to 3e-9..5e-8.
    """
    diffusers = pytest.importorskip("diffusers")
    from diffsci.core.interop import run_diffusers_scheduler, scheduler_times, vp_of_scheduler

    for cls, tol in ((diffusers.DEISMultistepScheduler, 1e-4), (None, 1e-6)):
        cls = cls or float64_sigmas(diffusers.DEISMultistepScheduler)
        sch = cls(**DIFFUSERS_KW, solver_order=order)
        p = vp_of_scheduler(sch)
        D = GaussianMixture.random(8, 16, generator=torch.Generator().manual_seed(0)).denoiser(p)
        x1 = p.prior((32, 16), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        for n in (5, 10, 20):
            xd, calls = run_diffusers_scheduler(sch, D, x1, n)
            grid = scheduler_times(sch).tolist()
            xs = sample(D, p, x1, "deis", nfe=n, schedule=grid, order=order, variable="lambda")
            assert calls == n
            rel = float((xs - xd).norm() / xd.norm())
            assert rel < tol, (cls.__name__, n, rel)


# --------------------------------------------------------------------------------------
# the weights, a second way
# --------------------------------------------------------------------------------------
def test_deis_order_one_is_ddim(gmm):
    """With one point the Lagrange extrapolation is constant: DEIS-1 is DDIM."""
    for p in (VP(), EDM()):
        x1 = p.prior((16, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        D = gmm.denoiser(p)
        ddim = sample(D, p, x1, "ddim", nfe=6)
        for variable in ("t", "rho", "lambda"):
            x = sample(D, p, x1, "deis", nfe=6, order=1, variable=variable)
            assert torch.allclose(x, ddim, rtol=0, atol=1e-12), variable


def test_deis_rho_weights_are_adams_bashforth():
    """variable="rho": the weights are the Adams-Bashforth integrals of the Lagrange basis
    in rho, integrated here exactly as numpy polynomials."""
    p = VP()
    ts = time_grid(p, 7, "logsnr")
    rho = torch.exp(-0.5 * p.log_snr(ts)).numpy()
    for order in (2, 3):
        weights = deis_coefficients(p, ts, order, "rho", lower_order_final=False)
        for i, w in enumerate(weights):
            nodes = rho[i - len(w) + 1 : i + 1][::-1]
            for j in range(len(w)):
                others = np.delete(nodes, j)
                lj = np.polynomial.Polynomial.fromroots(others) if len(others) else 1.0
                lj = np.polynomial.Polynomial([1.0]) * lj / np.prod(nodes[j] - others)
                exact = lj.integ()(rho[i + 1]) - lj.integ()(rho[i])
                assert abs(float(w[j]) - exact) <= 1e-12 * abs(exact) + 1e-15, (order, i, j)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_deis_t_weights_by_quadrature_in_t(name):
    """variable="t": C_ij = int l_j(t) rho'(t) dt recomputed in t itself, with rho'(t) by
    autograd and Gauss-Legendre panels in t (split at the knots of the discrete schedule,
    where rho' jumps); ours integrate in u = log rho. Measured agreement <= 1e-13."""
    p = PROCESSES[name]
    ts = time_grid(p, 6, "logsnr")
    weights = deis_coefficients(p, ts, 3, "t", lower_order_final=False)
    x, w = (torch.as_tensor(a, dtype=torch.float64) for a in np.polynomial.legendre.leggauss(20))
    knots = getattr(p, "_t_grid", None)
    for i, c in enumerate(weights):
        nodes = ts[i - len(c) + 1 : i + 1].flip(0)
        lo, hi = ts[i + 1], ts[i]
        if knots is not None:
            edges = torch.cat([lo[None], knots[(knots > lo) & (knots < hi)], hi[None]])
        else:  # geometric panels: rho(t) ~ sqrt(t) near t = 0 for VP
            edges = torch.exp(torch.linspace(lo.log(), hi.log(), 41, dtype=torch.float64))
        half = 0.5 * (edges[1:] - edges[:-1])[:, None]
        tq = (0.5 * (edges[1:] + edges[:-1])[:, None] + half * x).reshape(-1)
        wq = (half * w).reshape(-1)
        d_rho = derivative(lambda t: torch.exp(-0.5 * p.log_snr(t)), tq)
        for j in range(len(c)):
            lj = torch.ones_like(tq)
            for k in range(len(c)):
                if k != j:
                    lj = lj * (tq - nodes[k]) / (nodes[j] - nodes[k])
            ref = -float((wq * lj * d_rho).sum())  # from t_i down to t_{i+1}
            assert abs(float(c[j]) - ref) <= 1e-10 * abs(ref), (i, j, float(c[j]), ref)


def test_deis_variable_t_equals_rho_for_edm(gmm):
    """EDM has rho = sigma_max t: an affine change of variable leaves the Lagrange basis,
    hence the sampler, unchanged."""
    p = EDM()
    x1 = p.prior((16, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    D = gmm.denoiser(p)
    a = sample(D, p, x1, "deis", nfe=12, order=3, variable="t")
    b = sample(D, p, x1, "deis", nfe=12, order=3, variable="rho")
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-10)


# --------------------------------------------------------------------------------------
# convergence on the exact oracle
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PROCESSES))
def test_deis_orders(gmm, name):
    """Slopes of the median error vs NFE 64-256 (logsnr grid). Measured: order 1 1.00
    everywhere; order 2 1.94-1.96 ("t"), 1.97-1.98 ("lambda"); order 3 2.83 (EDM),
    2.88 (VP), 2.90 (VP-discrete) for "t", 3.06 (EDM), 3.12 (VP, VP-discrete) for
    "lambda", whose order-3 errors are 4-20x smaller.

    The order-1 first step bounds the global order of order 3 by 2 in theory, but with
    the noise prediction its error constant is tiny here (eps barely changes at high
    noise); it shows in the local error of the first steps (next test)."""
    p = PROCESSES[name]
    x1 = p.prior((64, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = gmm.reference_solve(p, x1)
    D = gmm.denoiser(p)
    nfes = [64, 128, 256]

    def errors(**opts):
        return [
            float((sample(D, p, x1, "deis", nfe=n, **opts) - ref).norm(dim=1).median())
            for n in nfes
        ]

    err1 = errors(order=1)  # one point: the same for every variable (DDIM, test above)
    assert abs(slope(nfes, err1) - 1) < 0.3, err1
    for variable in ("t", "lambda"):
        err = {
            1: err1,
            2: errors(order=2, variable=variable),
            3: errors(order=3, variable=variable),
        }
        for order in (2, 3):
            got = slope(nfes, err[order])
            assert abs(got - order) < 0.3, (variable, order, got, err[order])
        assert all(e3 < e2 < e1 for e1, e2, e3 in zip(err[1], err[2], err[3])), err


def test_deis_corrected_start_lifts_the_first_step_bound(gmm):
    """Error after the first three steps of an n-step grid (order 3, EDM), n = 64-256:
    the lower-order start leaves O(h^2) (measured slopes 2.12 "t", 2.01 "lambda");
    start="corrected" redoes step 1 with the trapezoidal weights at no extra NFE and
    leaves O(h^3) (3.21, 3.27)."""
    p = EDM()
    x1 = p.prior((64, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    D = gmm.denoiser(p)
    ns = [64, 128, 256]
    grids = [time_grid(p, n, "logsnr")[:4] for n in ns]
    refs = [gmm.reference_solve(p, x1, t_end=float(g[-1])) for g in grids]
    for variable in ("t", "lambda"):
        slopes = {}
        for start in ("lower_order", "corrected"):
            errs = [
                float(
                    (
                        sample(
                            D,
                            p,
                            x1,
                            "deis",
                            nfe=3,
                            schedule=g.tolist(),
                            order=3,
                            variable=variable,
                            start=start,
                            lower_order_final=False,
                        )
                        - r
                    )
                    .norm(dim=1)
                    .median()
                )
                for g, r in zip(grids, refs)
            ]
            slopes[start] = slope(ns, errs)
        assert slopes["lower_order"] < 2.4 and slopes["corrected"] > 2.9, (variable, slopes)


# --------------------------------------------------------------------------------------
# contract
# --------------------------------------------------------------------------------------
def test_deis_spends_exactly_nfe(gmm):
    p = VP()
    D0 = gmm.denoiser(p)
    calls = []

    def D(x, t):
        calls.append(1)
        return D0(x, t)

    x1 = p.prior((4, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for nfe in (1, 2, 3, 4, 16):
        for start in ("lower_order", "corrected"):
            calls.clear()
            sample(D, p, x1, "deis", nfe=nfe, start=start)
            assert len(calls) == nfe


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(order=0), "order must be 1, 2 or 3"),
        (dict(order=4), "order must be 1, 2 or 3"),
        (dict(order=True), "order must be 1, 2 or 3"),
        (dict(order=2.0), "order must be 1, 2 or 3"),
        (dict(variable="sigma"), "variable must be one of"),
        (dict(start="rk"), "start must be"),
        (dict(lower_order_final=1), "lower_order_final must be a bool"),
        (dict(eta=1.0), "takes no option"),
    ],
)
def test_deis_bad_options(gmm, options, match):
    p = VP()
    x1 = p.prior((4, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        sample(gmm.denoiser(p), p, x1, "deis", nfe=4, **options)
