"""Score SDEs: the variance-exploding, variance-preserving and sub-VP processes (Song et al. 2021;
Chapters 8 and 9).

Each process is a linear SDE dx = f(t) x dt + g(t) dW on t ∈ [0, T], T = 1, with data at t = 0.
Its law at time t given clean data x₀ is Gaussian::

    x_t = α(t) x₀ + σ(t) z,   z ~ N(0, I),

and ``marginal(t)`` returns (α(t), σ(t)), the *mean coefficient* and the *std*. The three
processes (Chapter 8):

.. list-table::
   :header-rows: 1

   * - SDE
     - f(t)
     - g(t)²
     - α(t)
     - σ(t)
   * - VE
     - 0
     - dσ²/dt
     - 1
     - σ_min (σ_max/σ_min)^t
   * - VP
     - −½β(t)
     - β(t)
     - e^(−½B(t))
     - √(1 − e^(−B(t)))
   * - sub-VP
     - −½β(t)
     - β(t)(1 − e^(−2B(t)))
     - e^(−½B(t))
     - 1 − e^(−B(t)) (no square root)

with β(t) = β_min + t(β_max − β_min) and B(t) = ∫₀ᵗ β. For VE, σ(0) = σ_min: the process starts
from the data already perturbed at σ_min (as the reference implementation does), so that started
from a point x(0) it has the kernel N(x(0), (σ(t)² − σ(0)²) I).

Between two times s < t every kernel is again Gaussian, x_t = a x_s + b z with a = α(t)/α(s) and
b² = σ(t)² − a²σ(s)² (``transition``); the predictors of ``companion.samplers`` are built on it.
``noise_level(t)`` = σ(t)/α(t) is the noise-to-signal ratio, the σ of the denoiser
x₀ ≈ (x + σ(t)² s)/α(t), on which the geometric and EDM time grids are laid (``time_grid``).

Times are Python floats or tensors broadcastable against the batch; a tensor of shape [batch] is
reshaped to [batch, 1, ..., 1] against x.
"""

import math

import torch

from . import _checks


def _as_time(t, like=None):
    """t as a tensor (float64 unless `like` fixes dtype and device)."""
    if isinstance(t, torch.Tensor):
        return t if like is None else t.to(dtype=like.dtype, device=like.device)
    if like is None:
        return torch.as_tensor(float(t), dtype=torch.float64)
    return torch.as_tensor(float(t), dtype=like.dtype, device=like.device)


def batch_view(c, x):
    """A per-sample coefficient ``c`` of shape [batch] (or a 0-d one) reshaped to broadcast against
    ``x``, in x's dtype and on its device (Chapter 9).
    """
    c = _as_time(c, x)
    return c.reshape(-1, *([1] * (x.ndim - 1))) if c.ndim == 1 else c


def _increasing_pair(low, high, low_name, high_name):
    _checks.positive_number(low, low_name)
    _checks.positive_number(high, high_name)
    if not high > low:
        raise ValueError(f"{high_name} must exceed {low_name}; got {high_name}={high}, {low_name}={low}")
    return float(low), float(high)


def _sum_except_batch(t):
    return t.reshape(t.shape[0], -1).sum(-1)


