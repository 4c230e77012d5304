"""Noise schedules and NCSNv2's rules for choosing them (Chapters 5 and 6).

Every schedule returns the noise scales sorted **descending**, σ₁ > σ₂ > … > σ_L, as in
Song & Ermon (2019); samplers refuse anything else.

NCSNv2's rules (Song & Ermon 2020) tie the schedule to the data (Chapter 6, NCSNv2's recipe, in
numbers):

- technique 1: σ₁ as large as the largest distance between two training points
  (``max_pairwise_distance``), so that the first level connects every mode;
- technique 2: consecutive levels σ_{i−1} = γ σ_i with γ chosen for the data dimension D
  (``ncsnv2_gamma``), so that p_{σ_i} and p_{σ_{i−1}} overlap enough (``ncsnv2_num_scales``);
- technique 4: given T Langevin steps per level, the step size ε that brings the variance of a
  Gaussian chain from γ²σ_L² to as close to σ_L² as possible (``ncsnv2_step_size``).
"""

import math

import torch

from . import _checks


def _check_range(sigma_max, sigma_min, n):
    _checks.positive_number(sigma_max, "sigma_max")
    _checks.positive_number(sigma_min, "sigma_min")
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max must exceed sigma_min; got sigma_max={sigma_max}, sigma_min={sigma_min}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"the number of scales must be an integer >= 2; got {n!r}")


def geometric(sigma_max, sigma_min, n, dtype=torch.float64):
    """Geometric levels σ_i = σ_max (σ_min/σ_max)^((i−1)/(n−1)), i = 1 … n: a constant ratio between
    consecutive levels, the schedule of NCSN and NCSNv2 (Song & Ermon 2019; Song & Ermon 2020;
    Chapter 5, and Chapter 6, Noise schedules compared).

    Args:
        sigma_max: the largest level σ₁ > sigma_min > 0.
        sigma_min: the smallest level σ_L.
        n: the number of levels, an integer ≥ 2.
        dtype: the dtype of the result (float64 by default).

    Returns:
        An [n] tensor, largest level first.
    """
    _check_range(sigma_max, sigma_min, n)
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), n, dtype=dtype)


def linear(sigma_max, sigma_min, n, dtype=torch.float64):
    """Equally spaced levels from σ_max down to σ_min, a constant difference between consecutive
    levels; the baseline of Chapter 6, Noise schedules compared (not a published schedule). On a log
    scale it spends almost all its levels near σ_max.

    Args:
        sigma_max: the largest level σ₁ > sigma_min > 0.
        sigma_min: the smallest level σ_L.
        n: the number of levels, an integer ≥ 2.
        dtype: the dtype of the result (float64 by default).

    Returns:
        An [n] tensor, largest level first.
    """
    _check_range(sigma_max, sigma_min, n)
    return torch.linspace(sigma_max, sigma_min, n, dtype=dtype)


def cosine(sigma_max, sigma_min, n, dtype=torch.float64):
    """Levels spaced like a cosine ramp, σ_i = σ_min + (σ_max − σ_min)(1 + cos(π u_i))/2 with
    u_i = (i−1)/(n−1): dense near both ends, sparse in the middle. A comparison schedule of
    Chapter 6, Noise schedules compared; it is not the cosine schedule of ᾱ(t) used for DDPMs.

    Args:
        sigma_max: the largest level σ₁ > sigma_min > 0.
        sigma_min: the smallest level σ_L.
        n: the number of levels, an integer ≥ 2.
        dtype: the dtype of the result (float64 by default).

    Returns:
        An [n] tensor, largest level first.
    """
    _check_range(sigma_max, sigma_min, n)
    u = torch.linspace(0, 1, n, dtype=dtype)
    return sigma_min + (sigma_max - sigma_min) * (1 + torch.cos(math.pi * u)) / 2


