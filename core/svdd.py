"""Reward-guided particle samplers: SVDD-PM and its equal-budget baselines (best-of-N, SMC).

SVDD (Li et al. 2024, "Derivative-Free Guidance in Continuous and Discrete Diffusion Models
with Soft Value-Based Decoding"; the SVDD-PM variant, posterior-mean value): at every
step t -> s, draw M candidates x_s^(m) ~ p(x_s | x_t) from the base sampler's stochastic
transition, score each by the soft value v(x_s) = r(x0_hat(x_s)) and keep one with
probability proportional to exp(v / alpha) (alpha -> 0 is the greedy argmax of the paper's
experiments). Rewards need no gradient: ``reward`` maps a batch of clean samples to (B,)
floats.

For masked (token) diffusion the clean estimate is the argmax of the denoiser's per-position
clean-token probabilities, as in the official code (masa-ue/SVDD, ``diffusion_gosai.py``,
``_expected_x0_reward_scores``: one-hot of ``argmax`` of the model's x0 prediction);
``value="sample"`` draws it from those probabilities instead.

Budget accounting. Every function returns ``(samples, evals)`` where ``evals`` counts
*per-sample denoiser evaluations*: each row of each batch passed to the denoiser counts one
(a batched call on n rows costs n). The value call at the candidates x_s yields
D(x_s, s), which is exactly the prediction the next transition from the kept candidate
needs, so it is reused: SVDD with M candidates costs 1 + steps * M evaluations per output
sample, SMC 1 + steps per particle, best-of-N N * steps per output sample.

SVDD-MC (Li et al. 2024) replaces the PM value by a regression model
v_theta(x_t, t) (``ValueNet``) fitted to the rewards of base-sampler rollouts
(``fit_value_mc``, Gaussian or masked); ``svdd_continuous`` / ``svdd_masked`` with
``value_model=v_theta`` then cost steps denoiser evaluations per sample for any M
(value-model calls are not counted; the rollouts are, by ``fit_value_mc``).

A base step is a callable ``step(x_t, pred_t, t, s, generator) -> x_s`` where ``pred_t`` is
the denoiser's output at (x_t, t): the DDPM posterior (``ddpm_step``, the default for
Gaussian processes) or the masked-diffusion reveal step (``masked_step``); any other
stochastic transition with this signature can be passed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .discrete import (
    MaskedDiffusion,
    _check_probs,
    _check_tokens,
    masked_grid,
    reveal,
    reveal_probability,
    sample_masked,
)
from .processes import Process
from .samplers import _ddim_step, sample
from .schedules import time_grid
from .utils import check_positive_int

__all__ = [
    "svdd_continuous",
    "svdd_masked",
    "smc_continuous",
    "smc_masked",
    "best_of_n",
    "fit_value_mc",
    "ValueNet",
    "ddpm_step",
    "masked_step",
    "CountingDenoiser",
    "check_gaussian_output",
    "select_in_groups",
]

Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor]
_F64 = torch.float64


# -- validation ---------------------------------------------------------------------------
def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(
            f"alpha must be a number > 0 (small alpha approaches argmax), got {alpha!r}"
        )
    return float(alpha)


def _call_reward(reward: Callable[[torch.Tensor], Any], x: torch.Tensor, who: str) -> torch.Tensor:
    """reward(x) as float64 (n,), raising ValueError on a wrong shape or NaN/Inf."""
    r = reward(x)
    if not isinstance(r, torch.Tensor):
        r = torch.as_tensor(r)
    r = r.detach().to(_F64)
    if r.shape != (x.shape[0],):
        raise ValueError(
            f"{who}: reward returned shape {tuple(r.shape)} for a batch of {x.shape[0]}, "
            f"expected ({x.shape[0]},)"
        )
    if not bool(torch.isfinite(r).all()):
        raise ValueError(f"{who}: reward returned NaN/Inf")
    return r


class CountingDenoiser:
    """A denoiser that counts its evaluations: calls D(x, t) with a float64 time per row,
    checks the output with ``check(out, x)`` (default: same shape as x, finite) and adds
    the batch size to ``evals``. No autograd graph unless called with ``grad=True``
    (gradient-guided samplers differentiate through it)."""

    def __init__(
        self, denoiser: Callable[..., torch.Tensor], check: Callable | None = None, who: str = ""
    ) -> None:
        self.denoiser, self.who, self.evals = denoiser, who, 0
        self.check = check or check_gaussian_output(who)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, grad: bool = False) -> torch.Tensor:
        self.evals += x.shape[0]
        tb = torch.as_tensor(t, dtype=_F64, device=x.device).expand(x.shape[0])
        with torch.set_grad_enabled(grad):
            return self.check(self.denoiser(x, tb), x)


def check_gaussian_output(who: str) -> Callable:
    """The output check of a data-prediction denoiser: x's shape, finite values (detached
    unless autograd is on)."""

    def check(out: Any, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{who}: the denoiser returned {got}, expected {tuple(x.shape)}")
        if not bool(torch.isfinite(out).all()):
            raise FloatingPointError(f"{who}: the denoiser returned NaN/Inf")
        return out if torch.is_grad_enabled() else out.detach()

    return check


def _masked_check(vocab: int) -> Callable:
    def check(out: Any, x: torch.Tensor) -> torch.Tensor:
        return _check_probs(out, (x.shape[0], x.shape[1], vocab), -1)

    return check


def select_in_groups(
    logits: torch.Tensor, groups: int, size: int, draws: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Multinomial resampling within groups: flat row indices of ``draws`` picks per group
    from softmax(logits) over each group's ``size`` consecutive rows (logits: (G*size,))."""
    p = torch.softmax(logits.view(groups, size), 1)
    idx = torch.multinomial(p, draws, replacement=True, generator=generator)
    return (idx + size * torch.arange(groups, device=idx.device)[:, None]).reshape(-1)


