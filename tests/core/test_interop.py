"""Interop: diffusers and MONAI networks as diffsci denoisers, their schedulers driven by one.

The truth is the library's own arithmetic: a wrapped network's x0 is compared with the
``pred_original_sample`` of the scheduler's ``step`` on the same network output, and a
diffsci ``ddim`` run on ``scheduler_times`` with the library's own DDIM loop (tiny random
networks, seeded; nothing is downloaded). Relative errors ||a - b|| / ||b||, measured on
the 2-core CPU box (torch 2.13, diffusers 0.42.1, monai 1.6.1):

- single-step x0 vs ``step(...).pred_original_sample``, bound 1e-5: eps and sample are
  bit-identical (0) for diffusers ``UNet2DModel`` (also learned-variance and
  class-conditional), ``UNet2DConditionModel`` and MONAI ``DiffusionModelUNet`` (DDIM and
  DDPM schedulers, with ``context`` or ``class_labels``); v 2.2e-8 (diffusers), 3.2e-8
  (MONAI). A float64 network on float32 input agrees with the float32 one to 1.4e-7.
- full DDIM loop (float32 network) vs ``sample(D, D.process, x1, "ddim", schedule=
  scheduler_times(s))``, bound 1e-4: diffusers eps 1.3e-7 / 1.4e-7, v 3.2e-7 / 1.9e-7
  (trailing / leading + steps_offset=1, n = 10); MONAI eps 1.4e-7 (n = 10), 7.5e-8
  (n = 5), v 3.1e-7 (n = 10).
- ``run_diffusers_scheduler`` with the exact oracle (float64) vs diffsci's ``ddim``:
  DDIMScheduler 7.1e-7, 5.3e-8, 2.4e-8 at n = 5, 10, 20, bound 5e-6;
  EulerDiscreteScheduler (Euler in sigma on x / alpha is DDIM) 9.5e-5, 8.7e-6, 6.0e-6,
  bounds 5e-4, 1e-4, 1e-4. The diffusers side rounds its coefficients to float32 (sqrt
  of alphas_cumprod, sigmas, Euler's dt and timesteps): ~6e-8, which the first step's
  sigma/alpha = 156 and this narrow-component oracle amplify, most at n = 5 (x1 seeds
  0-3: DDIM up to 1.3e-6, Euler up to 1.7e-4 at n = 5 and 3.6e-5 at n = 10, 20). For
  scale: a grid one timestep off gives 1.1e-3, 2.8e-4, 2.9e-4, and diffsci's ``euler``
  (in t) on the same grid 0.37, 0.27, 0.19.
"""

import copy

import pytest
import torch

from diffsci.core import GaussianMixture, sample
from diffsci.core.interop import (
    DiffusersDenoiser,
    MonaiDenoiser,
    run_diffusers_scheduler,
    scheduler_times,
    vp_of_scheduler,
)

diffusers = pytest.importorskip("diffusers")

N = 1000
KW = dict(num_train_timesteps=N, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
TAUS = torch.tensor([999, 500, 0])  # one timestep per sample: per-sample times
f64 = torch.float64


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def times(taus: torch.Tensor) -> torch.Tensor:
    """diffsci time of diffusers timesteps, t = (tau + 1) / N (in float64: exact tau)."""
    return (taus.to(f64) + 1.0) / N


@pytest.fixture(scope="module")
def x():
    return torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))