class SDE:
    """A linear SDE dx = f(t) x dt + g(t) dW with a Gaussian perturbation kernel, the common interface
    of the score SDEs of Song et al. (2021) (Chapter 8, The SDE framework).

    Subclasses define ``_log_alpha(t)``, ``_std(t)``, ``_f(t)``, ``_g2(t)``, ``_t_of_noise_level`` and
    ``prior_std``; everything else (kernels, reverse processes, discretisations) follows.
    """

    T = 1.0
    default_eps = 1e-3  # the time at which samplers stop; VE overrides it
    prior_std = 1.0

    # -- the forward process ------------------------------------------------------------------
    def drift(self, x, t):
        """The forward drift f(x, t) = f(t) x of the SDE (Song et al. 2021; Chapter 8)."""
        return batch_view(self._f(_as_time(t, x)), x) * x

    def diffusion(self, t):
        """The diffusion coefficient g(t) of the SDE (Song et al. 2021; Chapter 8)."""
        return self._g2(_as_time(t)).sqrt()

    def marginal(self, t):
        """The pair (α(t), σ(t)) of the perturbation kernel: given clean x₀, x_t = α(t) x₀ + σ(t) z
        (Song et al. 2021; Chapter 8, Perturbation kernels from the moment equations).
        """
        t = _as_time(t)
        return self._log_alpha(t).exp(), self._std(t)

    def marginal_prob(self, x0, t):
        """Mean α(t) x₀ and std σ(t) of the perturbation kernel p_{0t}(x_t | x₀), broadcast against x₀
        (``marginal_prob`` of the reference code of Song et al. 2021; Chapter 8).
        """
        alpha, std = self.marginal(_as_time(t, x0))
        return batch_view(alpha, x0) * x0, batch_view(std, x0)

    def perturb(self, x0, t, generator=None):
        """A draw of x_t given x₀ and the noise z used, the pair (α x₀ + σ z, z): the perturbation that
        denoising score matching trains on (Song et al. 2021; Chapters 8 and 9).
        """
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        mean, std = self.marginal_prob(x0, t)
        return mean + std * z, z

    def transition(self, s, t):
        """The kernel between two times s ≤ t of the forward process (Song et al. 2021; Chapter 9): the
        pair (a, b) with x_t = a x_s + b z, a = α(t)/α(s) and b² = σ(t)² − a² σ(s)².

        Raises:
            ValueError: if s > t, given as numbers (the kernel runs forward in time).
        """
        if not torch.is_tensor(s) and not torch.is_tensor(t) and s > t:
            raise ValueError(f"transition(s, t) needs s <= t (from the earlier time to the later); got s={s}, t={t}")
        s, t = _as_time(s), _as_time(t)
        a = (self._log_alpha(t) - self._log_alpha(s)).exp()
        b2 = self._std(t) ** 2 - (a * self._std(s)) ** 2
        return a, b2.clamp_min(0).sqrt()

    def noise_level(self, t):
        """σ(t)/α(t), the std of the noise once x_t is scaled back to the data, x_t/α(t) = x₀ + (σ/α) z:
        the σ of Karras et al. (2022), on which the ODE solvers step (Chapter 9).
        """
        t = _as_time(t)
        return self._std(t) / self._log_alpha(t).exp()

    def time_of_noise_level(self, noise_level):
        """The t at which σ(t)/α(t) equals ``noise_level`` (the inverse of ``noise_level``), used to lay the
        σ grids of Karras et al. (2022) on the time axis (Chapter 9).
        """
        return self._t_of_noise_level(_as_time(noise_level))

    # -- the prior ----------------------------------------------------------------------------
    def prior_sample(self, shape, generator=None, dtype=None, device=None):
        """A draw from the prior N(0, prior_std² I) that stands in for p_T (Song et al. 2021; Chapter 9)."""
        return self.prior_std * torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def prior_log_prob(self, z):
        """log N(z; 0, prior_std² I), summed over all but the batch dimension, shape [batch]: the log p_T
        of the likelihood computation (Song et al. 2021; Chapter 9, Exact likelihoods).
        """
        d = z[0].numel()
        s2 = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * s2) - _sum_except_batch(z.square()) / (2 * s2)

    # -- the reverse processes ----------------------------------------------------------------
    def reverse(self, score_fn, probability_flow=False, lam=None):
        """The reverse-time process for a score s(x, t) (Anderson 1982; Song et al. 2021; Chapter 9)::

            dx = [f(x, t) − ½(1 + λ²) g(t)² s(x, t)] dt + λ g(t) dW̄,   t running from T down to 0,

        λ = 1 the reverse SDE, λ = 0 the probability-flow ODE (``probability_flow=True``); every
        λ ≥ 0 has the same marginals p_t. dt is negative and W̄ is a Brownian motion in reverse time.

        Returns:
            A ``ReverseSDE``.
        """
        if lam is None:
            lam = 0.0 if probability_flow else 1.0
        elif probability_flow:
            raise ValueError("pass either probability_flow=True or lam, not both")
        if not (isinstance(lam, (int, float)) and lam >= 0):
            raise ValueError(f"lam must be a number >= 0; got {lam!r}")
        return ReverseSDE(self, score_fn, float(lam))

    def discretize(self, x, t, N):
        """One step of the forward chain with N steps on [0, T], at the step that ends at time t:
        x_next = x + f_i + G_i z, returned as (f_i, G_i). The generic chain is Euler–Maruyama,
        f_i = f(x, t) Δt, G_i = g(t) √Δt with Δt = T/N (Song et al. 2021; Chapter 8); VE and VP
        override it with the NCSN and DDPM chains.
        """
        dt = self.T / N
        return self.drift(x, t) * dt, batch_view(self.diffusion(_as_time(t, x)), x) * math.sqrt(dt)

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class ReverseSDE:
    """dx = [f − ½(1 + λ²) g² s] dt + λ g dW̄, the reverse-time process of ``SDE.reverse``
    (Anderson 1982; Song et al. 2021; Chapter 9, Anderson's theorem).
    """

    def __init__(self, sde, score_fn, lam):
        self.sde, self.score_fn, self.lam = sde, score_fn, lam

    def drift(self, x, t):
        """The reverse drift f(x, t) − ½(1 + λ²) g(t)² s(x, t), for a [batch] tensor t (Song et al. 2021;
        Chapter 9).
        """
        t = _as_time(t, x)
        g2 = batch_view(self.sde._g2(t), x)
        return self.sde.drift(x, t) - 0.5 * (1 + self.lam**2) * g2 * self.score_fn(x, t)

    def diffusion(self, t):
        """The reverse diffusion coefficient λ g(t): g(t) for the reverse SDE (Anderson 1982), 0 for the
        probability-flow ODE (Song et al. 2021; Chapter 9).
        """
        return self.lam * self.sde.diffusion(t)