# -- base steps -----------------------------------------------------------------------------
def ddpm_step(process: Process) -> Step:
    """The DDPM posterior step x_s ~ q(x_s | x_t, x0_hat) (Ho et al. 2020, eq. 7), i.e.
    ``_ddim_step(..., eta=1)``, as a base step for ``svdd_continuous`` / ``smc_continuous``."""
    if not process.gaussian:
        raise ValueError(f"ddpm_step needs a Gaussian process, not {process!r}")

    def step(x: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, s: torch.Tensor, generator):
        return _ddim_step(process, x, x0, t, s, 1.0, generator)

    return step


def masked_step(process: MaskedDiffusion) -> Step:
    """The masked-diffusion reveal step of ``sample_masked`` (carry-over, MDLM/Shi et al.):
    each masked position is revealed with probability (alpha(s) - alpha(t)) / (1 - alpha(t))
    and its token drawn from the denoiser's probabilities ``probs`` (B, L, V)."""

    def step(x: torch.Tensor, probs: torch.Tensor, t: torch.Tensor, s: torch.Tensor, generator):
        p = reveal_probability(process, float(t), float(s))
        u = torch.rand(x.shape, generator=generator, dtype=_F64, device=x.device)
        where = (x == process.mask_id) & (u < p)
        return reveal(x, where, probs[where], generator)

    return step


# -- values -----------------------------------------------------------------------------------
def _gaussian_value(reward: Callable, who: str) -> Callable:
    def value(x0: torch.Tensor, x: torch.Tensor, generator) -> torch.Tensor:
        return _call_reward(reward, x0, who)

    return value


