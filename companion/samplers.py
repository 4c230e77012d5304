"""Samplers that need only a score (and, for MALA, an unnormalised log-density): Langevin
dynamics and MALA (Chapter 1), annealed Langevin dynamics (Chapters 5 and 6), and the
predictors, correctors and predictor–corrector loop of score SDEs (Chapter 9).

Conventions: plain functions in the style of k-diffusion, a batch of chains is the
unit of work, randomness through an explicit ``torch.Generator``, no device moves and no host
synchronisation inside the loop. A ``callback`` receives a dict {'i', 'x', ...} after every step.

The Langevin step is x ← x + ε s(x) + √(2ε) z. Sources that write
x + (α/2) s(x) + √α z describe the same chain with α = 2ε (Chapter 1, Step-size conventions
and a sign check).
"""

import torch
from tqdm.auto import trange

from . import _checks
from .schedules import check_decreasing
from .sde import time_grid


def _noise_like(x, generator):
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _sum_except_batch(t):
    return t.reshape(t.shape[0], -1).sum(-1)


@torch.no_grad()
def langevin(score_fn, x, step_size, n_steps, *, generator=None, callback=None, progress=False):
    """Unadjusted Langevin algorithm (ULA): the Euler–Maruyama discretisation of
    dx = ∇log p(x) dt + √2 dW (Roberts & Tweedie 1996; Chapter 1)::

        x_{k+1} = x_k + ε s(x_k) + √(2ε) z_k,   z_k ~ N(0, I).

    For every ε > 0 its stationary law is biased: for N(0, v) the stationary variance is
    v / (1 − ε/(2v)), and the chain diverges for ε ≥ 2v (Chapter 1, Discretisation bias: ULA on a
    Gaussian target). Use ``mala`` to remove the bias.

    Args:
        score_fn: callable x -> ∇log p(x), same shape as x. Runs under ``torch.no_grad()``;
            a score computed by autograd must enable gradients itself (see
            ``companion.scores.autograd_score``).
        x: [batch, ...] starting points, one chain per row.
        step_size: ε > 0, a float or a 0-d tensor.
        n_steps: number of updates.
        generator: the torch.Generator of the noise.
        callback: called as ``callback({'i': i, 'x': x})`` after every step.
        progress: show a progress bar.

    Returns:
        The chains after ``n_steps`` updates, same shape as x.

    Raises:
        ValueError: if the chains end with NaN or infinite values (the step is too large).
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
    """Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996; Chapter 1, Removing the bias).

    Proposes y = x + ε s(x) + √(2ε) z, i.e. q(y | x) = N(y; x + ε s(x), 2ε I), and accepts with
    probability min(1, p(y) q(x | y) / (p(x) q(y | x))), independently for every chain. The chain
    leaves p exactly invariant for any ε > 0; only the acceptance rate and the mixing speed depend
    on ε.

    Args:
        log_prob_fn: callable x -> log p(x) up to a constant, shape [batch].
        score_fn: callable x -> ∇log p(x), same shape as x.
        x: [batch, ...] starting points.
        step_size: ε > 0.
        n_steps: number of proposals.
        generator: the torch.Generator of the proposals and of the accept/reject draws.
        callback: called as ``callback({'i': i, 'x': x, 'accepted': accept})`` after every step,
            ``accept`` a [batch] boolean tensor.
        progress: show a progress bar.

    Returns:
        A pair ``(x, acceptance_rate)``, the chains and the fraction of accepted proposals over all
        chains and steps (a 0-d tensor).
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
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1; Chapter 6, The algorithm).

    For each level σ_i, largest first, run ``n_steps_each`` Langevin steps on p_{σ_i} with::

        α_i = step_lr · σ_i² / σ_L²,   x ← x + α_i s(x, σ_i) + √(2 α_i) z.

    This is the update of the reference code; the paper writes x + (α_i/2) s + √α_i z, the same
    chain with its α twice ours. ``step_lr`` is therefore the step at the last, smallest level.

    Args:
        score_fn: s(x, sigma) with sigma a [batch] tensor (every entry equal to σ_i).
        x: [batch, ...] starting points (NCSN starts from uniform noise; N(0, σ₁²I) also works).
        sigmas: strictly decreasing noise levels σ₁ > … > σ_L.
        step_lr: the step at the smallest level (Chapter 6, The step-size rule).
        n_steps_each: Langevin steps per level.
        denoise: finish with the Tweedie step x + σ_L² s(x, σ_L), the posterior mean of the
            clean sample (Chapter 4; Chapter 6, The final denoising step; Jolicoeur-Martineau et
            al. 2021).
        mask: inpainting (Song & Ermon 2019; Chapter 7, Inpainting), a tensor that broadcasts to
            x, 1 where the pixels are known: at each level they are set to x_known + σ_i z (one z
            per level), and re-imposed after every step.
        x_known: the known pixels, with ``mask``.
        generator: the torch.Generator of the noise.
        callback: called as ``callback({'i': i, 't': t, 'sigma': sigma, 'x': x})`` after every step,
            i the level and t the step within it.
        progress: show a progress bar.

    Returns:
        The samples, same shape as x.
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
    """Sample a 1-D density by inverting its tabulated CDF (Devroye 1986; Chapter 1, Sampling in one
    dimension).

    The unnormalised density exp(log_prob_fn(t)) is tabulated on ``n_grid`` points of [low, high],
    integrated with the trapezoidal rule, normalised, and inverted by linear interpolation:
    x = F⁻¹(u), u ~ U(0, 1). Mass outside [low, high] is ignored, so the interval must hold
    essentially all of it. The cost of the table grows like n_grid^D in D dimensions, which is
    why this method stops at one or two dimensions.

    Returns:
        A float64 tensor of ``n`` samples.
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


# -- score SDEs: predictors, correctors and the predictor–corrector loop (Chapter 9) -----------
#
# A predictor moves x from time t to an earlier time t_next with the score at t; a corrector runs
# Langevin steps at a fixed t. The score receives t as a [batch] tensor of x's dtype: s(x, t).
# Every predictor here is an update x_mean = c₁ x + c₂ s(x, t), x = x_mean + c₃ z whose three
# numbers depend only on (t, t_next): they are computed once, before the loop, so that the loop does
# nothing but call the score and update x.


def _time_batch(t, x):
    return torch.full(x.shape[:1], t, dtype=x.dtype, device=x.device)


def euler_maruyama_coefficients(sde, t, t_next):
    """The Euler–Maruyama predictor (Kloeden & Platen 1992; Song et al. 2021; Chapter 9): one step of
    the reverse SDE dx = [f(t) x − g(t)² s] dt + g(t) dW̄ from t down to t_next, h = t − t_next::

        x_mean = x − [f(t) x − g(t)² s] h = (1 − f(t) h) x + g(t)² h s,   x = x_mean + g(t) √h z.

    Returns:
        The floats ``(c1, c2, c3)`` of the update x_mean = c1 x + c2 s(x, t), x = x_mean + c3 z.
    """
    h = t - t_next
    tt = torch.tensor(t, dtype=torch.float64)
    f, g2 = float(sde._f(tt)), float(sde._g2(tt))
    return 1 - f * h, g2 * h, (g2 * h) ** 0.5


def reverse_diffusion_coefficients(sde, t, t_next):
    """The reverse-diffusion predictor of Song et al. (2021, App. E; Chapter 9): the forward step from
    t_next to t, x_t = x_{t_next} + f + G z with f = (a − 1) x and G = b (``SDE.transition``), run
    backwards::

        x_mean = x − f + G² s = (2 − a) x + b² s,   x = x_mean + b z.

    For VE this is the NCSN chain reversed, for VP the DDPM chain to first order in β.

    Returns:
        The floats ``(c1, c2, c3)`` of the update x_mean = c1 x + c2 s(x, t), x = x_mean + c3 z.
    """
    a, b = (float(v) for v in sde.transition(t_next, t))
    return 2 - a, b**2, b


def ancestral_coefficients(sde, t, t_next):
    """Ancestral sampling (Ho et al. 2020; Song et al. 2021, App. F; Chapter 9): draw x_{t_next} from
    the Gaussian q(x_{t_next} | x_t, x₀) with x₀ replaced by Tweedie's estimate (x + σ(t)² s)/α(t).
    With x_t = a x_{t_next} + b z this gives::

        x_mean = (x + b² s) / a,   x = x_mean + (b σ(t_next)/σ(t)) z:

    for VE the reference's x + (σ_i² − σ_{i−1}²) s with std √(σ_{i−1}²(σ_i² − σ_{i−1}²)/σ_i²), for VP
    DDPM's (x + β s)/√(1 − β) with its posterior variance β̃.

    Returns:
        The floats ``(c1, c2, c3)`` of the update x_mean = c1 x + c2 s(x, t), x = x_mean + c3 z.
    """
    a, b = (float(v) for v in sde.transition(t_next, t))
    std, std_next = float(sde.marginal(t)[1]), float(sde.marginal(t_next)[1])
    return 1 / a, b**2 / a, b * std_next / std


PREDICTORS = {"euler_maruyama": euler_maruyama_coefficients, "reverse_diffusion": reverse_diffusion_coefficients,
              "ancestral": ancestral_coefficients}


def _predict(coefficients, score_fn, x, t, generator):
    c1, c2, c3 = coefficients
    x_mean = c1 * x + c2 * score_fn(x, _time_batch(t, x))
    return x_mean + c3 * _noise_like(x, generator), x_mean


def predictor_step(name, sde, score_fn, x, t, t_next, generator=None):
    """One step of the predictor ``name`` (``'euler_maruyama'``, ``'reverse_diffusion'`` or
    ``'ancestral'``) of Song et al. (2021) from t down to t_next (Chapter 9, Predictors, correctors
    and predictor–corrector sampling).

    Returns:
        A pair ``(x, x_mean)``, the new state and its mean before the noise is added.
    """
    if name not in PREDICTORS:
        raise ValueError(f"predictor must be one of {list(PREDICTORS)}; got {name!r}")
    return _predict(PREDICTORS[name](sde, t, t_next), score_fn, x, t, generator)


def _batch_norm(t):
    return t.reshape(t.shape[0], -1).norm(dim=-1).mean()


def langevin_corrector(sde, score_fn, x, t, *, snr, n_steps=1, alpha=1.0, generator=None):
    """Langevin steps on p_t with the step set by a signal-to-noise ratio r (Song et al. 2021,
    Algorithm 4; Chapter 9): ε = 2 α (r ‖z‖ / ‖s(x, t)‖)², then x ← x + ε s + √(2ε) z, the norms
    averaged over the batch as in the reference code. α is 1 for VE and 1 − β_i for VP (the
    caller passes it).

    Returns:
        A pair ``(x, x_mean)``, the new state and its value before the last noise was added.
    """
    tb = _time_batch(t, x)
    x_mean = x
    for _ in range(n_steps):
        grad = score_fn(x, tb)
        z = _noise_like(x, generator)
        step = 2 * alpha * (snr * _batch_norm(z) / _batch_norm(grad)) ** 2
        x_mean = x + step * grad
        x = x_mean + (2 * step).sqrt() * z
    return x, x_mean


def annealed_langevin_corrector(sde, score_fn, x, t, *, snr, n_steps=1, alpha=1.0, generator=None):
    """Annealed-Langevin steps at the level of time t: ε = 2 α (r σ(t))², x ← x + ε s + √(2ε) z, the
    NCSN step rule (Song & Ermon 2019; Chapter 6) with the step tied to σ(t), as in the ``ald``
    corrector of the reference code of Song et al. (2021) (Chapter 9).

    Returns:
        A pair ``(x, x_mean)``, the new state and its value before the last noise was added.
    """
    tb = _time_batch(t, x)
    step = 2 * alpha * (snr * float(sde.marginal(t)[1])) ** 2
    x_mean = x
    for _ in range(n_steps):
        x_mean = x + step * score_fn(x, tb)
        x = x_mean + (2 * step) ** 0.5 * _noise_like(x, generator)
    return x, x_mean


CORRECTORS = {"langevin": langevin_corrector, "ald": annealed_langevin_corrector}


def initial_state(sde, shape_or_x, generator=None, dtype=None, device=None):
    """The starting state of a sampler (Chapter 9): ``shape_or_x`` itself when it is a tensor, else a
    draw of that shape from the SDE's prior (``sde.prior_sample``).
    """
    if isinstance(shape_or_x, torch.Tensor):
        return _checks.batch(shape_or_x, "shape_or_x")
    shape = tuple(shape_or_x)
    if len(shape) < 1 or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ValueError(f"shape_or_x must be a tensor or a shape [batch, ...] of positive ints; got {shape_or_x!r}")
    return sde.prior_sample(shape, generator=generator, dtype=dtype, device=device)


def tweedie_denoise(sde, score_fn, x, t):
    """Tweedie's formula (Efron 2011; Chapter 4, Tweedie's formula): E[x₀ | x_t] =
    (x_t + σ(t)² s(x_t, t)) / α(t), the final denoising step of the samplers of Chapter 9.
    """
    alpha, std = (float(v) for v in sde.marginal(t))
    return (x + std**2 * score_fn(x, _time_batch(t, x))) / alpha


@torch.no_grad()
def pc_sampler(sde, score_fn, shape_or_x, *, n_steps=1000, predictor="reverse_diffusion", corrector="langevin",
               snr=0.16, n_corrector_steps=1, eps=None, grid="uniform", denoise=True, generator=None,
               dtype=None, device=None, callback=None, progress=False):
    """Predictor–corrector sampling of a score SDE (Song et al. 2021, Algorithm 1; Chapter 9).

    On the grid t_0 = T > t_1 > … > t_n = eps (``companion.sde.time_grid``), for i = 0 … n − 1:
    the corrector runs ``n_corrector_steps`` Langevin steps at t_i, then the predictor moves x from
    t_i to t_{i+1}. The corrector comes first, as in the reference code (the paper's Algorithm 1
    lists the predictor first; the difference is one corrector pass at T instead of at eps).
    Finally, with ``denoise=True``, x is replaced by Tweedie's E[x₀ | x_eps] (one more evaluation).

    Args:
        sde: a process of ``companion.sde``.
        score_fn: s(x, t) with t a [batch] tensor.
        shape_or_x: the starting state, or a shape to draw it from the prior.
        n_steps: the number of predictor steps n.
        predictor: ``'euler_maruyama'``, ``'reverse_diffusion'``, ``'ancestral'`` or None.
        corrector: ``'langevin'`` (step from the signal-to-noise ratio ``snr``), ``'ald'`` or None.
        snr: the signal-to-noise ratio r of the corrector.
        n_corrector_steps: corrector steps per time.
        eps: the time to stop at; ``sde.default_eps`` (1e-5 for VE, 1e-3 for VP and sub-VP) if None.
        grid: ``'uniform'``, ``'geometric'`` or ``'edm'`` (see ``time_grid``).
        denoise: finish with Tweedie's denoising step.
        generator: the torch.Generator of the prior draw and the noise.
        dtype: the dtype of the prior draw.
        device: the device of the prior draw.
        callback: called as ``callback({'i': i, 't': t_next, 'x': x, 'x_mean': x_mean})`` after
            every step.
        progress: show a progress bar.

    Returns:
        A pair ``(x, nfe)``, the samples and the number of score evaluations.
    """
    if predictor is not None and predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {list(PREDICTORS)} or None; got {predictor!r}")
    if corrector is not None and corrector not in CORRECTORS:
        raise ValueError(f"corrector must be one of {list(CORRECTORS)} or None; got {corrector!r}")
    if predictor is None and corrector is None:
        raise ValueError("pass a predictor, a corrector or both")
    _checks.time_score(score_fn)
    _checks.non_negative_int(n_corrector_steps, "n_corrector_steps")
    if corrector is not None:
        _checks.positive_number(snr, "snr")
    ts = time_grid(sde, n_steps, grid, eps=eps).tolist()  # Python floats: no host syncs in the loop
    steps = list(zip(ts[:-1], ts[1:]))
    coefficients = [PREDICTORS[predictor](sde, t, t_next) for t, t_next in steps] if predictor else None
    alphas = [float(sde.transition(t_next, t)[0]) ** 2 for t, t_next in steps]  # 1 for VE, 1 − β_i for VP
    x = initial_state(sde, shape_or_x, generator, dtype, device)
    correct = CORRECTORS.get(corrector)
    nfe = 0
    for i in trange(n_steps, disable=not progress, desc="PC sampler"):
        t, t_next = steps[i]
        x_mean = x
        if correct is not None:
            x, x_mean = correct(sde, score_fn, x, t, snr=snr, n_steps=n_corrector_steps, alpha=alphas[i],
                                generator=generator)
            nfe += n_corrector_steps
        if coefficients is not None:
            x, x_mean = _predict(coefficients[i], score_fn, x, t, generator)
            nfe += 1
        if callback is not None:
            callback({"i": i, "t": t_next, "x": x, "x_mean": x_mean})
    if denoise:
        x = tweedie_denoise(sde, score_fn, x, ts[-1])
        nfe += 1
    return _checks.finite_result(x, "pc_sampler", "reduce snr or increase n_steps"), nfe
