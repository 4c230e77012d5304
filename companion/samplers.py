"""Samplers that need only a score (and, for MALA, an unnormalised log-density).

Conventions: plain functions in the style of k-diffusion, a batch of chains is the
unit of work, randomness through an explicit `torch.Generator`, no device moves and no host
synchronisation inside the loop. A `callback` receives a dict {'i', 'x', ...} after every step.

The Langevin step is x <- x + eps * s(x) + sqrt(2 eps) z. Sources that write
x + (alpha/2) s(x) + sqrt(alpha) z describe the same chain with alpha = 2 eps (Chapter 1).
"""

import torch
from tqdm.auto import trange

from . import _checks
from .schedules import check_decreasing


def _noise_like(x, generator):
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _sum_except_batch(t):
    return t.reshape(t.shape[0], -1).sum(-1)


@torch.no_grad()
def langevin(score_fn, x, step_size, n_steps, *, generator=None, callback=None, progress=False):
    """Unadjusted Langevin algorithm (ULA): the Euler–Maruyama discretisation of
    dx = grad log p(x) dt + sqrt(2) dW,

        x_{k+1} = x_k + eps * s(x_k) + sqrt(2 eps) z_k,   z_k ~ N(0, I).

    For every eps > 0 its stationary law is biased: for N(0, s^2) the stationary variance is
    s^2 / (1 - eps / (2 s^2)), and the chain diverges for eps >= 2 s^2 (Chapter 1, Roberts &
    Tweedie 1996). Use `mala` to remove the bias.

    Args:
        score_fn: callable x -> grad log p(x), same shape as x. Runs under torch.no_grad();
            a score computed by autograd must enable gradients itself (see
            `companion.scores.autograd_score`).
        x: [batch, ...] starting points, one chain per row.
        step_size: eps > 0, a float or a 0-d tensor.
        n_steps: number of updates.
    Returns:
        The chains after n_steps, same shape as x.
    """
    _checks.batch(x)
    _checks.positive_number(step_size, "step_size")
    _checks.non_negative_int(n_steps, "n_steps")
    noise_scale = (2 * step_size) ** 0.5
    for i in trange(n_steps, disable=not progress, desc="Langevin"):
        x = x + step_size * score_fn(x) + noise_scale * _noise_like(x, generator)
        if callback is not None:
            callback({"i": i, "x": x})
    return _checks.finite_result(
        x, "langevin", "the step size is too large for the curvature of log p (eps must stay below 2 / the largest "
        "eigenvalue of -Hessian log p); reduce step_size"
    )


@torch.no_grad()
def mala(log_prob_fn, score_fn, x, step_size, n_steps, *, generator=None, callback=None, progress=False):
    """Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996; Chapter 1).

    Proposes y = x + eps s(x) + sqrt(2 eps) z, i.e. q(y | x) = N(y; x + eps s(x), 2 eps I), and
    accepts with probability min(1, p(y) q(x | y) / (p(x) q(y | x))), independently for every
    chain. The chain leaves p exactly invariant for any eps > 0; only the acceptance rate and the
    mixing speed depend on eps.

    Args:
        log_prob_fn: callable x -> log p(x) up to a constant, shape [batch].
        score_fn: callable x -> grad log p(x), same shape as x.
        x: [batch, ...] starting points.
        step_size: eps > 0.
        n_steps: number of proposals.
    Returns:
        (x, acceptance_rate): the chains and the fraction of accepted proposals over all chains
        and steps (a 0-d tensor).
    """
    _checks.batch(x)
    _checks.positive_number(step_size, "step_size")
    _checks.non_negative_int(n_steps, "n_steps")
    noise_scale = (2 * step_size) ** 0.5

    def log_q(to, frm, frm_score):  # log N(to; frm + eps s(frm), 2 eps I) up to a constant
        return -_sum_except_batch((to - frm - step_size * frm_score).square()) / (4 * step_size)

    log_p, score = log_prob_fn(x), score_fn(x)
    if log_p.shape != x.shape[:1]:
        raise ValueError(f"log_prob_fn must return one value per chain, shape [{x.shape[0]}]; got {tuple(log_p.shape)}")
    accepted = torch.zeros((), dtype=x.dtype, device=x.device)
    for i in trange(n_steps, disable=not progress, desc="MALA"):
        y = x + step_size * score + noise_scale * _noise_like(x, generator)
        log_p_y, score_y = log_prob_fn(y), score_fn(y)
        log_alpha = log_p_y - log_p + log_q(x, y, score_y) - log_q(y, x, score)
        u = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
        accept = u.log() < log_alpha
        mask = accept.reshape(-1, *([1] * (x.ndim - 1)))
        x = torch.where(mask, y, x)
        score = torch.where(mask, score_y, score)
        log_p = torch.where(accept, log_p_y, log_p)
        accepted += accept.sum()
        if callback is not None:
            callback({"i": i, "x": x, "accepted": accept})
    rate = accepted / max(n_steps * x.shape[0], 1)
    return _checks.finite_result(x, "mala", "check that log_prob_fn and score_fn are finite at the start"), rate