class VESDE(SDE):
    """Variance exploding (Song et al. 2021; Chapter 8, The NCSN chain and the VE SDE):
    dx = √(dσ²/dt) dW, σ(t) = σ_min (σ_max/σ_min)^t, the continuous limit of the NCSN chain
    x_i = x_{i−1} + √(σ_i² − σ_{i−1}²) z of Song & Ermon (2019). Prior N(0, σ_max² I).
    """

    default_eps = 1e-5

    def __init__(self, sigma_min=0.01, sigma_max=50.0):
        self.sigma_min, self.sigma_max = _increasing_pair(sigma_min, sigma_max, "sigma_min", "sigma_max")

    @property
    def prior_std(self):
        """σ_max, the std of the prior N(0, σ_max² I) (Song et al. 2021; Chapter 8)."""
        return self.sigma_max

    @property
    def _log_ratio(self):
        return math.log(self.sigma_max / self.sigma_min)

    def _log_alpha(self, t):
        return torch.zeros_like(t)

    def _std(self, t):
        return self.sigma_min * (t * self._log_ratio).exp()

    def _f(self, t):
        return torch.zeros_like(t)

    def _g2(self, t):
        return 2 * self._log_ratio * self._std(t) ** 2

    def _t_of_noise_level(self, s):
        return (s / self.sigma_min).log() / self._log_ratio

    def discrete_sigmas(self, N):
        """The NCSN levels of an N-step chain (Song & Ermon 2019; Chapter 8), ascending in time:
        σ_min … σ_max, geometric, float64.
        """
        return torch.logspace(math.log10(self.sigma_min), math.log10(self.sigma_max), N, dtype=torch.float64)

    def discretize(self, x, t, N):
        """The NCSN chain (Song & Ermon 2019; Song et al. 2021; Chapter 8): at level i = round(t (N−1)/T),
        f = 0 and G = √(σ_i² − σ_{i−1}²), with σ_{−1} = 0.
        """
        sigmas = self.discrete_sigmas(N).to(device=x.device, dtype=x.dtype)
        i = _level_index(t, N, self.T, x)
        below = torch.where(i > 0, sigmas[(i - 1).clamp_min(0)], torch.zeros_like(sigmas[i]))
        return torch.zeros_like(x), batch_view((sigmas[i] ** 2 - below**2).sqrt(), x)


class VPSDE(SDE):
    """Variance preserving (Song et al. 2021; Chapter 8, The DDPM chain and the VP SDE):
    dx = −½β(t) x dt + √β(t) dW, β linear from β_min to β_max, the continuous limit of the DDPM
    chain x_i = √(1 − β_i) x_{i−1} + √β_i z of Ho et al. (2020). Prior N(0, I).
    """

    def __init__(self, beta_min=0.1, beta_max=20.0):
        self.beta_min, self.beta_max = _increasing_pair(beta_min, beta_max, "beta_min", "beta_max")

    def beta(self, t):
        """β(t) = β_min + t (β_max − β_min) (Song et al. 2021; Chapter 8)."""
        return self.beta_min + _as_time(t) * (self.beta_max - self.beta_min)

    def _int_beta(self, t):  # B(t) = ∫₀ᵗ β
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def _log_alpha(self, t):
        return -0.5 * self._int_beta(t)

    def _std(self, t):
        return (-torch.expm1(-self._int_beta(t))).sqrt()

    def _f(self, t):
        return -0.5 * self.beta(t)

    def _g2(self, t):
        return self.beta(t)

    def _t_from_int_beta(self, B):
        d = self.beta_max - self.beta_min
        return (-self.beta_min + (self.beta_min**2 + 2 * d * B).sqrt()) / d

    def _t_of_noise_level(self, s):
        return self._t_from_int_beta(torch.log1p(s**2))  # (σ/α)² = e^B − 1

    def discrete_betas(self, N):
        """The DDPM betas of an N-step chain (Ho et al. 2020; Chapter 8): β_i = β(i/(N−1))/N, linear from
        β_min/N to β_max/N, float64.
        """
        return torch.linspace(self.beta_min / N, self.beta_max / N, N, dtype=torch.float64)

    def discretize(self, x, t, N):
        """The DDPM chain (Ho et al. 2020; Song et al. 2021; Chapter 8): at step i = round(t (N−1)/T),
        f = (√(1 − β_i) − 1) x and G = √β_i.
        """
        betas = self.discrete_betas(N).to(device=x.device, dtype=x.dtype)
        beta = batch_view(betas[_level_index(t, N, self.T, x)], x)
        return (torch.sqrt(1 - beta) - 1) * x, beta.sqrt()


