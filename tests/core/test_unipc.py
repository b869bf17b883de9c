"""UniPC (Zhao et al. 2023) against diffusers, DPM-Solver++ and the exact oracle."""

import pytest
import torch
from oracle_cases import DIFFUSERS_KW, PROCESSES, float64_sigmas, slope, smooth_gmm

from diffsci.core import EDM, VP, GaussianMixture, sample


@pytest.fixture(scope="module")
def gmm():
    return smooth_gmm()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 inside diffusers
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_matches_diffusers(order, variant):
    """diffusers' UniPCMultistepScheduler(final_sigmas_type="sigma_min") on its own grid.

    Measured relative gaps over n = 5/10/20, orders 1-3: predict_x0=True 2e-8..4e-7;
    predict_x0=False 5e-8..1e-6, except n = 5 (3e-6..5.3e-5), where the noise-prediction
    update subtracts two terms ~e^h larger than its result and diffusers' float32 sigmas
    show: with them in float64 every gap is <= 1.0e-7.
    """
    diffusers = pytest.importorskip("diffusers")
    from diffsci.core.interop import run_diffusers_scheduler, scheduler_times, vp_of_scheduler

    base = diffusers.UniPCMultistepScheduler
    for cls, tol in ((base, 1e-4), (float64_sigmas(base), 1e-6)):
        for predict_x0 in (True, False):
            sch = cls(
                **DIFFUSERS_KW,
                final_sigmas_type="sigma_min",
                solver_order=order,
                solver_type=variant,
                predict_x0=predict_x0,
            )
            p = vp_of_scheduler(sch)
            gm = GaussianMixture.random(8, 16, generator=torch.Generator().manual_seed(0))
            D = gm.denoiser(p)
            x1 = p.prior((32, 16), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            for n in (5, 10, 20):
                xd, calls = run_diffusers_scheduler(sch, D, x1, n)
                opts = dict(order=order, variant=variant, predict_x0=predict_x0)
                xs = sample(
                    D, p, x1, "unipc", nfe=n, schedule=scheduler_times(sch).tolist(), **opts
                )
                assert calls == n
                rel = float((xs - xd).norm() / xd.norm())
                assert rel < tol, (cls.__name__, predict_x0, n, rel)


@pytest.mark.parametrize("order, other", [(1, "ddim"), (2, "dpm++2m"), (3, "dpm++3m")])
def test_unip_bh2_is_dpm_solver_pp(gmm, order, other):
    """UniP-p with B(h) = e^h - 1 and no corrector is DPM-Solver++(pM), re-derived
    there through finite differences instead of a linear solve.
    Measured gap <= 3e-14 (12, 33 steps; neither applies lower-order final steps)."""
    for p in (VP(), EDM()):
        x1 = p.prior((32, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        D = gmm.denoiser(p)
        for n in (12, 33):
            a = sample(
                D, p, x1, "unipc", nfe=n, order=order, corrector=False, lower_order_final=False
            )
            b = sample(D, p, x1, other, nfe=n)
            assert torch.allclose(a, b, rtol=0, atol=1e-12), (n, float((a - b).abs().max()))


@pytest.mark.parametrize("name", list(PROCESSES))
def test_unipc_orders(gmm, name):
    """Slopes of the median error vs NFE 32-128 (logsnr grid), VP / EDM / VP-discrete.
    Measured: UniPC-2 (bh2, corrector) 3.04 / 3.00 / 3.03, with bh1 3.10 / 3.09 / 3.09,
    with predict_x0=False 3.07 / 3.03 / 3.07; without the corrector 2.08 / 2.07 / 2.08
    (UniP-p + UniC-p has order p + 1, Zhao et al. 2023); UniPC-1 1.99 / 1.98 /
    1.99; UniPC-3 without lower-order final steps 3.94 / 4.00 / 3.94 (with them, the last
    step at order 1 without corrector pulls VP down to 3.55)."""
    p = PROCESSES[name]
    x1 = p.prior((64, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = gmm.reference_solve(p, x1)
    D = gmm.denoiser(p)
    nfes = [32, 64, 128]

    def errors(**opts):
        return [
            float((sample(D, p, x1, "unipc", nfe=n, **opts) - ref).norm(dim=1).median())
            for n in nfes
        ]

    for opts, expected in [
        (dict(order=2), 3),
        (dict(order=2, corrector=False), 2),
        (dict(order=2, variant="bh1"), 3),
        (dict(order=2, predict_x0=False), 3),
        (dict(order=1), 2),
        (dict(order=3, lower_order_final=False), 4),
    ]:
        err = errors(**opts)
        got = slope(nfes, err)
        assert abs(got - expected) < 0.3, (opts, got, err)


def test_unipc_spends_exactly_nfe(gmm):
    p = VP()
    D0 = gmm.denoiser(p)
    calls = []

    def D(x, t):
        calls.append(1)
        return D0(x, t)

    x1 = p.prior((4, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for nfe in (1, 2, 3, 4, 16):
        for order in (1, 2, 3):
            calls.clear()
            sample(D, p, x1, "unipc", nfe=nfe, order=order)
            assert len(calls) == nfe


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(order=0), "order must be 1, 2 or 3"),
        (dict(order=4), "order must be 1, 2 or 3"),
        (dict(order=True), "order must be 1, 2 or 3"),
        (dict(order=2.0), "order must be 1, 2 or 3"),
        (dict(variant="bh3"), "variant must be 'bh1' or 'bh2'"),
        (dict(variant="vary_coeff"), "variant must be 'bh1' or 'bh2'"),
        (dict(predict_x0="yes"), "predict_x0 must be a bool"),
        (dict(lower_order_final=None), "lower_order_final must be a bool"),
        (dict(corrector=1), "corrector must be a bool"),
        (dict(solver_type="bh2"), "takes no option"),
    ],
)
def test_unipc_bad_options(gmm, options, match):
    p = VP()
    x1 = p.prior((4, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        sample(gmm.denoiser(p), p, x1, "unipc", nfe=4, **options)