def tiny_unet(**kw):
    torch.manual_seed(0)
    args = dict(
        sample_size=8,
        in_channels=2,
        out_channels=2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    return diffusers.UNet2DModel(**{**args, **kw}).eval()


def tiny_cond_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=2,
        out_channels=2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=6,
        attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()


def ddim(**kw):
    s = diffusers.DDIMScheduler(**KW, clip_sample=False, **kw)
    s.set_timesteps(10)  # step() needs it; it reads alphas_cumprod[tau] at any tau
    return s


def step_x0(sched, out, taus, x):
    """The scheduler's own x0, one sample (and timestep) at a time."""
    return torch.cat(
        [
            sched.step(out[i : i + 1], int(tau), x[i : i + 1]).pred_original_sample
            for i, tau in enumerate(taus)
        ]
    )


# --------------------------------------------------------------------------------------
# diffusers networks
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("pt", ["epsilon", "v_prediction", "sample"])
@torch.no_grad()
def test_diffusers_x0_matches_scheduler_step(pt, x):
    unet, sched = tiny_unet(), ddim(prediction_type=pt)
    D = DiffusersDenoiser(unet, sched)
    ref = step_x0(sched, unet(x, TAUS).sample, TAUS, x)
    assert rel(D(x, times(TAUS)), ref) < 1e-5


@torch.no_grad()
def test_diffusers_learned_variance_uses_first_half(x):
    unet, sched = tiny_unet(out_channels=4), ddim()
    ref = step_x0(sched, unet(x, TAUS).sample[:, :2], TAUS, x)
    assert rel(DiffusersDenoiser(unet, sched)(x, times(TAUS)), ref) < 1e-5


@pytest.mark.parametrize("pt", ["epsilon", "v_prediction"])
@torch.no_grad()
def test_diffusers_cross_attention_unet(pt, x):
    unet, sched = tiny_cond_unet(), ddim(prediction_type=pt)
    ehs = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(2))
    D = DiffusersDenoiser(unet, sched)
    ref = step_x0(sched, unet(x, TAUS, ehs).sample, TAUS, x)
    assert rel(D(x, times(TAUS), cond=ehs), ref) < 1e-5
    as_dict = D(x, times(TAUS), cond={"encoder_hidden_states": ehs})
    assert torch.equal(as_dict, D(x, times(TAUS), cond=ehs))
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        D(x, times(TAUS))


@pytest.mark.parametrize("pt", ["epsilon", "v_prediction"])
@torch.no_grad()
def test_diffusers_class_conditional_unet(pt, x):
    unet, sched = tiny_unet(num_class_embeds=3), ddim(prediction_type=pt)
    labels = torch.tensor([0, 2, 1])
    D = DiffusersDenoiser(unet, sched)
    ref = step_x0(sched, unet(x, TAUS, class_labels=labels).sample, TAUS, x)
    assert rel(D(x, times(TAUS), cond=labels), ref) < 1e-5
    with pytest.raises(ValueError, match="class_labels"):
        D(x, times(TAUS))


