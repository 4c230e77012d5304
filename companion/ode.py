"""The probability-flow ODE: deterministic samplers and exact likelihoods (Song et al. 2021;
Chapter 9, The probability-flow ODE; ODE solvers and their cost; Exact likelihoods).

Every score SDE of ``companion.sde`` shares its marginals p_t with the ODE::

    dx/dt = f(x, t) − ½ g(t)² s(x, t),

run from t = T down to a small eps. In the scaled variables x̂ = x/α(t) and σ̂ = σ(t)/α(t) (the
noise level) the same ODE reads dx̂/dσ̂ = (x̂ − D)/σ̂ = −σ(t) s(x, t), where D = (x + σ(t)² s)/α(t)
is Tweedie's denoiser (Karras et al. 2022). The fixed-step solvers step in σ̂:

.. list-table::
   :header-rows: 1

   * - method
     - update
     - score calls
   * - ``'euler'``
     - x̂ ← x̂ + (σ̂' − σ̂) d, d = −σ s
     - n
   * - ``'heun'``
     - Euler, then the trapezoidal average of d at both ends (Karras et al. 2022, Alg. 1)
     - 2n
   * - ``'dpm2m'``
     - the exponential integrator DPM-Solver++(2M) (Lu et al. 2022) on the denoiser
     - n
   * - ``'rk45'``
     - adaptive Dormand–Prince (Dormand & Prince 1980) in t (torchdiffeq, any device)
     - adaptive
   * - ``'scipy-rk45'``
     - the same through scipy.integrate.solve_ivp, NumPy on the CPU: the reference
     - adaptive

Euler is first order, Heun and DPM-Solver++(2M) second order in the step.
"""

import math

import torch
from tqdm.auto import trange

from . import _checks
from .samplers import _time_batch, initial_state, tweedie_denoise
from .sde import time_grid

METHODS = ("euler", "heun", "dpm2m", "rk45", "scipy-rk45")


def probability_flow(sde, score_fn):
    """The velocity v(x, t) = f(x, t) − ½ g(t)² s(x, t) of the probability-flow ODE (Song et al. 2021;
    Chapter 9, The probability-flow ODE), as a callable (x, t) -> v with t a [batch] tensor.
    """
    return sde.reverse(score_fn, probability_flow=True).drift


class _Counter:
    """Counts score evaluations without touching the device."""

    def __init__(self, score_fn):
        self.score_fn, self.n = score_fn, 0

    def __call__(self, x, t):
        self.n += 1
        return self.score_fn(x, t)


def _scalars(sde, ts):
    alpha, std = sde.marginal(torch.as_tensor(ts, dtype=torch.float64))
    return alpha.tolist(), std.tolist()


def _fixed_step(method, sde, score_fn, x, ts, callback, progress):
    alphas, stds = _scalars(sde, ts)
    levels = [s / a for s, a in zip(stds, alphas)]
    xh = x / alphas[0]
    previous = None  # DPM-Solver++(2M): the last denoised estimate and its log-SNR step
    for i in trange(len(ts) - 1, disable=not progress, desc=f"ODE ({method})"):
        t, t_next = ts[i], ts[i + 1]
        s = score_fn(alphas[i] * xh, _time_batch(t, x))
        if method == "dpm2m":
            # x̂ tracks x/α; with λ = −log σ̂ and h = λ' − λ the update is
            # x̂' = (σ̂'/σ̂) x̂ + (1 − σ̂'/σ̂) D̃, D̃ the 2-step extrapolation of the denoiser.
            denoised = xh + levels[i] * stds[i] * s  # (x + σ² s)/α
            h = math.log(levels[i] / levels[i + 1])
            d_used = denoised
            if previous is not None:
                r = previous[1] / h
                d_used = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * previous[0]
            ratio = levels[i + 1] / levels[i]
            xh = ratio * xh + (1 - ratio) * d_used
            previous = (denoised, h)
        else:
            d = -stds[i] * s
            dl = levels[i + 1] - levels[i]
            x_euler = xh + dl * d
            if method == "heun":
                d_next = -stds[i + 1] * score_fn(alphas[i + 1] * x_euler, _time_batch(t_next, x))
                xh = xh + dl * 0.5 * (d + d_next)
            else:
                xh = x_euler
        if callback is not None:
            callback({"i": i, "t": t_next, "x": alphas[i + 1] * xh})
    return alphas[-1] * xh