class SubVPSDE(VPSDE):
    """sub-VP (Song et al. 2021; Chapter 8, The sub-VP SDE): dx = −½β(t) x dt + √(β(t)(1 − e^(−2B(t)))) dW.
    Same mean as VP; its std 1 − e^(−B(t)) is never larger than VP's √(1 − e^(−B(t))). Prior N(0, I).
    """

    def _std(self, t):
        return -torch.expm1(-self._int_beta(t))

    def _g2(self, t):
        return self.beta(t) * -torch.expm1(-2 * self._int_beta(t))

    def _t_of_noise_level(self, s):
        return self._t_from_int_beta(2 * torch.asinh(s / 2))  # σ/α = e^{B/2} − e^{−B/2}

    discretize = SDE.discretize  # no classical chain: Euler–Maruyama


def _level_index(t, N, T, like):
    """The chain index round(t (N−1)/T) as a tensor (rounding, not truncation: t (N−1) computed in
    floating point can land just below an integer)."""
    if not torch.is_tensor(t) and not 0 <= t <= T:
        raise ValueError(f"t must lie in [0, T] = [0, {T}] to pick a step of the chain; got {t}")
    t = _as_time(t, like)
    return torch.round(t * (N - 1) / T).long().clamp(0, N - 1)


SDES = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}


def time_grid(sde, n_steps, kind="uniform", *, eps=None, rho=7.0):
    """n_steps + 1 times from T down to eps (float64), for samplers and ODE solvers (Chapter 9, ODE
    solvers and their cost).

    Args:
        sde: a process of this module.
        n_steps: the number of steps, a positive integer.
        kind: ``'uniform'``, equally spaced in t (Song et al. 2021); ``'geometric'``, the noise
            level σ(t)/α(t) spaced geometrically (equally in log σ); ``'edm'``, the ρ-grid of
            Karras et al. (2022), σ_i = (σ_max^(1/ρ) + i/n (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, dense
            at small σ.
        eps: the last time; ``sde.default_eps`` if None.
        rho: ρ of the ``'edm'`` grid.

    Returns:
        A float64 tensor of n_steps + 1 decreasing times, exactly T first and eps last.
    """
    _checks.non_negative_int(n_steps, "n_steps")
    if n_steps < 1:
        raise ValueError("n_steps must be at least 1")
    eps = sde.default_eps if eps is None else eps
    _checks.positive_number(eps, "eps")
    if not eps < sde.T:
        raise ValueError(f"eps must be below T = {sde.T}; got {eps}")
    if kind == "uniform":
        return torch.linspace(sde.T, eps, n_steps + 1, dtype=torch.float64)
    lo, hi = float(sde.noise_level(eps)), float(sde.noise_level(sde.T))
    u = torch.linspace(0, 1, n_steps + 1, dtype=torch.float64)
    # the levels of schedules.geometric and schedules.edm (sde depends on no other module)
    if kind == "geometric":
        levels = hi * (lo / hi) ** u
    elif kind == "edm":
        _checks.positive_number(rho, "rho")
        levels = (hi ** (1 / rho) + u * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    else:
        raise ValueError(f"kind must be 'uniform', 'geometric' or 'edm'; got {kind!r}")
    t = sde.time_of_noise_level(levels)
    t[0], t[-1] = sde.T, eps  # exact ends despite rounding in the inversion
    return t


def score_from_noise_prediction(eps_fn, sde):
    """Wrap a noise predictor ε̂(x, t) ≈ z (the parameterisation of Ho et al. 2020) as a score:
    s(x, t) = −ε̂(x, t)/σ(t), since ∇ log p_{0t}(x_t | x₀) = −z/σ(t) (Chapter 4, Noise prediction
    in diffusion models is DSM; Chapter 9, DDPM and the score).
    """

    def score_fn(x, t):
        _, std = sde.marginal(_as_time(t, x))
        return -eps_fn(x, t) / batch_view(std, x)

    return score_fn


def noise_prediction_from_score(score_fn, sde):
    """The inverse wrapper of ``score_from_noise_prediction``: ε̂(x, t) = −σ(t) s(x, t), the noise
    prediction of Ho et al. (2020) (Chapter 4; Chapter 9).
    """

    def eps_fn(x, t):
        _, std = sde.marginal(_as_time(t, x))
        return -batch_view(std, x) * score_fn(x, t)

    return eps_fn
