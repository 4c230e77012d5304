"""Analytic targets with exact log-density, score and sampler (Chapters 1 to 9).

A Gaussian and a Gaussian mixture with full covariances in any dimension. Their scores are
written in closed form (no autograd), and ``perturb(sigma)`` returns the exact law of
x + sigma z, z ~ N(0, I): a mixture convolved with a Gaussian is again a mixture, with every
covariance increased by sigma² I. ``at(sde, t)`` and ``marginal_score(sde)`` do the same for the
marginals of a score SDE. These are the ground truth the samplers and losses are tested against
(Chapter 2, The score of a Gaussian mixture).

Points are tensors of shape [..., D]; every method is batched over the leading dimensions.
"""

import math

import torch

from . import _checks


def _cholesky(covs, name):
    """Cholesky factors of a [..., D, D] stack, checking symmetry and positive definiteness."""
    if not torch.allclose(covs, covs.mT, rtol=1e-6, atol=1e-8 * float(covs.abs().max())):
        raise ValueError(f"{name} must be symmetric; symmetrise it with (C + C.T) / 2")
    chol, info = torch.linalg.cholesky_ex(covs)
    if (info != 0).any():
        raise ValueError(f"{name} must be positive definite (all eigenvalues > 0); add a small multiple of the identity")
    return chol


