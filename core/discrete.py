"""Masked (absorbing) diffusion for token sequences, and an exact Markov-chain oracle.

Forward process (Austin et al. 2021; MDLM, Sahoo et al. 2024; Shi et al. 2024). A clean
sequence x0 in {0..V-1}^L is corrupted independently per position:

    q(x_t^i | x0^i) = alpha(t) * [x_t^i = x0^i] + (1 - alpha(t)) * [x_t^i = MASK],

with alpha(0) = 1 (clean) and alpha(1) = 0 (all masked). Because the mask absorbs, the
posterior over x0 given x_t does not depend on t: every unmasked token is x0 itself and
the masked ones follow p(x0 | observed tokens). A denoiser is therefore a callable

    D(x_t, t) -> probs (B, L, V)   (probabilities over clean tokens, per position),

the discrete analogue of the Gaussian core's data prediction.

Training (continuous-time ELBO, MDLM eq. 10 / Shi et al. eq. 5):

    -log p(x0) <= int_0^1 w(t) E_{x_t} [ sum_{i masked} -log p_theta(x0^i | x_t) ] dt,
    w(t) = -alpha'(t) / (1 - alpha(t))      (linear: 1/t; cosine: (pi/2) sin / (1 - cos)).

Sampling (``sample_masked``): from s < t, a still-masked position is revealed with
probability (alpha(s) - alpha(t)) / (1 - alpha(t)) and its token drawn from D; revealed
tokens never change again ("carry-over"). Positions revealed in the *same* step are
drawn independently from their per-position marginals, so with finitely many steps the
sampler is exact only for the per-position marginals; the joint law becomes exact as
steps -> infinity (at most one reveal per step). With steps = 1 it samples the product of
the marginals p(x^1) ... p(x^L).

``MarkovChainOracle`` is a first-order Markov chain over tokens with an exact denoiser
(forward-backward), exact enumeration and exact reward tilting: the ground truth the
sampler and the loss are tested against. All probabilities are float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .utils import check_positive_int

__all__ = ["MarkovChainOracle", "MaskedDiffusion", "sample_masked", "reveal", "reveal_probability"]

_MAX_ENUMERATE = 10**6
_F64 = torch.float64


def _check_tokens(x: Any, vocab: int, name: str = "x", allow: int | None = None) -> torch.Tensor:
    """Check a (B, L) integer tensor with values in [0, vocab) (or equal to ``allow``)."""
    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must be an integer (long) tensor of shape (B, L)")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (B, L), got {tuple(x.shape)}")
    ok = (x >= 0) & (x < vocab)
    if allow is not None:
        ok |= x == allow
    if not bool(ok.all()):
        extra = f" or the mask id {allow}" if allow is not None else ""
        raise ValueError(f"{name} has tokens outside [0, {vocab}){extra}")
    return x.long()


def _check_distribution(p: torch.Tensor, name: str) -> torch.Tensor:
    """Check nonnegative finite rows summing to 1 (to 1e-6) and renormalise them exactly."""
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        raise ValueError(f"{name} must be finite and nonnegative")
    sums = p.sum(-1)
    if not bool(((sums - 1).abs() < 1e-6).all()):
        raise ValueError(f"{name} must sum to 1 along its last axis, got sums {sums.tolist()}")
    return p / sums[..., None]


class MarkovChainOracle:
    """p(x) = initial[x_1] * prod_i transition[x_{i-1}, x_i] over sequences of fixed length.

    Args:
        initial: (V,) distribution of the first token.
        transition: (V, V) row-stochastic matrix, transition[a, b] = p(x_{i+1}=b | x_i=a).
        length: the sequence length L >= 1.
    """

    def __init__(self, initial: Any, transition: Any, length: int) -> None:
        pi = torch.as_tensor(initial, dtype=_F64)
        T = torch.as_tensor(transition, dtype=_F64)
        if pi.ndim != 1 or pi.numel() < 1:
            raise ValueError(f"initial must have shape (V,), got {tuple(pi.shape)}")
        V = pi.numel()
        if T.shape != (V, V):
            raise ValueError(f"transition must have shape ({V}, {V}), got {tuple(T.shape)}")
        check_positive_int("length", length)
        self.initial = _check_distribution(pi, "initial")
        self.transition = _check_distribution(T, "transition rows")
        self.vocab_size, self.length = V, length

    @classmethod
    def random(
        cls,
        vocab_size: int,
        length: int,
        generator: torch.Generator | None = None,
        concentration: float = 1.0,
    ) -> MarkovChainOracle:
        """A chain with Dirichlet(concentration) initial law and transition rows.

        Small concentrations (< 1) give peaked, strongly correlated chains. The Dirichlet
        draws use a NumPy generator seeded from ``generator``, so the seed fixes the chain.
        """
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        if not concentration > 0:
            raise ValueError(f"concentration must be > 0, got {concentration}")
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        rng = np.random.default_rng(seed)
        a = np.full(vocab_size, float(concentration))
        pi = rng.dirichlet(a)
        T = rng.dirichlet(a, size=vocab_size)
        return cls(pi, T, length)

    # -- exact law ----------------------------------------------------------------------

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for x of shape (B, L): float64 (B,), -inf for impossible sequences."""
        x = _check_tokens(x, self.vocab_size)
        if x.shape[1] != self.length:
            raise ValueError(f"x has length {x.shape[1]}, the chain has length {self.length}")
        lp = self.initial.log()[x[:, 0]]
        if self.length > 1:
            lp = lp + self.transition.log()[x[:, :-1], x[:, 1:]].sum(1)
        return lp

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact draws (n, L), token by token (ancestral sampling of the chain)."""
        check_positive_int("n", n)
        x = torch.empty(n, self.length, dtype=torch.long)
        x[:, 0] = torch.multinomial(self.initial.expand(n, -1), 1, True, generator=generator)[:, 0]
        for i in range(1, self.length):
            rows = self.transition[x[:, i - 1]]
            x[:, i] = torch.multinomial(rows, 1, True, generator=generator)[:, 0]
        return x

    def enumerate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All V^L sequences (lexicographic order: index = sum_i x_i V^(L-1-i)) and p(x).

        Refuses (ValueError) when V^L > 1e6.
        """
        V, L = self.vocab_size, self.length
        if V**L > _MAX_ENUMERATE:
            raise ValueError(f"V^L = {V}^{L} exceeds {_MAX_ENUMERATE:.0e} sequences")
        idx = torch.arange(V**L)
        powers = V ** torch.arange(L - 1, -1, -1)
        seqs = (idx[:, None] // powers) % V
        return seqs, self.log_prob(seqs).exp()

    def entropy(self) -> float:
        """The exact entropy -E log p(x) in nats per sequence (chain rule, no enumeration)."""

        def h(p: torch.Tensor) -> torch.Tensor:  # row entropies, with 0 log 0 = 0
            return -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(-1)

        H, marginal = h(self.initial), self.initial
        for _ in range(1, self.length):
            H = H + marginal @ h(self.transition)
            marginal = marginal @ self.transition
        return float(H)

    def tilted(
        self, reward: Callable[[torch.Tensor], torch.Tensor], alpha: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact tilted law p(x) exp(r(x) / alpha) / Z, by enumeration: (sequences, probs).

        ``reward`` maps (N, L) long sequences to (N,) rewards; ``alpha`` > 0 is the
        temperature of the tilt (alpha -> infinity recovers p).
        """
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        seqs, p = self.enumerate()
        r = torch.as_tensor(reward(seqs), dtype=_F64)
        if r.shape != p.shape:
            raise ValueError(f"reward returned shape {tuple(r.shape)}, expected {tuple(p.shape)}")
        if not bool(torch.isfinite(r).all()):
            raise ValueError("reward returned NaN/Inf")
        logw = p.log() + r / alpha  # -inf where p = 0: those stay impossible
        return seqs, torch.softmax(logw, 0)

    # -- exact denoiser ----------------------------------------------------------------

    def conditionals(self, x_t: torch.Tensor, mask_id: int | None = None) -> torch.Tensor:
        """p(x0^i = v | unmasked tokens of x_t) for every position: float64 (B, L, V).

        Forward-backward with evidence e_i(v) = 1 at masked positions and [v = x_t^i] at
        observed ones:

            f_1 = initial * e_1,        f_i = (f_{i-1} @ T) * e_i,
            b_L = 1,                    b_i = T @ (e_{i+1} * b_{i+1}),
            p(x^i = v | obs) ∝ f_i(v) b_i(v).

        Since a Markov chain is conditionally independent across an observed token, this is
        the same as conditioning each maximal masked run on its two neighbours. f and b are
        renormalised at each position (scaling does not change the ratio). Observed positions
        come out one-hot. Raises ValueError if the observed tokens have probability zero.
        """
        V, L = self.vocab_size, self.length
        mask_id = V if mask_id is None else mask_id
        x_t = _check_tokens(x_t, V, "x_t", allow=mask_id)
        if x_t.shape[1] != L:
            raise ValueError(f"x_t has length {x_t.shape[1]}, the chain has length {L}")
        masked = x_t == mask_id
        e = torch.nn.functional.one_hot(torch.where(masked, 0, x_t), V).to(_F64)
        e = torch.where(masked[..., None], torch.ones_like(e), e)  # (B, L, V)
        T = self.transition

        def normalise(v: torch.Tensor) -> torch.Tensor:
            z = v.sum(-1, keepdim=True)
            if bool((z <= 0).any()):
                raise ValueError("the unmasked tokens have probability zero under the chain")
            return v / z

        f = [normalise(self.initial * e[:, 0])]
        for i in range(1, L):
            f.append(normalise((f[-1] @ T) * e[:, i]))
        b = [torch.ones_like(f[0])]
        for i in range(L - 2, -1, -1):
            b.append(normalise((e[:, i + 1] * b[-1]) @ T.T))
        b.reverse()
        return normalise(torch.stack(f, 1) * torch.stack(b, 1))

    def denoiser(self, mask_id: int | None = None) -> Callable[..., torch.Tensor]:
        """The exact masked-diffusion denoiser D(x_t, t) -> probs (B, L, V) (t is ignored).

        For an absorbing process p(x0 | x_t) depends on x_t only (see ``conditionals``).
        ``mask_id`` defaults to V, as in ``MaskedDiffusion``.
        """

        def D(x_t: torch.Tensor, t: Any = None) -> torch.Tensor:
            return self.conditionals(x_t, mask_id)

        return D


class MaskedDiffusion:
    """The absorbing (masked) forward process over a vocabulary of ``vocab_size`` tokens.

    Args:
        vocab_size: V, the number of clean tokens 0..V-1.
        mask_id: the absorbing token; defaults to V (an extra token, so a network's input
            embedding needs V + 1 rows: ``num_tokens``). It may not be a clean token.
        schedule: ``"linear"`` (alpha = 1 - t) or ``"cosine"`` (alpha = cos(pi t / 2)).
    """

    schedules = ("linear", "cosine")

    def __init__(self, vocab_size: int, mask_id: int | None = None, schedule: str = "linear"):
        check_positive_int("vocab_size", vocab_size)
        mask_id = vocab_size if mask_id is None else mask_id
        if isinstance(mask_id, bool) or not isinstance(mask_id, int) or mask_id < vocab_size:
            raise ValueError(
                f"mask_id must be an integer >= vocab_size = {vocab_size} (not a clean "
                f"token), got {mask_id!r}"
            )
        if schedule not in self.schedules:
            raise ValueError(f"unknown schedule {schedule!r}; available: {self.schedules}")
        self.vocab_size, self.mask_id, self.schedule = vocab_size, mask_id, schedule
        self.num_tokens = mask_id + 1

    def __repr__(self) -> str:
        return f"MaskedDiffusion(vocab_size={self.vocab_size}, mask_id={self.mask_id}, schedule={self.schedule!r})"

    def alpha(self, t: Any) -> torch.Tensor:
        """Keep probability alpha(t) (float64); alpha(0) = 1, alpha(1) = 0."""
        t = torch.as_tensor(t, dtype=_F64)
        if self.schedule == "linear":
            return 1 - t
        return torch.where(t >= 1, torch.zeros_like(t), torch.cos(0.5 * math.pi * t))

    def t_of_alpha(self, a: Any) -> torch.Tensor:
        """The inverse of alpha: t with alpha(t) = a, for a in [0, 1] (float64)."""
        a = torch.as_tensor(a, dtype=_F64).clamp(0, 1)
        if self.schedule == "linear":
            return 1 - a
        return torch.arccos(a) * (2 / math.pi)

    def dalpha(self, t: Any) -> torch.Tensor:
        """alpha'(t) (float64)."""
        t = torch.as_tensor(t, dtype=_F64)
        if self.schedule == "linear":
            return -torch.ones_like(t)
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def weight(self, t: Any) -> torch.Tensor:
        """The ELBO weight w(t) = -alpha'(t) / (1 - alpha(t)) (1/t for the linear schedule)."""
        return -self.dalpha(t) / (1 - self.alpha(t))

    def prior(self, shape: tuple[int, int]) -> torch.Tensor:
        """The fully masked state at t = 1."""
        return torch.full(shape, self.mask_id, dtype=torch.long)

    def perturb(
        self, x0: torch.Tensor, t: Any, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x_t: each token of x0 (B, L) masked independently with probability 1 - alpha(t).

        ``t`` is a scalar or one time per sequence (B,).
        """
        x0 = _check_tokens(x0, self.vocab_size, "x0")
        t = torch.as_tensor(t, dtype=_F64)
        if t.ndim == 0:
            t = t.expand(x0.shape[0])
        if t.shape != (x0.shape[0],):
            raise ValueError(f"t has shape {tuple(t.shape)}, expected () or ({x0.shape[0]},)")
        if bool(((t < 0) | (t > 1)).any()):
            raise ValueError("t must lie in [0, 1]")
        u = torch.rand(x0.shape, generator=generator, dtype=_F64, device=x0.device)
        masked = u >= self.alpha(t).to(x0.device)[:, None]  # P(masked) = 1 - alpha
        return torch.where(masked, torch.full_like(x0, self.mask_id), x0)

    def elbo_nats(
        self,
        logits_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        eps: float = 1e-3,
    ) -> torch.Tensor:
        """One-sample Monte-Carlo estimate of the ELBO bound on -log p(x0), nats per sequence.

        With one t ~ U(eps, 1) per sequence and x_t ~ q(x_t | x0):

            w(t) * sum_{i masked} -log softmax(logits_fn(x_t, t))[i, x0^i]     (shape (B,)).

        Times (1 - eps), its expectation is int_eps^1 (...) dt, an upper bound on -log p(x0)
        up to the O(eps) part of the integral below eps. ``logits_fn(x_t, t)`` gets t as float64
        (B,) and returns (B, L, V) unnormalised log-probabilities over clean tokens (log of
        a denoiser's probabilities works too; -inf entries are fine).
        """
        x0 = _check_tokens(x0, self.vocab_size, "x0")
        if not 0 < eps < 1:
            raise ValueError(f"eps must lie in (0, 1), got {eps}")
        B, L = x0.shape
        u = torch.rand(B, generator=generator, dtype=_F64, device=x0.device)
        t = eps + (1 - eps) * u
        x_t = self.perturb(x0, t, generator)
        logits = logits_fn(x_t, t)
        if logits.shape != (B, L, self.vocab_size):
            raise ValueError(
                f"logits_fn returned shape {tuple(logits.shape)}, expected {(B, L, self.vocab_size)}"
            )
        logp = torch.log_softmax(logits, -1).gather(-1, x0[..., None])[..., 0]
        masked = x_t == self.mask_id
        nll = torch.where(masked, -logp, torch.zeros_like(logp)).sum(1)  # 0 * -inf avoided
        # t ~ U(eps, 1) has density 1 / (1 - eps): multiply back to estimate the integral
        return (1 - eps) * self.weight(t).to(nll) * nll

    def loss(
        self,
        logits_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        eps: float = 1e-3,
    ) -> torch.Tensor:
        """The training loss: the ELBO estimate in nats **per token**, averaged over the batch.

        That is ``elbo_nats(...).mean() / L``: a scalar whose expectation bounds
        -E log p(x0) / L from above. Differentiable through ``logits_fn``.
        """
        return self.elbo_nats(logits_fn, x0, generator, eps).mean() / x0.shape[1]


# -- sampling ---------------------------------------------------------------------------


def _check_probs(p: Any, shape: tuple[int, int, int], step: int) -> torch.Tensor:
    """A denoiser output must be finite probabilities of shape (B, L, V) summing to 1."""
    if not isinstance(p, torch.Tensor) or tuple(p.shape) != shape:
        got = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
        raise ValueError(f"sample_masked: the denoiser returned {got}, expected shape {shape}")
    p = p.detach().to(_F64)
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        raise ValueError(
            f"sample_masked: the denoiser returned negative or NaN/Inf probabilities at step {step}"
        )
    err = float((p.sum(-1) - 1).abs().max())
    if err > 1e-4:
        raise ValueError(
            f"sample_masked: the denoiser's probabilities do not sum to 1 (max error {err:.3g}) "
            f"at step {step}; return softmax(logits), not logits"
        )
    return p


def _temper(p: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """p^(1/temperature), renormalised, then restricted to the top-p nucleus.

    The nucleus is the smallest set of most probable tokens whose mass reaches top_p
    (the most probable token is always kept); mass outside it is set to zero exactly.
    """
    if temperature != 1.0:
        p = torch.softmax(p.log() / temperature, -1)  # log domain: no underflow as T -> 0
    if top_p < 1.0:
        ps, order = p.sort(-1, descending=True)
        before = ps.cumsum(-1) - ps  # mass of the strictly more probable tokens
        keep_sorted = before < top_p
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        p = torch.where(keep, p, torch.zeros_like(p))
        p = p / p.sum(-1, keepdim=True)
    return p


def masked_grid(process: Any, shape: Any, steps: Any, who: str = "sample_masked") -> torch.Tensor:
    """Check the arguments of a masked-diffusion sampler and return its time grid
    t_i = 1 - i / steps (float64, steps + 1 points), shared by every masked sampler."""
    if not isinstance(process, MaskedDiffusion):
        raise ValueError(f"{who}: process must be a MaskedDiffusion, got {type(process).__name__}")
    if (
        not isinstance(shape, (tuple, list, torch.Size))
        or len(shape) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)
    ):
        raise ValueError(f"{who}: shape must be (B, L) with positive integers, got {shape!r}")
    check_positive_int("steps", steps)
    return 1 - torch.arange(steps + 1, dtype=_F64) / steps


def reveal_probability(process: MaskedDiffusion, t: float, s: float) -> float:
    """P(a position masked at t is revealed by s < t) = (alpha(s) - alpha(t)) / (1 - alpha(t));
    exactly 1 at s = 0 (alpha(0) = 1), so the last step leaves no mask."""
    if s <= 0:
        return 1.0
    a_t, a_s = float(process.alpha(t)), float(process.alpha(s))
    return (a_s - a_t) / (1 - a_t)


def reveal(
    x: torch.Tensor, where: torch.Tensor, probs: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """A copy of x with the positions ``where`` (bool, x's shape) drawn from ``probs`` (one
    row of clean-token probabilities per revealed position, in row-major order)."""
    x = x.clone()
    if bool(where.any()):
        x[where] = torch.multinomial(probs, 1, generator=generator)[:, 0].to(x.device)
    return x


SAMPLERS = ("ancestral", "first-hitting")


def sample_masked(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    process: MaskedDiffusion,
    shape: tuple[int, int],
    steps: int | None,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    progress: bool = False,
    sampler: str = "ancestral",
) -> torch.Tensor:
    """Sample absorbing diffusion from all-masked (t = 1) to clean (t = 0).

    ``sampler="ancestral"`` (MDLM / Shi et al. 2024): grid t_i = 1 - i / steps. At step i
    (t = t_i, s = t_{i+1}) the denoiser is called once on the current state, and each
    still-masked position is revealed with probability

        (alpha(s) - alpha(t)) / (1 - alpha(t))      (= 1 at the last step, alpha(0) = 1),

    its token drawn from the denoiser's probabilities. Exactly ``steps`` denoiser calls are
    made, even when a step reveals nothing (no caching). Positions revealed in the same
    step are drawn independently from their marginals, so even an exact denoiser samples
    the joint law only as steps -> infinity (see module doc).

    ``sampler="first-hitting"`` (Zheng et al. 2024, "Masked diffusion models are secretly
    time-agnostic masked models", first-hitting sampler, their Alg. 1): every call reveals
    exactly one masked position, chosen uniformly, at the exact time the next of the n
    masked positions would unmask: the unmask times are iid with CDF 1 - alpha, so
    1 - alpha(t_next) = (1 - alpha(t)) * u^(1/n), u ~ U(0, 1). L calls in all (``steps``
    must be None or L); with an exact denoiser the joint law is sampled exactly (the chain
    rule in a uniformly random order).

    Revealed tokens are never changed again (carry-over: the reverse of an absorbing
    process only unmasks), and the result contains no mask token.

    Args:
        denoiser: D(x_t, t) -> probs (B, L, V) over clean tokens; t is float64 (B,).
        process: the ``MaskedDiffusion`` the denoiser was trained for.
        shape: (B, L).
        steps: the number of ancestral steps (= denoiser calls), >= 1; None or L for
            first-hitting.
        generator: the source of all randomness.
        temperature: > 0; probabilities become p^(1/temperature), renormalised.
        top_p: in (0, 1]; nucleus sampling over each position's distribution.
        progress: show a tqdm bar over steps.
        sampler: "ancestral" or "first-hitting".
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown masked sampler {sampler!r}; available: {SAMPLERS}")
    if sampler == "first-hitting":
        L = shape[1] if isinstance(shape, (tuple, list, torch.Size)) and len(shape) == 2 else None
        if steps not in (None, L):
            raise ValueError(
                f"sample_masked: first-hitting makes exactly L = {L} calls; pass steps=None "
                f"or {L}, got {steps!r}"
            )
        steps = L if isinstance(L, int) else steps
    ts = masked_grid(process, shape, steps)
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    B, L = shape
    V, mask = process.vocab_size, process.mask_id
    x = process.prior((B, L))
    t = torch.ones(B, dtype=_F64)
    it = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="masked", leave=False)
    for i in it:
        if sampler == "ancestral":
            t = ts[i].expand(B)
        probs = _check_probs(denoiser(x, t), (B, L, V), i)
        if sampler == "ancestral":
            p = reveal_probability(process, float(ts[i]), float(ts[i + 1]))
            where = (x == mask) & (torch.rand((B, L), generator=generator, dtype=_F64) < p)
        else:  # one uniformly chosen masked position per row; L - i are masked
            score = torch.rand((B, L), generator=generator, dtype=_F64)
            pick = torch.where(x == mask, score, torch.full_like(score, -1.0)).argmax(1)
            where = torch.zeros((B, L), dtype=torch.bool).scatter_(1, pick[:, None], True)
            u = torch.rand(B, generator=generator, dtype=_F64)
            t = process.t_of_alpha(1 - (1 - process.alpha(t)) * u ** (1.0 / (L - i)))
        x = reveal(x, where, _temper(probs[where], temperature, top_p), generator)
    return x