def _masked_value(reward: Callable, kind: str, mask_id: int, who: str) -> Callable:
    if kind not in ("argmax", "sample"):
        raise ValueError(f"value must be 'argmax' or 'sample', got {kind!r}")

    def value(probs: torch.Tensor, x: torch.Tensor, generator) -> torch.Tensor:
        if kind == "argmax":
            x0 = probs.argmax(-1)
        else:
            B, L, V = probs.shape
            x0 = torch.multinomial(probs.reshape(B * L, V), 1, generator=generator).view(B, L)
        x0 = torch.where(x == mask_id, x0, x)  # revealed tokens are final
        return _call_reward(reward, x0, who)

    return value


# -- the particle loops -------------------------------------------------------------------------
def _svdd_loop(D, x, ts, step, value, M, alpha, generator, value_model=None, who=""):
    B = x.shape[0]
    pred = D(x, ts[0])
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        cand = step(x.repeat_interleave(M, 0), pred.repeat_interleave(M, 0), t, s, generator)
        if value_model is None:  # PM value: D(cand) is reused as the next step's prediction
            pc = D(cand, s)
            v = value(pc, cand, generator)
        else:
            v = _call_value_model(value_model, cand, s, who)
        keep = select_in_groups(v / alpha, B, M, 1, generator) if M > 1 else torch.arange(B)
        x = cand[keep]
        if i < len(ts) - 2:
            pred = pc[keep] if value_model is None else D(x, s)
    return x


def _call_value_model(model: Callable, x: torch.Tensor, s: torch.Tensor, who: str) -> torch.Tensor:
    with torch.no_grad():
        v = model(x, torch.as_tensor(s, dtype=_F64).expand(x.shape[0]).to(x.device))
    if not isinstance(v, torch.Tensor) or v.reshape(-1).shape != (x.shape[0],):
        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"{who}: value_model returned {got}, expected ({x.shape[0]},)")
    v = v.reshape(-1).to(_F64)
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{who}: value_model returned NaN/Inf")
    return v


def _smc_loop(D, x, ts, step, value, K, alpha, generator):
    G = x.shape[0] // K
    pred = D(x, ts[0])
    v = value(pred, x, generator)
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        x = step(x, pred, t, s, generator)
        pred = D(x, s)
        v_s = value(pred, x, generator)
        keep = select_in_groups((v_s - v) / alpha, G, K, K, generator)
        x, pred, v = x[keep], pred[keep], v_s[keep]
    return x


def _gaussian_setup(process, x1, steps, schedule, who):
    if not isinstance(process, Process) or not process.gaussian:
        raise ValueError(f"{who}: process must be a Gaussian Process, got {process!r}")
    if not isinstance(x1, torch.Tensor) or not x1.is_floating_point() or x1.ndim < 1:
        raise ValueError(f"{who}: x1 must be a floating-point tensor with a batch dimension")
    check_positive_int("steps", steps)
    return time_grid(process, steps, schedule).to(x1.device)


def svdd_continuous(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    x1: torch.Tensor,
    reward: Callable[[torch.Tensor], Any],
    M: int,
    alpha: float,
    steps: int,
    generator: torch.Generator | None = None,
    schedule: Any = "uniform",
    step: Step | None = None,
    value_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, int]:
    """SVDD-PM for a Gaussian process (Li et al. 2024, SVDD-PM; Tweedie posterior-mean value).

    From x1 (B, ...) at t_max, over ``steps`` intervals of ``time_grid(process, steps,
    schedule)``: M candidates per particle from ``step`` (default: the DDPM posterior,
    ``ddpm_step``), value v = reward(D(x_s, s)), one kept per particle with probability
    ∝ exp(v / alpha). M = 1 is the plain DDPM sampler.

    Returns (x at t_min of shape x1.shape, evals) with evals = B * (1 + steps * M)
    per-sample denoiser evaluations.

    SVDD-MC: with ``value_model`` (v_theta(x_t, t) -> (B,), e.g. from ``fit_value_mc``) the
    candidates are scored by it instead, and the denoiser only runs on the kept particle:
    evals = B * steps (the B * steps * M value-model calls are not counted).
    """
    who = "svdd_continuous"
    M, alpha = check_positive_int("M", M), _check_alpha(alpha)
    ts = _gaussian_setup(process, x1, steps, schedule, who)
    D = CountingDenoiser(denoiser, check_gaussian_output(who), who)
    x = _svdd_loop(
        D,
        x1,
        ts,
        step or ddpm_step(process),
        _gaussian_value(reward, who),
        M,
        alpha,
        generator,
        value_model,
        who,
    )
    return x, D.evals