def _rk45_torch(sde, score_fn, x, t0, t1, rtol, atol):
    from torchdiffeq import odeint

    v = probability_flow(sde, score_fn)
    shape = x.shape

    def f(t, y):
        return v(y.reshape(shape), t.expand(shape[0]).to(y.dtype)).reshape(y.shape)

    ts = torch.tensor([t0, t1], dtype=x.dtype, device=x.device)
    # step_t makes the solver land on t1 instead of stepping past it and interpolating back:
    # beyond the end of [eps, T] the marginal std can be undefined (VP at t < 0).
    y = odeint(f, x.reshape(shape[0], -1), ts, rtol=rtol, atol=atol, method="dopri5", options={"step_t": ts})
    return y[-1].reshape(shape)


def _rk45_scipy(sde, score_fn, x, t0, t1, rtol, atol):
    from scipy.integrate import solve_ivp

    if x.device.type != "cpu":
        raise ValueError("method='scipy-rk45' runs through NumPy on the CPU; use method='rk45' on other devices")
    v = probability_flow(sde, score_fn)
    shape, dtype = x.shape, x.dtype

    def f(t, y):
        xt = torch.from_numpy(y).reshape(shape).to(dtype)
        return v(xt, _time_batch(t, xt)).reshape(-1).double().numpy()

    sol = solve_ivp(f, (t0, t1), x.reshape(-1).double().numpy(), method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise ValueError(f"scipy's RK45 failed: {sol.message}; loosen rtol/atol or check the score")
    return torch.from_numpy(sol.y[:, -1]).reshape(shape).to(dtype)


@torch.no_grad()
def ode_sampler(sde, score_fn, shape_or_x, *, method="heun", n_steps=50, grid="edm", rho=7.0, eps=None,
                rtol=1e-5, atol=1e-5, denoise=False, generator=None, dtype=None, device=None, callback=None,
                progress=False):
    """Integrate the probability-flow ODE of Song et al. (2021) from T to eps (Chapter 9, ODE solvers
    and their cost), with Euler, Heun (Karras et al. 2022), DPM-Solver++(2M) (Lu et al. 2022) or
    adaptive RK45 (Dormand & Prince 1980).

    Args:
        sde: a process of ``companion.sde``.
        score_fn: s(x, t) with t a [batch] tensor.
        shape_or_x: the starting state at T, or a shape to draw it from the prior.
        method: ``'euler'``, ``'heun'``, ``'dpm2m'``, ``'rk45'`` or ``'scipy-rk45'`` (see the
            module's table).
        n_steps: the number of steps of the fixed-step methods.
        grid: the time grid of the fixed-step methods (see ``companion.sde.time_grid``).
        rho: ρ of the ``'edm'`` grid.
        eps: the final time; ``sde.default_eps`` if None.
        rtol: the relative tolerance of the adaptive methods.
        atol: the absolute tolerance of the adaptive methods.
        denoise: finish with Tweedie's E[x₀ | x_eps] (one more evaluation).
        generator: the torch.Generator of the prior draw.
        dtype: the dtype of the prior draw.
        device: the device of the prior draw.
        callback: called by the fixed-step methods as ``callback({'i': i, 't': t_next, 'x': x})``
            after every step.
        progress: show a progress bar (fixed-step methods).

    Returns:
        A pair ``(x, nfe)``, the end states and the number of score evaluations.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    _checks.time_score(score_fn)
    x = initial_state(sde, shape_or_x, generator, dtype, device)
    counted = _Counter(score_fn)
    eps = sde.default_eps if eps is None else eps
    if method in ("rk45", "scipy-rk45"):
        _checks.positive_number(rtol, "rtol")
        _checks.positive_number(atol, "atol")
        solve = _rk45_torch if method == "rk45" else _rk45_scipy
        x = solve(sde, counted, x, sde.T, eps, rtol, atol)
    else:
        ts = time_grid(sde, n_steps, grid, eps=eps, rho=rho).tolist()
        x = _fixed_step(method, sde, counted, x, ts, callback, progress)
    if denoise:
        x = tweedie_denoise(sde, counted, x, eps)
    return _checks.finite_result(x, "ode_sampler", "increase n_steps or tighten rtol/atol"), counted.n


def _divergence_exact(v, x, t):
    """∇·v(x) by one backward pass per dimension (exact; cost grows with the dimension)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = v(x, t).reshape(x.shape[0], -1)
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for j in range(out.shape[1]):
            div = div + torch.autograd.grad(out[:, j].sum(), x, retain_graph=True)[0].reshape(x.shape[0], -1)[:, j]
    return out.reshape(x.shape).detach(), div.detach()


def _divergence_hutchinson(v, x, t, probe):
    """εᵀ (∂v/∂x) ε with a probe ε fixed along the trajectory (Skilling 1989; Hutchinson 1989),
    unbiased for the divergence.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = v(x, t)
        vjp = torch.autograd.grad(out, x, grad_outputs=probe)[0]
    return out.detach(), (vjp * probe).reshape(x.shape[0], -1).sum(-1)


def log_likelihood(sde, score_fn, x, *, trace="exact", probe="rademacher", eps=None, rtol=1e-5, atol=1e-5,
                   prior_log_prob=None, generator=None):
    """log p_eps(x) by the instantaneous change of variables along the probability-flow ODE
    (Chen et al. 2018; Song et al. 2021, Sec. 4.3; Chapter 9, Exact likelihoods)::

        log p_eps(x(eps)) = log p_T(x(T)) + ∫_eps^T ∇·v(x(t), t) dt,

    solved from eps up to T with torchdiffeq's dopri5 on the joint state (x, ∫∇·v).

    Args:
        sde: a process of ``companion.sde``.
        score_fn: s(x, t) with t a [batch] tensor.
        x: [batch, ...] points at time eps.
        trace: ``'exact'`` (one backward pass per dimension) or ``'hutchinson'`` (one probe ε,
            Rademacher or Gaussian, fixed along the trajectory: the Skilling–Hutchinson estimator of
            Grathwohl et al. 2019, unbiased and cheap in high dimension).
        probe: ``'rademacher'`` or ``'gaussian'``.
        eps: the starting time; ``sde.default_eps`` if None.
        rtol: the relative tolerance of dopri5.
        atol: the absolute tolerance of dopri5.
        prior_log_prob: log p_T, the SDE's prior (``sde.prior_log_prob``) if None.
        generator: the torch.Generator of the probe.

    Returns:
        A pair ``(log_p, nfe)``, nats per sample, shape [batch], and the number of velocity
        evaluations.
    """
    from torchdiffeq import odeint

    _checks.batch(x)
    _checks.time_score(score_fn)
    if trace not in ("exact", "hutchinson"):
        raise ValueError(f"trace must be 'exact' or 'hutchinson'; got {trace!r}")
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"probe must be 'rademacher' or 'gaussian'; got {probe!r}")
    eps = sde.default_eps if eps is None else eps
    prior_log_prob = sde.prior_log_prob if prior_log_prob is None else prior_log_prob
    v = probability_flow(sde, score_fn)
    shape, n, d = x.shape, x.shape[0], x[0].numel()
    eps_probe = None
    if trace == "hutchinson":
        if probe == "rademacher":
            eps_probe = torch.randint(0, 2, shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
        else:
            eps_probe = torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
    nfe = 0

    def f(t, y):
        nonlocal nfe
        nfe += 1
        xt = y[:, :d].reshape(shape)
        tb = t.expand(n).to(x.dtype)
        if eps_probe is None:
            vel, div = _divergence_exact(v, xt, tb)
        else:
            vel, div = _divergence_hutchinson(v, xt, tb, eps_probe)
        return torch.cat([vel.reshape(n, d), div[:, None]], dim=1)

    y0 = torch.cat([x.reshape(n, d), torch.zeros(n, 1, dtype=x.dtype, device=x.device)], dim=1)
    ts = torch.tensor([eps, sde.T], dtype=x.dtype, device=x.device)
    yT = odeint(f, y0, ts, rtol=rtol, atol=atol, method="dopri5", options={"step_t": ts})[-1]
    return prior_log_prob(yT[:, :d].reshape(shape)) + yT[:, d], nfe


def bits_per_dim(log_p, dim, *, data_range=1.0, levels=256):
    """Bits per dimension of discrete data from a continuous log-density (nats) of uniformly
    dequantised data (Uria et al. 2013; Theis et al. 2016; Chapter 9, Exact likelihoods).

    Data with ``levels`` values per dimension, dequantised uniformly and scaled to an interval of
    length ``data_range``, has a bin of width data_range/levels, so the discrete model assigns
    p(x) (data_range/levels)^D and::

        bpd = −log p(x) / (D ln 2) + log₂(levels / data_range)

    (+8 for [0, 1] data with 256 levels, +7 for [−1, 1]).
    """
    _checks.positive_number(dim, "dim")
    _checks.positive_number(data_range, "data_range")
    return -log_p / (dim * math.log(2)) + math.log2(levels / data_range)
