"""Exact Gaussian-mixture oracle: the ground truth samplers and guidance are tested against.

For p(x0) = sum_k w_k N(mu_k, Sigma_k) and x_t = alpha x0 + sigma eps, the marginal is
again a mixture, p_t(x) = sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I), and the
exact denoiser is the posterior-weighted component mean

    E[x0 | x_t] = sum_k r_k(x_t) (mu_k + alpha Sigma_k C_k^-1 (x_t - alpha mu_k)),
    C_k = alpha^2 Sigma_k + sigma^2 I,  r_k ∝ w_k N(x_t; alpha mu_k, C_k).

Each Sigma_k is stored by its eigendecomposition U diag(l) U^T, so C_k^-1 is
U diag(1 / (alpha^2 l + sigma^2)) U^T for every t at no extra factorisation cost;
diagonal covariances skip U entirely. All arithmetic is float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .processes import Process
from .utils import as_time, batch_time, coef

__all__ = ["GaussianMixture"]


class GaussianMixture:
    """A mixture of K Gaussians in d dimensions.

    Args:
        weights: (K,) positive mixture weights (normalised here).
        means: (K, d) component means.
        covs: (K, d, d) full covariances, (K, d) diagonal variances, or (K,) isotropic
            variances. Must be positive definite.
    """

    def __init__(self, weights: Any, means: Any, covs: Any) -> None:
        w = torch.as_tensor(weights, dtype=torch.float64)
        mu = torch.as_tensor(means, dtype=torch.float64)
        cov = torch.as_tensor(covs, dtype=torch.float64)
        if mu.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(mu.shape)}")
        K, d = mu.shape
        if w.shape != (K,) or not bool((w > 0).all()) or not bool(torch.isfinite(w).all()):
            raise ValueError(f"weights must be {K} positive finite numbers")
        self.weights = w / w.sum()
        self.means = mu
        self.K, self.dim = K, d
        if cov.shape == (K,):
            cov = cov[:, None].expand(K, d)
        if cov.shape == (K, d):
            self.eigvals, self.eigvecs = cov.clone(), None  # diagonal: U = I
        elif cov.shape == (K, d, d):
            if not torch.allclose(cov, cov.transpose(1, 2)):
                raise ValueError("covariances must be symmetric")
            self.eigvals, self.eigvecs = torch.linalg.eigh(cov)
        else:
            raise ValueError(f"covs must have shape ({K},), ({K}, {d}) or ({K}, {d}, {d})")
        if not bool((self.eigvals > 0).all()):
            raise ValueError("covariances must be positive definite")

    # --- construction helpers ---------------------------------------------------------
    @classmethod
    def random(
        cls,
        K: int,
        d: int,
        generator: torch.Generator | None = None,
        spread: float = 2.0,
        scale: tuple[float, float] = (0.05, 0.5),
        full: bool = True,
    ) -> GaussianMixture:
        """A random mixture: means ~ N(0, spread^2 I), stds log-uniform in ``scale``."""
        mu = spread * torch.randn(K, d, generator=generator, dtype=torch.float64)
        lo, hi = math.log(scale[0]), math.log(scale[1])
        std = torch.exp(lo + (hi - lo) * torch.rand(K, d, generator=generator, dtype=torch.float64))
        w = 0.5 + torch.rand(K, generator=generator, dtype=torch.float64)
        if not full:
            return cls(w, mu, std**2)
        q, _ = torch.linalg.qr(torch.randn(K, d, d, generator=generator, dtype=torch.float64))
        cov = q @ torch.diag_embed(std**2) @ q.transpose(1, 2)
        return cls(w, mu, 0.5 * (cov + cov.transpose(1, 2)))

    @property
    def covs(self) -> torch.Tensor:
        """(K, d, d) covariances."""
        if self.eigvecs is None:
            return torch.diag_embed(self.eigvals)
        return self.eigvecs @ torch.diag_embed(self.eigvals) @ self.eigvecs.transpose(1, 2)

    def _project(self, v: torch.Tensor) -> torch.Tensor:
        """v (B, K, d) -> U_k^T v in the eigenbasis of each component."""
        if self.eigvecs is None:
            return v
        return torch.einsum("kde,bkd->bke", self.eigvecs, v)

    def _unproject(self, v: torch.Tensor) -> torch.Tensor:
        if self.eigvecs is None:
            return v
        return torch.einsum("kde,bke->bkd", self.eigvecs, v)

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.dim:
            raise ValueError(
                f"expected a batch of {self.dim}-dim points, got shape {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.dim).to(torch.float64)

    # --- the marginal at time t ---------------------------------------------------------
    def _marginal(
        self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-component log N(x; alpha mu_k, C_k), projected residual z and C's eigenvalues.

        x (B, d); alpha, sigma (B,). Returns logp (B, K), z (B, K, d), c (B, K, d).
        """
        if bool((alpha == alpha[0]).all()) and bool((sigma == sigma[0]).all()):
            # one time for the whole batch (as in every sampler step): c is (1, K, d), so
            # its log-determinant costs K d instead of B K d
            alpha, sigma = alpha[:1], sigma[:1]
        a, s = alpha[:, None, None], sigma[:, None, None]
        z = self._project(x[:, None, :] - a * self.means[None])
        c = a**2 * self.eigvals[None] + s**2
        logp = -0.5 * (
            (z.square() / c).sum(-1) + c.log().sum(-1) + self.dim * math.log(2 * math.pi)
        )
        return logp, z, c

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density of the data distribution at x (B, d) (float64)."""
        x = self._flat(x)
        one = torch.ones(x.shape[0], dtype=torch.float64)
        logp, _, _ = self._marginal(x, one, 0.0 * one)
        return torch.logsumexp(logp + self.weights.log(), dim=1)

    def log_prob_t(self, x: torch.Tensor, t: Any, process: Process) -> torch.Tensor:
        """Exact log-density of the marginal p_t of ``process`` at x."""
        x = self._flat(x)
        t = batch_time(t, x)
        logp, _, _ = self._marginal(x, process.alpha(t), process.sigma(t))
        return torch.logsumexp(logp + self.weights.log(), dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact samples (float64, shape (n, d))."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        z = z * self.eigvals[k].sqrt()
        if self.eigvecs is not None:
            z = torch.einsum("nde,ne->nd", self.eigvecs[k], z)
        return self.means[k] + z

    # --- exact denoiser and score --------------------------------------------------------
    def denoise(self, x: torch.Tensor, t: Any, process: Process) -> torch.Tensor:
        """E[x0 | x_t = x] under ``process`` (exact); returns x's shape and dtype."""
        if not process.gaussian:
            raise ValueError(f"the oracle's denoiser needs a Gaussian process, not {process!r}")
        shape, dtype = x.shape, x.dtype
        xf = self._flat(x)
        t = batch_time(t, xf)
        a, s = process.alpha(t), process.sigma(t)
        logp, z, c = self._marginal(xf, a, s)
        r = torch.softmax(logp + self.weights.log(), dim=1)  # (B, K) responsibilities
        # mu_k + alpha Sigma_k C_k^-1 (x - alpha mu_k), in the eigenbasis: l * alpha / c * z
        gain = self.eigvals[None] * (a[:, None, None] if a.shape[0] == c.shape[0] else a[0]) / c
        m = self._unproject(z * gain)  # not in place: autograd needs z (guidance, likelihood)
        out = torch.einsum("bk,bkd->bd", r, m) + r @ self.means
        return out.reshape(shape).to(dtype)

    def denoiser(self, process: Process):
        """The exact denoiser D(x, t, cond=None) of this mixture under ``process``."""

        def D(x: torch.Tensor, t: Any, cond: Any = None) -> torch.Tensor:
            return self.denoise(x, t, process)

        return D

    def score(self, x: torch.Tensor, t: Any, process: Process) -> torch.Tensor:
        """grad_x log p_t(x) = (alpha E[x0|x] - x) / sigma^2 (Tweedie)."""
        t = batch_time(t, x)
        x0 = self.denoise(x.to(torch.float64), t, process)
        xf = x.to(torch.float64)
        return ((coef(process.alpha(t), xf) * x0 - xf) / coef(process.sigma(t), xf) ** 2).to(
            x.dtype
        )

    # --- linear-Gaussian posterior ---------------------------------------------------------
    def posterior(self, A: Any, y: Any, noise_std: float) -> GaussianMixture:
        """Exact posterior p(x0 | y) for y = A x0 + n, n ~ N(0, noise_std^2 I).

        Component-wise Kalman update (Bishop 2006, eqs. 2.113-2.117):
        S_k = A Sigma_k A^T + s^2 I, G_k = Sigma_k A^T S_k^-1,
        mu_k' = mu_k + G_k (y - A mu_k), Sigma_k' = Sigma_k - G_k A Sigma_k,
        w_k' ∝ w_k N(y; A mu_k, S_k).
        """
        A = torch.as_tensor(A, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        if A.ndim != 2 or A.shape[1] != self.dim:
            raise ValueError(f"A must have shape (m, {self.dim}), got {tuple(A.shape)}")
        if y.shape != (A.shape[0],):
            raise ValueError(f"y must have {A.shape[0]} entries, got {tuple(y.shape)}")
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        cov = self.covs
        S = A @ cov @ A.T + noise_std**2 * torch.eye(A.shape[0], dtype=torch.float64)
        L = torch.linalg.cholesky(S)
        resid = y[None] - self.means @ A.T  # (K, m)
        G = torch.cholesky_solve(A @ cov, L).transpose(1, 2)  # Sigma A^T S^-1, (K, d, m)
        mu = self.means + torch.einsum("kdm,km->kd", G, resid)
        new_cov = cov - G @ A @ cov
        sol = torch.linalg.solve_triangular(L, resid[..., None], upper=False)[..., 0]
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        loglik = -0.5 * ((sol**2).sum(-1) + logdet + A.shape[0] * math.log(2 * math.pi))
        logw = self.weights.log() + loglik
        w = torch.softmax(logw, 0)
        return GaussianMixture(w.clamp_min(1e-300), mu, 0.5 * (new_cov + new_cov.transpose(1, 2)))

    # --- converged probability-flow ODE -------------------------------------------------------
    def reference_solve(
        self,
        process: Process,
        x1: torch.Tensor,
        t_start: float | None = None,
        t_end: float | None = None,
        rtol: float = 1e-10,
        atol: float = 1e-10,
    ) -> torch.Tensor:
        """Solve the probability-flow ODE from ``t_start`` (default t_max) to ``t_end``
        (default t_min) with the exact denoiser, adaptively (DOP853) in float64.

        The ODE is integrated in u = log(sigma/alpha) = -lambda/2 for y = x/alpha, where it
        reads dy/du = y - D(alpha y, t(u)) (EDM's scaled ODE, Karras et al. 2022 eq. 4),
        smooth over the whole range.
        """
        from scipy.integrate import solve_ivp

        if not process.gaussian:
            raise ValueError(f"reference_solve needs a Gaussian process, not {process!r}")
        t0 = process.t_max if t_start is None else float(t_start)
        t1 = process.t_min if t_end is None else float(t_end)
        shape, dtype = x1.shape, x1.dtype
        x = self._flat(x1)
        u0 = float(-0.5 * process.log_snr(t0))
        u1 = float(-0.5 * process.log_snr(t1))
        y0 = (x / process.alpha(t0)).reshape(-1).numpy()

        def rhs(u: float, y: np.ndarray) -> np.ndarray:
            t = process.t_of_log_snr(torch.tensor(-2.0 * u, dtype=torch.float64))
            yt = torch.from_numpy(y).reshape(x.shape)
            x0 = self.denoise(process.alpha(t) * yt, t, process)
            return (yt - x0).reshape(-1).numpy()

        sol = solve_ivp(rhs, (u0, u1), y0, method="DOP853", rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"reference_solve failed: {sol.message}")
        y1 = torch.from_numpy(sol.y[:, -1]).reshape(x.shape)
        return (process.alpha(as_time(t1)) * y1).reshape(shape).to(dtype)