class ValueNet(torch.nn.Module):
    """A small value model v_theta(x_t, t) -> (n,) for SVDD-MC.

    Continuous states (n, ...) are flattened; token states (n, L) are one-hot encoded over
    ``num_tokens`` (the clean tokens and the mask). The time is appended as a feature, and
    an MLP maps to one number. With ``bounds=(lo, hi)`` the output is lo + (hi - lo) *
    sigmoid(.): a reward with known range (an indicator lies in [0, 1]) then cannot be
    extrapolated beyond it off the data, which otherwise drags samples off the manifold.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        depth: int = 2,
        num_tokens: int | None = None,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("ValueNet: dim", dim)
        check_positive_int("ValueNet: depth", depth)
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"ValueNet: bounds must be (lo, hi) with lo < hi, got {bounds}")
        self.num_tokens, self.bounds = num_tokens, bounds
        width = dim * (num_tokens or 1) + 1
        layers: list[torch.nn.Module] = []
        for _ in range(depth):
            layers += [torch.nn.Linear(width, hidden), torch.nn.SiLU()]
            width = hidden
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dtype = self.net[0].weight.dtype
        if self.num_tokens is not None:
            h = torch.nn.functional.one_hot(x.long(), self.num_tokens).flatten(1).to(dtype)
        else:
            h = x.flatten(1).to(dtype)
        v = self.net(torch.cat([h, t.to(dtype)[:, None]], 1))[:, 0]
        if self.bounds is None:
            return v
        lo, hi = self.bounds
        return lo + (hi - lo) * torch.sigmoid(v)


def fit_value_mc(
    model: torch.nn.Module,
    denoiser: Callable[..., torch.Tensor],
    process: Process | MaskedDiffusion,
    start: torch.Tensor | tuple[int, int],
    reward: Callable[[torch.Tensor], Any],
    steps: int,
    generator: torch.Generator | None = None,
    schedule: Any = "uniform",
    iters: int = 500,
    batch: int = 512,
    lr: float = 3e-3,
) -> tuple[torch.nn.Module, int, float]:
    """Fit the SVDD-MC value v_theta(x_t, t) ~ E[r(x0) | x_t] (Li et al. 2024, SVDD-MC):
    regression of rollout rewards on the states they passed through.

    Rolls out the base sampler (DDPM posterior for a Gaussian process from x1 = ``start``
    (B, ...) on ``time_grid(process, steps, schedule)``; the reveal step of
    ``sample_masked`` for a ``MaskedDiffusion`` from the all-masked ``start = (B, L)``),
    labels every visited state (x_t, t) (the start excluded) with the reward of the
    rollout's end point, and trains ``model(x_t, t) -> (n,)`` (t float64 (n,)) by Adam on
    the squared error for ``iters`` minibatches of ``batch``. The grid must be the one SVDD
    later uses. Returns (model in eval mode, rollout evals = B * steps, final minibatch
    loss).
    """
    who = "fit_value_mc"
    for name, v in (("iters", iters), ("batch", batch)):
        check_positive_int(name, v)
    if isinstance(process, MaskedDiffusion):
        ts = masked_grid(process, start, steps, who)
        D = CountingDenoiser(denoiser, _masked_check(process.vocab_size), who)
        step, x = masked_step(process), process.prior(tuple(start))
    else:
        ts = _gaussian_setup(process, start, steps, schedule, who)
        D = CountingDenoiser(denoiser, check_gaussian_output(who), who)
        step, x = ddpm_step(process), start
    xs, tt = [], []
    for i in range(steps):
        x = step(x, D(x, ts[i]), ts[i], ts[i + 1], generator)
        xs.append(x)
        tt.append(ts[i + 1].expand(x.shape[0]))
    r = _call_reward(reward, x, who)
    X, T, R = torch.cat(xs), torch.cat(tt), r.repeat(steps)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    loss = torch.zeros(())
    for _ in range(iters):
        idx = torch.randint(0, len(X), (min(batch, len(X)),), generator=generator)
        pred = model(X[idx], T[idx]).reshape(-1)
        loss = (pred - R[idx].to(pred.dtype)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, D.evals, float(loss.detach())


def svdd_masked(
    denoiser: Callable[..., torch.Tensor],
    process: MaskedDiffusion,
    shape: tuple[int, int],
    reward: Callable[[torch.Tensor], Any],
    M: int,
    alpha: float,
    steps: int,
    generator: torch.Generator | None = None,
    value: str = "argmax",
    step: Step | None = None,
    value_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, int]:
    """SVDD-PM for masked (absorbing) diffusion (Li et al. 2024, SVDD-PM).

    From the all-masked state, on the grid t_i = 1 - i / steps of ``sample_masked``: M
    candidates per sequence from the reveal step (``masked_step``), value v = reward(x0_hat)
    with x0_hat the argmax (``value="argmax"``, as the official code) or a draw
    (``value="sample"``) of D(x_s)'s clean-token probabilities at the still-masked
    positions, one candidate kept with probability ∝ exp(v / alpha).

    Returns ((B, L) long tokens, evals) with evals = B * (1 + steps * M).

    SVDD-MC: with ``value_model`` (v_theta(x_t, t) on tokens, e.g. a ``ValueNet`` with
    ``num_tokens = process.num_tokens`` fitted by ``fit_value_mc``) the candidates are
    scored by it and evals = B * steps.
    """
    who = "svdd_masked"
    M, alpha = check_positive_int("M", M), _check_alpha(alpha)
    ts = masked_grid(process, shape, steps, who)
    D = CountingDenoiser(denoiser, _masked_check(process.vocab_size), who)
    v = _masked_value(reward, value, process.mask_id, who)
    x = _svdd_loop(
        D,
        process.prior(tuple(shape)),
        ts,
        step or masked_step(process),
        v,
        M,
        alpha,
        generator,
        value_model,
        who,
    )
    return _check_tokens(x, process.vocab_size, "svdd_masked output"), D.evals


def smc_continuous(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    x1: torch.Tensor,
    reward: Callable[[torch.Tensor], Any],
    K: int,
    alpha: float,
    steps: int,
    generator: torch.Generator | None = None,
    schedule: Any = "uniform",
    step: Step | None = None,
) -> tuple[torch.Tensor, int]:
    """SMC with the posterior-mean value as intermediate target (the SMC baseline of Li et al.
    2024; TDS of Wu et al. 2023 without its twisted proposal).

    x1 (G*K, ...) holds G independent groups of K consecutive particles. At every step each
    particle moves by ``step`` (default DDPM posterior), is weighted by
    exp((v_s - v_t) / alpha) with v = reward(D(x, t)), and each group is resampled
    multinomially (K draws). The final weights use v at t_min ≈ r(x0), so the particles
    target p(x0) exp(r(x0) / alpha) as K grows.

    Returns (all G*K particles, evals) with evals = G * K * (1 + steps).
    """
    who = "smc_continuous"
    K, alpha = check_positive_int("K", K), _check_alpha(alpha)
    ts = _gaussian_setup(process, x1, steps, schedule, who)
    if x1.shape[0] % K:
        raise ValueError(f"{who}: the batch {x1.shape[0]} is not a multiple of K = {K}")
    D = CountingDenoiser(denoiser, check_gaussian_output(who), who)
    x = _smc_loop(
        D, x1, ts, step or ddpm_step(process), _gaussian_value(reward, who), K, alpha, generator
    )
    return x, D.evals


def smc_masked(
    denoiser: Callable[..., torch.Tensor],
    process: MaskedDiffusion,
    shape: tuple[int, int],
    reward: Callable[[torch.Tensor], Any],
    K: int,
    alpha: float,
    steps: int,
    generator: torch.Generator | None = None,
    value: str = "argmax",
    step: Step | None = None,
) -> tuple[torch.Tensor, int]:
    """SMC for masked diffusion (the SMC baseline of Li et al. 2024; the official code's
    ``_ddpm_update_finetune_controlled_SMC``): reveal step, weight exp((v_s - v_t) / alpha)
    with the argmax value, multinomial resampling within groups of K consecutive rows of
    ``shape`` = (G*K, L).

    Returns ((G*K, L) tokens, evals) with evals = G * K * (1 + steps).
    """
    who = "smc_masked"
    K, alpha = check_positive_int("K", K), _check_alpha(alpha)
    ts = masked_grid(process, shape, steps, who)
    if shape[0] % K:
        raise ValueError(f"{who}: the batch {shape[0]} is not a multiple of K = {K}")
    D = CountingDenoiser(denoiser, _masked_check(process.vocab_size), who)
    v = _masked_value(reward, value, process.mask_id, who)
    x = _smc_loop(
        D, process.prior(tuple(shape)), ts, step or masked_step(process), v, K, alpha, generator
    )
    return _check_tokens(x, process.vocab_size, "smc_masked output"), D.evals


def best_of_n(
    denoiser: Callable[..., torch.Tensor],
    process: Process | MaskedDiffusion,
    start: torch.Tensor | tuple[int, int],
    reward: Callable[[torch.Tensor], Any],
    n: int,
    steps: int,
    alpha: float | None = None,
    generator: torch.Generator | None = None,
    solver: str = "ddpm",
    schedule: Any = "uniform",
) -> tuple[torch.Tensor, int]:
    """Best-of-N: G groups of n independent base samples, one output per group.

    ``start`` is x1 of shape (G*n, ...) for a Gaussian process (sampled by
    ``sample(..., solver, nfe=steps, schedule)``, any registered solver) or the shape
    (G*n, L) for a ``MaskedDiffusion`` (sampled by ``sample_masked``); groups are
    consecutive rows. With ``alpha=None`` the sample of highest reward is kept; with
    alpha > 0 one is drawn with probability ∝ exp(r / alpha) (sampling-importance-
    resampling, which targets p(x) exp(r(x) / alpha) as n grows).

    Returns (G samples, evals) with evals = G * n * steps.
    """
    who = "best_of_n"
    n = check_positive_int("n", n)
    steps = check_positive_int("steps", steps)
    if alpha is not None:
        alpha = _check_alpha(alpha)
    if isinstance(process, MaskedDiffusion):
        masked_grid(process, start, steps, who)
        rows = start[0]
        if rows % n:
            raise ValueError(f"{who}: the batch {rows} is not a multiple of n = {n}")
        D = CountingDenoiser(denoiser, _masked_check(process.vocab_size), who)
        x = sample_masked(D, process, tuple(start), steps, generator=generator)
    else:
        _gaussian_setup(process, start, steps, schedule, who)
        rows = start.shape[0]
        if rows % n:
            raise ValueError(f"{who}: the batch {rows} is not a multiple of n = {n}")
        D = CountingDenoiser(denoiser, check_gaussian_output(who), who)
        x = sample(
            D, process, start, solver=solver, nfe=steps, schedule=schedule, generator=generator
        )
    r = _call_reward(reward, x, who)
    G = rows // n
    if alpha is None:
        keep = r.view(G, n).argmax(1) + n * torch.arange(G)
    else:
        keep = select_in_groups(r / alpha, G, n, 1, generator)
    return x[keep], D.evals