def edm(sigma_max, sigma_min, n, rho=7.0, dtype=torch.float64):
    """The ρ-schedule of Karras et al. (2022), equally spaced in σ^(1/ρ) (Chapter 9, ODE solvers and
    their cost)::

        σ_i = (σ_max^(1/ρ) + (i−1)/(n−1) (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ,   i = 1 … n.

    ρ = 1 is ``linear`` and ρ → ∞ tends to ``geometric``; ρ = 7 lies between them, with more levels
    at small σ than the linear schedule and fewer than the geometric one (from 80 to 0.002 in 40
    levels: 9 below 0.1, against 15 for the geometric schedule).

    Args:
        sigma_max: the largest level σ₁ > sigma_min > 0.
        sigma_min: the smallest level σ_L.
        n: the number of levels, an integer ≥ 2.
        rho: ρ > 0.
        dtype: the dtype of the result (float64 by default).

    Returns:
        An [n] tensor, largest level first.
    """
    _check_range(sigma_max, sigma_min, n)
    _checks.positive_number(rho, "rho")
    u = torch.linspace(0, 1, n, dtype=dtype)
    return (sigma_max ** (1 / rho) + u * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def check_decreasing(sigmas, name="sigmas"):
    """Return ``sigmas`` as a 1-D float tensor after checking that they are positive and strictly
    decreasing, the convention of every sampler and loss that takes levels (Chapter 6).

    Args:
        sigmas: a sequence or tensor of noise levels.
        name: the argument's name, for the error message.

    Raises:
        ValueError: if ``sigmas`` is empty, not 1-D, not positive or not strictly decreasing.
    """
    sigmas = _checks.as_float_tensor(sigmas, name)
    if sigmas.ndim != 1 or sigmas.numel() < 1:
        raise ValueError(f"{name} must be a non-empty 1-D sequence; got shape {tuple(sigmas.shape)}")
    if (sigmas <= 0).any():
        raise ValueError(f"{name} must be positive")
    if (sigmas.diff() >= 0).any():
        raise ValueError(f"{name} must be strictly decreasing (sigma_1 > ... > sigma_L); sort them descending, "
                         f"e.g. sigmas.flip(0) for an ascending schedule")
    return sigmas


def max_pairwise_distance(x, max_points=4096, generator=None):
    """The largest Euclidean distance between two rows of ``x`` (each flattened), NCSNv2's choice of
    σ₁ (technique 1 of Song & Ermon 2020; Chapter 6), as a Python float.

    Exact for up to ``max_points`` samples; above that, a random subset of that size (drawn with
    ``generator``) is used, which can only underestimate the maximum.
    """
    _checks.batch(x)
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    if flat.shape[0] > max_points:
        flat = flat[torch.randperm(flat.shape[0], generator=generator)[:max_points]]
    best = torch.zeros((), dtype=torch.float64)
    for chunk in flat.split(512):  # [512, N] distance blocks keep the memory bounded
        best = torch.maximum(best, torch.cdist(chunk, flat).max())
    return best.item()


def _normal_cdf(t):
    return 0.5 * (1 + math.erf(t / math.sqrt(2)))


def ncsnv2_gamma(dim, target=0.5):
    """The ratio γ = σ_{i−1}/σ_i of NCSNv2's technique 2 (Song & Ermon 2020; Chapter 6) for data of
    dimension D, the root of::

        Φ(√(2D)(γ−1) + 3γ) − Φ(√(2D)(γ−1) − 3γ) = target   (0.5 by default),

    found by bisection on γ ∈ (1, 11]. The left side first rises above Φ(3) − Φ(−3) and then
    decreases, so a target below that has one root; in very low dimension (D ≤ 4) it only rises,
    and there is none.

    Raises:
        ValueError: if ``dim`` is not a positive integer or ``target`` is outside the range of the
            left side on that bracket.
    """
    _checks.positive_int(dim, "dim")
    c = math.sqrt(2 * dim)

    def overlap(g):
        return _normal_cdf(c * (g - 1) + 3 * g) - _normal_cdf(c * (g - 1) - 3 * g)

    lo, hi = 1.0 + 1e-12, 1.0 + 10.0
    if overlap(hi) >= overlap(lo):
        raise ValueError(f"no gamma in (1, 11] gives the overlap target {target} for dim={dim}: in so few dimensions "
                         f"the shells are thick and the overlap stays above {min(overlap(lo), overlap(hi)):.3g}")
    if not overlap(hi) < target < overlap(lo):
        raise ValueError(f"target must lie in ({overlap(hi):.3g}, {overlap(lo):.3g}) for dim={dim}; got {target}")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if overlap(mid) > target else (lo, mid)
    return 0.5 * (lo + hi)


def ncsnv2_num_scales(sigma_max, sigma_min, dim):
    """The number of levels L of a geometric schedule from σ_max to σ_min whose ratio does not exceed
    ``ncsnv2_gamma(dim)``: L = ⌈log(σ_max/σ_min)/log γ⌉ + 1 (technique 2 of Song & Ermon 2020;
    Chapter 6).
    """
    _check_range(sigma_max, sigma_min, 2)
    gamma = ncsnv2_gamma(dim)
    return math.ceil(math.log(sigma_max / sigma_min) / math.log(gamma)) + 1


def ncsnv2_variance_ratio(step_size, sigma_min, gamma, n_steps_each):
    """Var[x_T]/σ_L² after T = ``n_steps_each`` Langevin steps x ← x + ε s(x) + √(2ε) z on N(0, σ_L²),
    started at variance γ²σ_L² (the variance the previous level leaves behind). With r = 1 − ε/σ_L²
    it is::

        r^(2T) (γ² − 2ε/(σ_L² − σ_L² r²)) + 2ε/(σ_L² − σ_L² r²).

    A convex combination of γ² > 1 and the chain's stationary ratio 1/(1 − ε/(2σ_L²)) > 1, it exceeds
    1 for every stable step; technique 4 of Song & Ermon (2020) makes it as close to 1 as possible
    (Chapter 6, NCSNv2's recipe, in numbers).
    """
    r = 1 - step_size / sigma_min**2
    stationary = 2 * step_size / (sigma_min**2 - sigma_min**2 * r**2)
    return r ** (2 * n_steps_each) * (gamma**2 - stationary) + stationary


def ncsnv2_step_size(sigma_min, gamma, n_steps_each):
    """NCSNv2's technique 4 (Song & Ermon 2020; Chapter 6): the step ε (the step at σ_L in the book's
    convention, i.e. the ``step_lr`` of ``annealed_langevin``) that brings ``ncsnv2_variance_ratio``
    closest to 1 over stable steps 0 < ε < σ_L², by a grid search in log ε followed by golden-section
    refinement.
    """
    _checks.positive_number(sigma_min, "sigma_min")
    if not gamma > 1:
        raise ValueError(f"gamma must exceed 1; got {gamma}")
    _checks.positive_int(n_steps_each, "n_steps_each")

    def gap(log_eps):
        return abs(ncsnv2_variance_ratio(math.exp(log_eps), sigma_min, gamma, n_steps_each) - 1)

    hi = math.log(sigma_min**2)
    grid = [hi - 30 + 30 * k / 3000 for k in range(3001)]
    k = min(range(len(grid)), key=lambda j: gap(grid[j]))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    phi = (math.sqrt(5) - 1) / 2
    for _ in range(100):
        c, d = b - phi * (b - a), a + phi * (b - a)
        a, b = (a, d) if gap(c) < gap(d) else (c, b)
    return math.exp(0.5 * (a + b))