@torch.no_grad()
def annealed_langevin(score_fn, x, sigmas, *, step_lr=2e-5, n_steps_each=100, denoise=False, mask=None,
                      x_known=None, generator=None, callback=None, progress=False):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1; Chapter 6).

    For each level σ_i, largest first, run n_steps_each Langevin steps on p_{σ_i} with

        α_i = step_lr · σ_i² / σ_L²,   x ← x + α_i s(x, σ_i) + √(2 α_i) z.

    This is the update of the reference code; the paper writes x + (α_i/2) s + √α_i z, the same
    chain with its α twice ours. step_lr is therefore the step at the last, smallest level.

    Args:
        score_fn: s(x, sigma) with sigma a [batch] tensor (every entry equal to σ_i).
        x: [batch, ...] starting points (NCSN starts from uniform noise; N(0, σ₁²I) also works).
        sigmas: strictly decreasing noise levels σ₁ > … > σ_L.
        denoise: finish with the Tweedie step x + σ_L² s(x, σ_L), the posterior mean of the
            clean sample (Chapter 4).
        mask, x_known: inpainting. Where mask is 1 the pixels are known: at each level they are
            set to x_known + σ_i z (one z per level), and re-imposed after every step.
    """
    _checks.batch(x)
    sigmas = check_decreasing(sigmas)
    _checks.positive_number(step_lr, "step_lr")
    _checks.non_negative_int(n_steps_each, "n_steps_each")
    if (mask is None) != (x_known is None):
        raise ValueError("inpainting needs both mask and x_known (mask = 1 where x_known is kept)")
    if mask is not None:
        for name, t in (("mask", mask), ("x_known", x_known)):
            try:
                ok = torch.broadcast_shapes(t.shape, x.shape) == x.shape
            except RuntimeError:
                ok = False
            if not ok:
                raise ValueError(f"{name} must broadcast to the shape of x {tuple(x.shape)}; got {tuple(t.shape)}")
        mask = mask.bool()
    levels = sigmas.tolist()  # Python floats: no host synchronisation inside the loop
    sigma_min = levels[-1]
    for i in trange(len(levels), disable=not progress, desc="annealed Langevin"):
        sigma = levels[i]
        alpha = step_lr * (sigma / sigma_min) ** 2
        sigma_batch = torch.full(x.shape[:1], sigma, dtype=x.dtype, device=x.device)
        if mask is not None:
            known = x_known + sigma * _noise_like(torch.broadcast_to(x_known, x.shape), generator)
            x = torch.where(mask, known, x)
        for t in range(n_steps_each):
            x = x + alpha * score_fn(x, sigma_batch) + (2 * alpha) ** 0.5 * _noise_like(x, generator)
            if mask is not None:
                x = torch.where(mask, known, x)
            if callback is not None:
                callback({"i": i, "t": t, "sigma": sigma, "x": x})
    if denoise:
        x = x + sigma_min**2 * score_fn(x, torch.full(x.shape[:1], sigma_min, dtype=x.dtype, device=x.device))
    return _checks.finite_result(x, "annealed_langevin", "step_lr is too large for the smallest level; reduce it")


def inverse_cdf(log_prob_fn, n, *, low, high, n_grid=4097, generator=None):
    """Sample a 1-D density by inverting its tabulated CDF (Chapter 1).

    The unnormalised density exp(log_prob_fn(t)) is tabulated on n_grid points of [low, high],
    integrated with the trapezoidal rule, normalised, and inverted by linear interpolation:
    x = F^{-1}(u), u ~ U(0, 1). Mass outside [low, high] is ignored, so the interval must hold
    essentially all of it. The cost of the table grows like n_grid^D in D dimensions, which is
    why this method stops at one or two dimensions.

    Returns:
        [n] samples.
    """
    _checks.non_negative_int(n, "n")
    if not (float(high) > float(low)):
        raise ValueError(f"high must be greater than low; got low={low}, high={high}")
    if n_grid < 2:
        raise ValueError(f"n_grid must be at least 2; got {n_grid}")
    grid = torch.linspace(float(low), float(high), n_grid, dtype=torch.float64)
    log_p = log_prob_fn(grid.to(torch.get_default_dtype())).to(torch.float64)
    density = (log_p - log_p.max()).exp()
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (density[1:] + density[:-1]) * grid.diff(), 0)])
    cdf = cdf / cdf[-1]
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    idx = torch.searchsorted(cdf, u, right=True).clamp(1, n_grid - 1)
    c0, c1 = cdf[idx - 1], cdf[idx]
    frac = (u - c0) / (c1 - c0).clamp_min(torch.finfo(torch.float64).tiny)
    return grid[idx - 1] + frac * (grid[idx] - grid[idx - 1])