class GaussianMixture:
    """p(x) = Σ_k w_k N(x; μ_k, Σ_k) (Chapter 2, The score of a Gaussian mixture).

    The score is the responsibility-weighted average of the component scores,
    ∇log p(x) = Σ_k r_k(x) (−Σ_k⁻¹ (x − μ_k)), r_k = softmax_k(log w_k + log N_k(x)),
    with the responsibilities computed in log space so that it stays exact far from every mode.

    Args:
        weights: [K] non-negative, summing to 1.
        means: [K, D].
        covs: [K, D, D] symmetric positive definite.
    """

    def __init__(self, weights, means, covs):
        means = _checks.as_float_tensor(means, "means")
        if means.ndim != 2:
            raise ValueError(f"means must have shape [K, D]; got {tuple(means.shape)}")
        K, D = means.shape
        weights = _checks.as_float_tensor(weights, "weights", dtype=means.dtype, device=means.device)
        covs = _checks.as_float_tensor(covs, "covs", dtype=means.dtype, device=means.device)
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape [K] = [{K}] to match means; got {tuple(weights.shape)}")
        if (weights < 0).any() or abs(float(weights.sum()) - 1.0) > 1e-6:
            raise ValueError(f"weights must be non-negative and sum to 1; got sum {float(weights.sum()):.6g} (divide by the sum)")
        if covs.shape != (K, D, D):
            raise ValueError(f"covs must have shape [K, D, D] = [{K}, {D}, {D}]; got {tuple(covs.shape)}")
        self.weights, self.means, self.covs = weights, means, covs
        self._chol = _cholesky(covs, "covs")
        eye = torch.eye(D, dtype=means.dtype, device=means.device)
        self._chol_inv = torch.linalg.solve_triangular(self._chol, eye, upper=False)  # L^{-1}
        self._precision = self._chol_inv.mT @ self._chol_inv
        self._eig = None  # eigendecomposition of the covariances, computed when first needed
        self._log_norm = -0.5 * D * math.log(2 * math.pi) - self._chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    @classmethod
    def isotropic(cls, weights, means, variances):
        """A mixture whose k-th component has covariance variances[k] · I (``variances`` a [K] tensor or
        one number for all) (Chapter 2).
        """
        means = _checks.as_float_tensor(means, "means")
        variances = _checks.as_float_tensor(variances, "variances", dtype=means.dtype, device=means.device)
        if variances.ndim == 0:
            variances = variances.expand(means.shape[0])
        eye = torch.eye(means.shape[-1], dtype=means.dtype, device=means.device)
        return cls(weights, means, variances[:, None, None] * eye)

    @property
    def dim(self):
        """The dimension D (Chapter 2)."""
        return self.means.shape[-1]

    @property
    def n_components(self):
        """The number of components K (Chapter 2)."""
        return self.means.shape[0]

    def _component_log_probs(self, x):
        """log w_k + log N(x; mu_k, Sigma_k) for every k, shape [..., K], and x - mu_k, shape [..., K, D]."""
        _checks.last_dim(x, self.dim)
        diff = x[..., None, :] - self.means  # [..., K, D]
        # y = L_k^{-1} (x - mu_k), so that |y|^2 is the Mahalanobis distance under Sigma_k.
        y = torch.einsum("kij,...kj->...ki", self._chol_inv, diff)  # no [..., K, D, D] copy
        maha = y.square().sum(-1)
        return self.weights.log() + self._log_norm - 0.5 * maha, diff

    def log_prob(self, x):
        """log p(x), shape [...] (Chapter 2)."""
        logits, _ = self._component_log_probs(x)
        return torch.logsumexp(logits, dim=-1)

    def responsibilities(self, x):
        """Posterior component probabilities r_k(x) = p(k | x), shape [..., K] (Chapter 2)."""
        logits, _ = self._component_log_probs(x)
        return torch.softmax(logits, dim=-1)

    def score(self, x):
        """∇ₓ log p(x) in closed form, shape [..., D] (Chapter 2, The score of a Gaussian mixture)."""
        logits, diff = self._component_log_probs(x)
        r = torch.softmax(logits, dim=-1)
        component_scores = -torch.einsum("kij,...kj->...ki", self._precision, diff)  # [..., K, D]
        return (r[..., None] * component_scores).sum(-2)

    def sample(self, n, generator=None):
        """``n`` independent samples, shape [n, D] (Chapter 1)."""
        _checks.non_negative_int(n, "n")
        device = self.means.device
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype, device=device)
        return self.means[k] + (self._chol[k] @ z[..., None])[..., 0]

    def perturb(self, sigma):
        """The exact law p_σ of x + sigma z with z ~ N(0, I): every covariance grows by sigma² I
        (Chapter 4, Perturbed densities).
        """
        _checks.positive_number(sigma, "sigma")
        eye = torch.eye(self.dim, dtype=self.means.dtype, device=self.means.device)
        return self._with(self.means, self.covs + sigma**2 * eye)

    def _with(self, means, covs):
        return GaussianMixture(self.weights, means, covs)

    def at(self, sde, t):
        """The exact law p_t of x_t = α(t) x₀ + σ(t) z under a score SDE at one time t (a number):
        every component N(μ_k, Σ_k) becomes N(α μ_k, α² Σ_k + σ² I) (Chapter 8). ``sde`` only needs
        a method marginal(t) -> (α, σ).
        """
        alpha, std = (float(v) for v in sde.marginal(float(t)))
        eye = torch.eye(self.dim, dtype=self.means.dtype, device=self.means.device)
        return self._with(alpha * self.means, alpha**2 * self.covs + std**2 * eye)

    def _diffused_logits(self, x, alpha, std):
        """Component log-probabilities of p_t at per-point (α, σ), and the component scores.

        With Σ_k = U_k diag(λ_k) U_kᵀ, the covariance α²Σ_k + σ²I = U_k diag(α²λ_k + σ²) U_kᵀ, so
        one eigendecomposition serves every time: no factorisation per point.
        """
        _checks.last_dim(x, self.dim)
        if self._eig is None:
            self._eig = torch.linalg.eigh(self.covs)
        lam, U = self._eig
        alpha, std = alpha[..., None, None], std[..., None, None]  # [..., 1, 1] against [..., K, D]
        diff = x[..., None, :] - alpha * self.means
        y = torch.einsum("kji,...kj->...ki", U, diff)  # U_kᵀ (x − α μ_k)
        var = alpha**2 * lam + std**2
        logits = (self.weights.log() - 0.5 * self.dim * math.log(2 * math.pi)
                  - 0.5 * var.log().sum(-1) - 0.5 * (y.square() / var).sum(-1))
        component_scores = -torch.einsum("kij,...kj->...ki", U, y / var)
        return logits, component_scores

    def marginal_score(self, sde):
        """s(x, t) = ∇ log p_t(x) in closed form for a [batch] tensor (or a number) t: the exact
        score every SDE sampler is tested against (Chapter 9). Returns a callable (x, t) -> s(x, t).
        """

        def score_fn(x, t):
            alpha, std = self._marginal_at(sde, t, x)
            logits, component_scores = self._diffused_logits(x, alpha, std)
            return (torch.softmax(logits, -1)[..., None] * component_scores).sum(-2)

        return score_fn

    def marginal_log_prob(self, sde, x, t):
        """log p_t(x) under a score SDE for a [batch] tensor (or a number) t (Chapters 8 and 9)."""
        alpha, std = self._marginal_at(sde, t, x)
        logits, _ = self._diffused_logits(x, alpha, std)
        return torch.logsumexp(logits, -1)

    def _marginal_at(self, sde, t, x):
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        alpha, std = sde.marginal(t)
        shape = x.shape[:-1]
        return alpha.to(x.dtype).expand(shape), std.to(x.dtype).expand(shape)

    def posterior_mean(self, y, sigma):
        """E[x | x + sigma z = y], computed from the component posteriors (not from the score)::

            Σ_k r_k(y) [μ_k + Σ_k (Σ_k + sigma² I)⁻¹ (y − μ_k)],

        with r_k the responsibilities under the perturbed mixture. Tweedie's formula says this
        equals y + sigma² ∇log p_σ(y) (Chapter 4, Tweedie's formula); this is the independent ground
        truth.
        """
        q = self.perturb(sigma)
        r = q.responsibilities(y)
        gain = self.covs @ q._precision  # [K, D, D]
        components = self.means + torch.einsum("kij,...kj->...ki", gain, y[..., None, :] - self.means)
        return (r[..., None] * components).sum(-2)

    def mean(self):
        """E[x] = Σ_k w_k μ_k (Chapter 2)."""
        return self.weights @ self.means

    def covariance(self):
        """Cov[x] = Σ_k w_k (Σ_k + μ_k μ_kᵀ) − E[x] E[x]ᵀ (Chapter 2)."""
        m = self.mean()
        second = (self.weights[:, None, None] * (self.covs + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - torch.outer(m, m)

    def to(self, device=None, dtype=None):
        """A copy on another device or dtype, e.g. for sampling on a GPU (Chapter 2)."""
        return GaussianMixture(*(t.to(device=device, dtype=dtype) for t in (self.weights, self.means, self.covs)))

    def __repr__(self):
        return f"GaussianMixture(K={self.n_components}, D={self.dim})"


class Gaussian(GaussianMixture):
    """N(mean, cov): a mixture with one component, with its closed forms written directly
    (Chapter 2, The score of a Gaussian). score(x) = −cov⁻¹ (x − mean).

    Args:
        mean: [D].
        cov: [D, D] symmetric positive definite.
    """

    def __init__(self, mean, cov):
        mean = _checks.as_float_tensor(mean, "mean")
        if mean.ndim != 1:
            raise ValueError(f"mean must have shape [D]; got {tuple(mean.shape)}")
        cov = _checks.as_float_tensor(cov, "cov", dtype=mean.dtype, device=mean.device)
        D = mean.shape[0]
        if cov.shape != (D, D):
            raise ValueError(f"cov must have shape [D, D] = [{D}, {D}]; got {tuple(cov.shape)}")
        super().__init__(torch.ones(1, dtype=mean.dtype, device=mean.device), mean[None], cov[None])

    def _with(self, means, covs):
        return Gaussian(means[0], covs[0])

    def score(self, x):
        """−cov⁻¹ (x − mean), shape [..., D] (Chapter 2, The score of a Gaussian)."""
        _checks.last_dim(x, self.dim)
        return -(x - self.means[0]) @ self._precision[0]

    def to(self, device=None, dtype=None):
        """A copy on another device or dtype, again a ``Gaussian`` (Chapter 2)."""
        return Gaussian(*(t.to(device=device, dtype=dtype) for t in (self.means[0], self.covs[0])))

    def __repr__(self):
        return f"Gaussian(D={self.dim})"