@pytest.mark.parametrize("pt", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing,offset", [("trailing", 0), ("leading", 1)])
@torch.no_grad()
def test_diffusers_ddim_loop_equals_diffsci_ddim(pt, spacing, offset, x):
    n = 10
    unet = tiny_unet()
    sched = diffusers.DDIMScheduler(
        **KW,
        clip_sample=False,
        set_alpha_to_one=False,
        timestep_spacing=spacing,
        steps_offset=offset,
        prediction_type=pt,
    )
    sched.set_timesteps(n)
    xd = x.clone()
    for tau in sched.timesteps:
        xd = sched.step(unet(xd, tau).sample, tau, xd).prev_sample
    D = DiffusersDenoiser(unet, sched)
    ts = scheduler_times(sched)
    assert ts[0] == pytest.approx(float(sched.timesteps[0] + 1) / N, abs=1e-12)
    xo = sample(D, D.process, x, "ddim", nfe=n, schedule=ts.tolist())
    assert rel(xo, xd) < 1e-4


def test_wrapper_runs_the_network_in_its_dtype_and_is_differentiable(x):
    unet, sched = tiny_unet(), ddim()
    D32 = DiffusersDenoiser(unet, sched)
    D64 = DiffusersDenoiser(copy.deepcopy(unet).double(), sched)
    t = times(TAUS)
    with torch.no_grad():
        out64 = D64(x, t)  # float32 in, float64 network, float32 out
        assert out64.dtype == torch.float32
        assert rel(out64, D32(x, t)) < 1e-5
        assert D32(x.double(), t).dtype == f64  # and the other way round
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(D32(xg, t).square().sum(), xg)  # gradient guidance needs it
    assert bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0


def test_wrapper_errors(x):
    unet, sched = tiny_unet(), ddim()
    with pytest.raises(ValueError, match="unsupported prediction_type"):
        DiffusersDenoiser(unet, sched, prediction_type="score")
    with pytest.raises(ValueError, match="unsupported prediction_type 'flow'"):
        DiffusersDenoiser(unet, ddim(prediction_type="flow"))
    with pytest.raises(ValueError, match="no alphas_cumprod"):
        DiffusersDenoiser(unet, diffusers.FlowMatchEulerDiscreteScheduler())
    D = DiffusersDenoiser(unet, sched)
    with pytest.raises(ValueError, match="unconditional"):
        D(x, times(TAUS), cond=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="cond must be a tensor or a dict"):
        D(x, times(TAUS), cond=[1, 2, 3])
    with pytest.raises(ValueError, match="time_of_timestep"):
        D(x, TAUS.to(f64))  # diffusers timesteps are not diffsci times
    with pytest.raises(ValueError, match="learned variance"):
        DiffusersDenoiser(tiny_unet(out_channels=3), sched)(x, times(TAUS))


# --------------------------------------------------------------------------------------
# MONAI networks
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def monai():
    pytest.importorskip("monai")
    import monai.networks.nets
    import monai.networks.schedulers

    return monai


@pytest.fixture(scope="module")
def monai_unet(monai):
    """A factory of tiny DiffusionModelUNets; their attention blocks (the middle block
    always has one) need einops, which ``monai`` alone does not install."""
    pytest.importorskip("einops", reason="monai's DiffusionModelUNet needs einops")
    return lambda **kw: tiny_monai_unet(monai, **kw)


def tiny_monai_unet(monai, **kw):
    torch.manual_seed(0)
    args = dict(
        spatial_dims=2,
        in_channels=2,
        out_channels=2,
        channels=(8, 16),
        attention_levels=(False, False),
        num_res_blocks=1,
        norm_num_groups=4,
    )
    net = monai.networks.nets.DiffusionModelUNet(**{**args, **kw}).eval()
    # MONAI zero-initialises its output convolutions: perturb, or every output is 0
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net


def monai_x0(sched, out, taus, x):
    return torch.cat(
        [sched.step(out[i : i + 1], int(tau), x[i : i + 1])[1] for i, tau in enumerate(taus)]
    )


@pytest.mark.parametrize("pt", [None, "epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("kind", ["DDIMScheduler", "DDPMScheduler"])
@torch.no_grad()
def test_monai_x0_matches_scheduler_step(monai, monai_unet, kind, pt, x):
    """pt=None: the scheduler's default, a StrEnum member rather than a str."""
    net = monai_unet()
    kw = {} if pt is None else {"prediction_type": pt}
    sched = getattr(monai.networks.schedulers, kind)(N, clip_sample=False, **kw)
    ref = monai_x0(sched, net(x, timesteps=TAUS), TAUS, x)
    assert rel(MonaiDenoiser(net, sched)(x, times(TAUS)), ref) < 1e-5


@torch.no_grad()
def test_monai_conditional_unets(monai, monai_unet, x):
    sched = monai.networks.schedulers.DDIMScheduler(N, clip_sample=False)
    context = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(2))
    net = monai_unet(
        attention_levels=(False, True),
        with_conditioning=True,
        cross_attention_dim=6,
        num_head_channels=8,
    )
    ref = monai_x0(sched, net(x, timesteps=TAUS, context=context), TAUS, x)
    D = MonaiDenoiser(net, sched)
    assert rel(D(x, times(TAUS), cond=context), ref) < 1e-5
    with pytest.raises(ValueError, match="context"):
        D(x, times(TAUS))
    labels = torch.tensor([0, 2, 1])
    net = monai_unet(num_class_embeds=3)
    ref = monai_x0(sched, net(x, timesteps=TAUS, class_labels=labels), TAUS, x)
    assert rel(MonaiDenoiser(net, sched)(x, times(TAUS), cond=labels), ref) < 1e-5


@pytest.mark.parametrize("pt,n", [("epsilon", 10), ("v_prediction", 10), ("epsilon", 5)])
@torch.no_grad()
def test_monai_ddim_loop_equals_diffsci_ddim(monai, monai_unet, pt, n, x):
    """MONAI's DDIM steps tau -> tau - N // n but lists linspace(N - 1 - offset, 0, n) + offset:
    the two agree (one grid) only for steps_offset = N - 1 - (N // n)(n - 1)."""
    net = monai_unet()
    sched = monai.networks.schedulers.DDIMScheduler(
        N,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=N - 1 - (N // n) * (n - 1),
        prediction_type=pt,
    )
    sched.set_timesteps(n)
    xm = x.clone()
    for tau in sched.timesteps:
        xm, _ = sched.step(net(xm, timesteps=tau.expand(len(xm))), tau, xm)
    D = MonaiDenoiser(net, sched)
    xo = sample(D, D.process, x, "ddim", nfe=n, schedule=scheduler_times(sched).tolist())
    assert rel(xo, xm) < 1e-4


def test_monai_default_ddim_grid_is_refused(monai):
    sched = monai.networks.schedulers.DDIMScheduler(N, clip_sample=False, set_alpha_to_one=False)
    sched.set_timesteps(10)  # [999, 888, ...] but steps 999 -> 899
    with pytest.raises(ValueError, match="steps_offset = .* = 99"):
        scheduler_times(sched)


def test_diffusers_ddim_grids_that_no_diffsci_grid_reproduces_are_refused():
    s = diffusers.DDIMScheduler(**KW, set_alpha_to_one=False, timestep_spacing="trailing")
    s.set_timesteps(7)  # 7 does not divide 1000: 999 -> 857, next evaluated at 856
    with pytest.raises(ValueError, match="no DDIM on any one time grid"):
        scheduler_times(s)
    s = diffusers.DDIMScheduler(**KW, timestep_spacing="trailing")  # set_alpha_to_one=True
    s.set_timesteps(10)
    with pytest.raises(ValueError, match="set_alpha_to_one"):
        scheduler_times(s)


# --------------------------------------------------------------------------------------
# diffusers' scheduler loops driven by the exact oracle
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gmm():
    return GaussianMixture.random(8, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("n,euler_bound", [(5, 5e-4), (10, 1e-4), (20, 1e-4)])
def test_run_diffusers_scheduler_equals_diffsci_ddim(gmm, n, euler_bound):
    ddim_s = diffusers.DDIMScheduler(
        **KW, timestep_spacing="trailing", set_alpha_to_one=False, clip_sample=False
    )
    euler_s = diffusers.EulerDiscreteScheduler(
        **KW, timestep_spacing="trailing", final_sigmas_type="sigma_min"
    )
    p = vp_of_scheduler(ddim_s)
    x1 = p.prior((64, 16), generator=torch.Generator().manual_seed(1), dtype=f64)
    D = gmm.denoiser(p)
    for sched, bound in [(ddim_s, 5e-6), (euler_s, euler_bound)]:
        xd, calls = run_diffusers_scheduler(sched, D, x1, n)
        xo = sample(D, p, x1, "ddim", nfe=n, schedule=scheduler_times(sched).tolist())
        assert calls == n
        assert rel(xo, xd) < bound, type(sched).__name__


def test_run_diffusers_scheduler_errors(gmm):
    euler = diffusers.EulerDiscreteScheduler(**KW, timestep_spacing="trailing")
    euler.set_timesteps(5)  # final_sigmas_type="zero": ends at sigma = 0
    with pytest.raises(ValueError, match="sigma = 0"):
        scheduler_times(euler)
    sched = diffusers.DDIMScheduler(**KW, prediction_type="flow")
    p = vp_of_scheduler(sched)
    with pytest.raises(ValueError, match="unsupported prediction_type"):
        run_diffusers_scheduler(sched, gmm.denoiser(p), p.prior((2, 16)), 5)
